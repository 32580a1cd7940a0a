"""Classification settings per dataset config (MLSum's languages): model, hypothesis template, labels.

A presets file (YAML) maps each config to exactly three keys::

    es:
      model: Recognai/zeroshot_selectra_medium
      hypothesis_template: "Esta noticia habla de {}."
      labels: [política, cultura, sociedad, economia, deportes, ciencia y tecnología]

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
from zs_ray.errors import ZsRayError

SHIPPED = Path(__file__).with_name("presets.yaml")
KEYS = ("model", "hypothesis_template", "labels")


@dataclass(frozen=True)
class Preset:
    """What classifies one config's rows."""

    model: str
    hypothesis_template: str
    labels: tuple[str, ...]
    kind: str = "nli"  # or "classifier": a supervised model (``engine.supervised``), the template unused
    label_map: Optional[dict] = field(default=None, hash=False)  # a classifier's class -> candidate label

    def to_dict(self) -> dict:
        out = {"model": self.model, "model_kind": self.kind, "hypothesis_template": self.hypothesis_template,
               "candidate_labels": list(self.labels)}
        return {**out, "label_map": self.label_map} if self.label_map else out


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
        unknown = sorted(str(k) for k in entry if k not in KEYS)
        if missing or unknown:
            what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"unknown {', '.join(unknown)}" if unknown else "") if part)
            raise ZsRayError(f"{at}: {what} (each preset has exactly {', '.join(KEYS)})")
        if not isinstance(entry["model"], str) or not entry["model"].strip():
            raise ZsRayError(f"{at}: model must name a model")
        try:
            template = check_template(str(entry["hypothesis_template"]))
            labels = parse_labels(entry["labels"])
        except ZsRayError as exc:
            raise ZsRayError(f"{at}: {str(exc).lstrip('-').replace('--', '')}") from None
        presets[str(name)] = Preset(entry["model"].strip(), template, labels)
    return presets


def resolve(configs: Sequence[Optional[str]], presets_path: Optional[str], model: Optional[str] = None,
            labels: Optional[Sequence[str]] = None, hypothesis_template: Optional[str] = None
            ) -> dict[Optional[str], Preset]:
    """Each config's settings (see the module docstring); one line for a config without any."""
    presets = load(presets_path)
    out: dict[Optional[str], Preset] = {}
    for config in configs:
        base = presets.get(config) if config is not None else None
        if base is None:
            if presets_path and not (model and labels and hypothesis_template):
                raise ZsRayError(f"no preset for config {config!r} in --presets {presets_path} (it has "
                                 f"{', '.join(presets)}): add one, or give --model, --labels and "
                                 "--hypothesis-template")
            base = TUTORIAL
        out[config] = Preset(model or base.model, hypothesis_template or base.hypothesis_template,
                             tuple(labels) if labels else base.labels)
    return out
