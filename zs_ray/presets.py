"""Classification settings per dataset config (MLSum's languages): model, hypothesis template, labels.

A presets file (YAML) maps each config to exactly three keys::

    es:
      model: Recognai/zeroshot_selectra_medium
      hypothesis_template: "Esta noticia habla de {}."
      labels: [política, cultura, sociedad, economia, deportes, ciencia y tecnología]

Two keys are optional: ``verbalizers`` (label -> its phrasings, each making a hypothesis; a label left out
is its own phrasing) and ``aggregate`` (``max``, the default, or ``mean``: how a label's logit comes from
its phrasings', ``engine.verbalize``), as ``zs-ray tune`` writes them. A ``--labels`` flag keeps the
phrasings of the labels it names.

zs-ray ships ``presets.yaml`` for the five MLSum languages. ``resolve`` gives each config of a run its
settings: a flag given (``--model``, ``--labels``, ``--hypothesis-template``) wins for every config, then
the config's preset, then (without ``--presets``, for a config the shipped file does not name, or a dataset
without configs) the Rubrix tutorial's settings. With ``--presets FILE`` every config of the run needs a
preset there, unless all three flags are given. Everything is checked here, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from zs_ray.checks import check_template, load_yaml, parse_labels
from zs_ray.engine.verbalize import Verbalizer
from zs_ray.errors import ZsRayError

SHIPPED = Path(__file__).with_name("presets.yaml")
KEYS = ("model", "hypothesis_template", "labels")
OPTIONAL = ("verbalizers", "aggregate")
DEFAULT = "default"  # the preset of a dataset without configs, in a --presets file (as `zs-ray tune` writes it)


@dataclass(frozen=True)
class Preset:
    """What classifies one config's rows."""

    model: str
    hypothesis_template: str
    labels: tuple[str, ...]
    kind: str = "nli"  # or "classifier": a supervised model (``engine.supervised``), the template unused
    label_map: Optional[dict] = field(default=None, hash=False)  # a classifier's class -> candidate label
    verbalizers: Optional[dict] = field(default=None, hash=False)  # label -> phrasings (``engine.verbalize``)
    aggregate: str = "max"  # how a label's logit comes from its phrasings' (with verbalizers)

    def to_dict(self) -> dict:
        out = {"model": self.model, "model_kind": self.kind, "hypothesis_template": self.hypothesis_template,
               "candidate_labels": list(self.labels)}
        if self.verbalizers:
            out.update(verbalizers=self.verbalizers, aggregate=self.aggregate)
        return {**out, "label_map": self.label_map} if self.label_map else out

    def verbalizer(self) -> Optional[Verbalizer]:
        """The preset's verbalizer (None without one)."""
        return Verbalizer.of(self.labels, self.verbalizers, self.aggregate) if self.verbalizers else None

    @property
    def sequences_per_text(self) -> int:
        """Sequences the model reads per text: one per hypothesis (a classifier: one)."""
        if self.kind != "nli":
            return 1
        return len(self.verbalizer().hypotheses("{}")) if self.verbalizers else len(self.labels)

    def to_entry(self) -> dict:
        """The preset as a presets file's entry (what ``load`` reads)."""
        out = {"model": self.model, "hypothesis_template": self.hypothesis_template, "labels": list(self.labels)}
        return {**out, "verbalizers": self.verbalizers, "aggregate": self.aggregate} if self.verbalizers else out


TUTORIAL = Preset("Recognai/zeroshot_selectra_medium", "Esta noticia habla de {}.",
                  ("política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"))


def load(path: Optional[str] = None) -> dict[str, Preset]:
    """The presets of ``path`` (default: the shipped MLSum file), every entry checked."""
    where = path or str(SHIPPED)
    data = load_yaml(where, "--presets")
    if not isinstance(data, dict) or not data:
        raise ZsRayError(f"--presets {where} must map configs to their settings ({', '.join(KEYS)})")
    presets = {}
    for name, entry in data.items():
        at = f"--presets {where}, config {name}"
        if not isinstance(entry, dict):
            raise ZsRayError(f"{at}: must be a mapping with the keys {', '.join(KEYS)}")
        missing = [k for k in KEYS if k not in entry]
        unknown = sorted(str(k) for k in entry if k not in KEYS + OPTIONAL)
        if missing or unknown:
            what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"unknown {', '.join(unknown)}" if unknown else "") if part)
            raise ZsRayError(f"{at}: {what} (each preset has exactly {', '.join(KEYS)}, and may have "
                             f"{' and '.join(OPTIONAL)})")
        if not isinstance(entry["model"], str) or not entry["model"].strip():
            raise ZsRayError(f"{at}: model must name a model")
        try:
            template = check_template(str(entry["hypothesis_template"]))
            labels = parse_labels(entry["labels"])
        except ZsRayError as exc:
            raise ZsRayError(f"{at}: {str(exc).lstrip('-').replace('--', '')}") from None
        verbalizers, aggregate = entry.get("verbalizers"), entry.get("aggregate") or "max"
        if verbalizers is not None and not isinstance(verbalizers, dict):
            raise ZsRayError(f"{at}: verbalizers must map labels to their phrasings")
        verbalizer = Verbalizer.of(labels, verbalizers, str(aggregate), where=f"{at}: verbalizers")
        presets[str(name)] = Preset(entry["model"].strip(), template, labels,
                                    verbalizers=phrased(verbalizer.to_dict(), labels), aggregate=verbalizer.aggregate)
    return presets


def resolve(configs: Sequence[Optional[str]], presets_path: Optional[str], model: Optional[str] = None,
            labels: Optional[Sequence[str]] = None, hypothesis_template: Optional[str] = None
            ) -> dict[Optional[str], Preset]:
    """Each config's settings (see the module docstring); one line for a config without any."""
    presets = load(presets_path)
    out: dict[Optional[str], Preset] = {}
    for config in configs:
        base = presets.get(config if config is not None else DEFAULT)
        if base is None:
            if presets_path and not (model and labels and hypothesis_template):
                raise ZsRayError(f"no preset for config {config!r} in --presets {presets_path} (it has "
                                 f"{', '.join(presets)}): add one, or give --model, --labels and "
                                 "--hypothesis-template")
            base = TUTORIAL
        chosen = tuple(labels) if labels else base.labels
        out[config] = Preset(model or base.model, hypothesis_template or base.hypothesis_template, chosen,
                             verbalizers=phrased(base.verbalizers, chosen), aggregate=base.aggregate)
    return out


def phrased(verbalizers: Optional[dict], labels: Sequence[str]) -> Optional[dict]:
    """The phrasings of ``labels`` other than the label itself (None when there are none)."""
    kept = {k: list(v) for k, v in (verbalizers or {}).items() if k in labels and list(v) != [k]}
    return kept or None
