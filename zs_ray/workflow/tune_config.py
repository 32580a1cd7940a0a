"""The settings of ``zs-ray tune`` (``TuneConfig``), beside the command (``zs_ray.workflow.tune``), and the
``--templates`` syntax they check: templates as given, or YAML/JSON files listing them. A settings module: it
imports other settings and the checks, never a command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from zs_ray.errors import ZsRayError
from zs_ray.workflow.config import LabelledInputConfig, _help

TEMPLATE_FILES = (".yaml", ".yml", ".json")


def expand_templates(values: list[str], flag: str = "--templates") -> list[str]:
    """Templates as given (each with '{}'), a YAML/JSON file's list expanded; one line for a bad one."""
    from zs_ray.checks import check_template, load_yaml

    out = []
    for value in values:
        if "{}" not in value and value.endswith(TEMPLATE_FILES) and os.path.isfile(value):
            listed = load_yaml(value, flag)
            if not isinstance(listed, list) or not listed:
                raise ZsRayError(f"{flag} {value} must hold a list of templates")
            out += expand_templates([str(t) for t in listed], f"{flag} {value}:")
            continue
        try:
            out.append(check_template(value))
        except ZsRayError as exc:
            raise ZsRayError(f"{flag} {str(exc).split(' ', 1)[1]}") from None
    return list(dict.fromkeys(out))


@dataclass
class TuneConfig(LabelledInputConfig):
    """``zs-ray tune``: candidate hypothesis templates and label phrasings scored on labelled records, ranked by
    macro-F1 (``zs_ray.workflow.tune``) -> tune.json + a presets file with the winner."""

    output: str = field(default="", metadata=_help(
        "Directory for tune.json (every candidate, its macro-F1 and intervals) and presets.yaml (the winner)."))
    templates: Optional[list[str]] = field(default=None, metadata=_help(
        "Candidate hypothesis templates ('{}' where the label goes), one per argument, or a YAML/JSON file "
        "listing them; the current template is always a candidate."))
    verbalizers: Optional[list[str]] = field(default=None, metadata=_help(
        "YAML/JSON file(s) of label phrasings: label -> a list of phrasings (one candidate set), or set name -> "
        "such a mapping (several sets); a label left out is its own one phrasing."))
    aggregate: list[str] = field(default_factory=lambda: ["max", "mean"], metadata=_help(
        "How a label's logit comes from its phrasings': max, mean, or both (each a candidate)."))
    output_presets: Optional[str] = field(default=None, metadata=_help(
        "Presets file (YAML) to write the winner to, as `annotate --presets` reads it (default: "
        "OUTPUT/presets.yaml)."))
    config: Optional[str] = field(default=None, metadata=_help(
        "The config (language) tuned: a pulled file's preset (default: es), or one config of a multi-config "
        "output; the key of the written preset."))
    presets: Optional[str] = field(default=None, metadata=_help(
        "With a pulled file: the presets file holding the current settings (default: zs-ray's); its other "
        "configs are copied to the written file."))
    model: Optional[str] = field(default=None, metadata=_help(
        "The NLI model (default: the output's manifest, or the config's preset)."))
    labels: Optional[list[str]] = field(default=None, metadata=_help(
        "Candidate labels (default: the output's manifest, or the config's preset)."))
    hypothesis_template: Optional[str] = field(default=None, metadata=_help(
        "The current template, the baseline candidate (default: the output's manifest, or the config's preset)."))
    multi_label: bool = field(default=False, metadata=_help(
        "Score labels on their own, as `annotate --multi-label` (an output: as its manifest says)."))
    precision: str = field(default="auto", metadata=_help(
        "Model precision, as for annotate (fp32 is the pipeline's scores to 1e-4)."))
    batch_size: Optional[int] = field(default=None, metadata=_help("Most (text, hypothesis) pairs per forward pass."))
    bootstrap: int = field(default=1000, metadata=_help(
        "Bootstrap resamples (the same for every candidate: paired) for the macro-F1 intervals."))
    seed: int = field(default=0, metadata=_help("Seed of the bootstrap."))
    ray_min_records: int = field(default=2000, metadata=_help(
        "Score through Ray Data (the job's tokenize and model actor pools) from this many labelled records "
        "on; fewer are scored in this process (0: always Ray)."))
    num_workers: Optional[str] = field(default=None, metadata=_help("Model actors on Ray: N or MIN-MAX."))
    ray_address: Optional[str] = field(default=None, metadata=_help(
        "Ray cluster to join (default: $RAY_ADDRESS, else a new local Ray)."))

    def __post_init__(self) -> None:
        from zs_ray.checks import check_precision, check_template, parse_labels

        super().__post_init__()
        if not self.output:
            raise ZsRayError("--output is required (a directory for tune.json and presets.yaml)")
        bad = [a for a in self.aggregate if a not in ("max", "mean")]
        if bad or not self.aggregate:
            raise ZsRayError(f"--aggregate must be max, mean or both, got {' '.join(self.aggregate)}")
        if self.bootstrap < 0 or self.ray_min_records < 0:
            raise ZsRayError("--bootstrap and --ray-min-records must be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ZsRayError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_precision(self.precision)
        if self.labels is not None:
            self.labels = list(parse_labels([p for item in self.labels for p in str(item).split(",")]))
        self.templates = expand_templates(self.templates or [])
        if self.hypothesis_template is not None:
            check_template(self.hypothesis_template)
