"""The settings of the workflow commands, documented as ``zs_ray.config`` documents the others.

``zs-ray evaluate`` takes ``EvaluateConfig``; ``zs-ray thresholds`` takes ``ThresholdsConfig``; ``zs-ray
bulk-label`` takes ``BulkLabelConfig`` + ``ServerConfig`` (the server, as for ``pull``); ``zs-ray tune``'s
``TuneConfig`` lives beside its command (``workflow/tune_config.py``). A field ``gold_column`` is the flag
``--gold-column`` and the key ``gold_column``/``gold-column`` of ``--config-file``; every field is checked in
``__post_init__`` (one ``ZsRayError`` line).

``RubrixConfig``, what ``annotate`` and ``log`` take, is the server's ``SendConfig`` plus the round-1 sample
(``SampleConfig``, a workflow setting) and the round-2 queue and ``--log-only`` (``LogOnlyConfig``): the server
package never imports the workflow, the rules come in through ``sample_rule_for``, ``uncertain_rule_for`` and
``log_only_for``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from zs_ray.errors import ZsRayError
from zs_ray.servers.config import SendConfig
from zs_ray.team.config import ConsensusConfig

BULK_AGENT = "zs-ray-bulk"
HUMAN_STATUSES = ["Validated"]


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class LabelledInputConfig(ConsensusConfig):
    """The labelled records a command reads (``zs_ray.workflow.data``): a pulled file, whose human labels are
    the annotations in ``status`` by anyone but ``exclude_agent``; or an annotation-job output with a gold column
    and a label map. The first settings of ``evaluate``, ``tune`` and ``train``."""

    input: str = field(default="", metadata=_help(
        "A `zs-ray pull` Parquet file (human labels: the annotations), or an annotation-job output with "
        "--gold-column and --label-map (gold labels from the corpus)."))
    gold_column: Optional[str] = field(default=None, metadata=_help(
        "With an output as --input: the source column holding the gold labels (MLSum: topic)."))
    label_map: Optional[str] = field(default=None, metadata=_help(
        "YAML file mapping gold values to candidate labels (gold: label); unmapped values are counted and "
        "left out. Needed with --gold-column."))
    status: list[str] = field(default_factory=lambda: list(HUMAN_STATUSES), metadata=_help(
        "With a pulled file: the statuses whose annotations count as human labels."))
    exclude_agent: list[str] = field(default_factory=lambda: [BULK_AGENT], metadata=_help(
        "Annotation agents that are not human labels (default: zs-ray-bulk, the bulk labels)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.input:
            raise ZsRayError("--input is required")
        if bool(self.gold_column) != bool(self.label_map):
            raise ZsRayError("--gold-column and --label-map go together (an output with a gold column)")


@dataclass
class EvaluateConfig(LabelledInputConfig):
    """``zs-ray evaluate``: the zero-shot predictions against human (or gold) labels -> metrics.json + report.html."""

    output: str = field(default="", metadata=_help("Directory for metrics.json and report.html."))
    bins: int = field(default=10, metadata=_help("Equal-width score bins of the reliability diagram and ECE."))
    bootstrap: int = field(default=1000, metadata=_help("Bootstrap resamples for the macro-F1 interval."))
    seed: int = field(default=0, metadata=_help("Seed of the bootstrap."))
    title: Optional[str] = field(default=None, metadata=_help("Title of the report (default: the input)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.output:
            raise ZsRayError("--output is required (a directory for metrics.json and report.html)")
        if self.bins < 2 or self.bootstrap < 0:
            raise ZsRayError("--bins must be >= 2 and --bootstrap >= 0")


@dataclass
class ThresholdsConfig(ConsensusConfig):
    """``zs-ray thresholds``: per label, the lowest score threshold whose precision reaches a target."""

    input: str = field(default="", metadata=_help("A `zs-ray pull` Parquet file (human labels + unlabelled records)."))
    target_precision: float = field(default=0.9, metadata=_help(
        "Precision the bulk labels must reach, at the lower confidence bound (not the point estimate); in (0, 1)."))
    confidence: float = field(default=0.95, metadata=_help(
        "Confidence of the one-sided Clopper-Pearson lower bound; in (0, 1)."))
    output: Optional[str] = field(default=None, metadata=_help(
        "JSON file to write (the input of bulk-label); - prints the JSON instead of the table."))
    status: list[str] = field(default_factory=lambda: list(HUMAN_STATUSES), metadata=_help(
        "The statuses whose annotations count as human labels."))
    exclude_agent: list[str] = field(default_factory=lambda: [BULK_AGENT], metadata=_help(
        "Annotation agents that are not human labels (default: zs-ray-bulk)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.input:
            raise ZsRayError("--input is required")
        for name in ("target_precision", "confidence"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1):
                raise ZsRayError(f"--{name.replace('_', '-')} must be in (0, 1), got {v}")


@dataclass
class BulkLabelConfig:
    """``zs-ray bulk-label``: annotate the records above per-label thresholds on the server (dry run by default)."""

    thresholds: Optional[str] = field(default=None, metadata=_help(
        "JSON written by `zs-ray thresholds --output` (labels with a threshold; the others are left alone)."))
    threshold: Optional[list[str]] = field(default=None, metadata=_help(
        "Per-label thresholds as LABEL=SCORE ... (instead of, or overriding, --thresholds)."))
    dry_run: bool = field(default=True, metadata=_help("Only say what would change (the default)."))
    apply: bool = field(default=False, metadata=_help(
        "Write the annotations (agent zs-ray-bulk), never over a record a person annotated or validated."))
    undo: bool = field(default=False, metadata=_help(
        "Remove exactly what earlier --apply runs wrote (from the undo file), where nobody changed it since."))
    undo_file: Optional[str] = field(default=None, metadata=_help(
        "Where --apply records what it changes, for --undo (default: zs-ray-bulk-<dataset>.undo.jsonl)."))
    agent: str = field(default=BULK_AGENT, metadata=_help("Annotation agent of the bulk labels."))
    status: Literal["Validated", "Edited"] = field(default="Validated", metadata=_help(
        "Status of a bulk-labelled record (Validated: out of the annotators' queue)."))
    chunk_size: int = field(default=200, metadata=_help("Records per bulk request."))
    audit_size: Optional[int] = field(default=None, metadata=_help(
        "Records per label kept out of the bulk labels and marked for a person's audit (metadata zs_ray_audit); "
        "default: sized from the thresholds file (see --audit-power); 0: no audit."))
    audit_seed: int = field(default=0, metadata=_help("Seed of the audit sample (the same records on every run)."))
    audit_power: float = field(default=0.8, metadata=_help(
        "The audit is sized so that, if a label's precision is what `zs-ray thresholds` estimated, its audit "
        "passes with at least this probability; in (0, 1)."))

    def __post_init__(self) -> None:
        if self.audit_size is not None and self.audit_size < 0:
            raise ZsRayError("--audit-size must be >= 0")
        if not (isinstance(self.audit_power, (int, float)) and 0 < self.audit_power < 1):
            raise ZsRayError(f"--audit-power must be in (0, 1), got {self.audit_power}")
        if self.audit_size and not self.thresholds:
            raise ZsRayError("--audit-size needs --thresholds FILE: its target precision and confidence judge the audit")
        if self.apply and self.undo:
            raise ZsRayError("choose one of --apply and --undo")
        if self.apply or self.undo:
            self.dry_run = False
        if not self.undo and not self.thresholds and not self.threshold:
            raise ZsRayError("give --thresholds FILE (from `zs-ray thresholds --output`) or --threshold LABEL=SCORE")
        if not 1 <= len(self.agent) <= 64:
            raise ZsRayError("--agent must be 1-64 characters")
        if self.chunk_size < 1:
            raise ZsRayError("--chunk-size must be >= 1")
        self.threshold_values()  # checks the syntax

    def threshold_values(self) -> dict[str, float]:
        """The thresholds: those of --thresholds (labels that got one), then --threshold overriding."""
        values = read_thresholds(self.thresholds) if self.thresholds else {}
        for item in self.threshold or []:
            for part in str(item).split(","):
                label, sep, value = part.rpartition("=")
                try:
                    score = float(value)
                except ValueError:
                    score = float("nan")
                if not sep or not label.strip() or not 0 <= score <= 1:
                    raise ZsRayError(f"invalid --threshold {part!r}: expected LABEL=SCORE with SCORE in [0, 1]")
                values[label.strip()] = score
        return values

    def audit_basis(self) -> Optional[dict]:
        """What the audit is sized and judged by, from the thresholds file: its target precision and
        confidence, and each label's estimated precision at its threshold (labels whose threshold
        --threshold overrides have none); None without a file that states them."""
        import json

        if not self.thresholds or self.audit_size == 0:
            return None
        with open(self.thresholds, encoding="utf-8") as fh:  # read (and checked) by threshold_values first
            data = json.load(fh)
        if not isinstance(data.get("target_precision"), (int, float)) or not isinstance(data.get("confidence"),
                                                                                          (int, float)):
            return None
        overridden = {str(p).rpartition("=")[0].strip() for item in self.threshold or [] for p in str(item).split(",")}
        precision = {k: v.get("precision") for k, v in data["labels"].items()
                     if isinstance(v, dict) and v.get("threshold") is not None and k not in overridden}
        return {"target": float(data["target_precision"]), "confidence": float(data["confidence"]),
                "precision": precision}


@dataclass
class AuditConfig(ConsensusConfig):
    """``zs-ray audit``: the people's answers on the audit sample of ``bulk-label --apply`` -> each label's realised
    precision and its lower bound against the target; ``--undo-failing`` takes back the failing labels' bulk labels."""

    undo_file: Optional[str] = field(default=None, metadata=_help(
        "The undo file of `bulk-label --apply` (default: zs-ray-bulk-<dataset>.undo.jsonl): which records were "
        "bulk-labelled and which marked for audit."))
    output: Optional[str] = field(default=None, metadata=_help(
        "JSON file to write (audit.json); - prints the JSON instead of the table."))
    undo_failing: bool = field(default=False, metadata=_help(
        "Take back exactly the bulk labels of the labels that fail (never a record a person changed)."))
    status: list[str] = field(default_factory=lambda: list(HUMAN_STATUSES), metadata=_help(
        "The statuses whose annotations count as a person's answer."))


def read_thresholds(path: str) -> dict[str, float]:
    """The thresholds of a `zs-ray thresholds --output` file: label -> threshold, for the labels that got one."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ZsRayError(f"cannot read --thresholds {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ZsRayError(f"--thresholds {path} is not JSON: {exc}") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        raise ZsRayError(f"--thresholds {path} is not a `zs-ray thresholds` file (no labels)")
    return {k: float(v["threshold"]) for k, v in labels.items()
            if isinstance(v, dict) and v.get("threshold") is not None}


@dataclass(repr=False)
class SampleConfig:
    """Round 1 (``zs_ray.workflow.sample``): a seeded sample marked in the records' metadata. A mixin of
    ``RubrixConfig``; its rule reaches the server package through ``sample_rule_for``."""

    sample: Optional[str] = field(default=None, metadata=_help(
        "Mark a seeded random sample in the records' metadata (sample: round-1): N records, or P%% of them; "
        "the same records on every re-run, a superset for a larger N (see docs/workflow.md)."))
    sample_seed: int = field(default=0, metadata=_help("Seed of --sample."))
    sample_by_label: bool = field(default=False, metadata=_help(
        "Stratify --sample N by predicted label (N shared evenly over the labels); annotate then logs once "
        "the predictions are written, not while."))
    sample_name: str = field(default="round-1", metadata=_help("Metadata value that marks the sample."))
    # The rule, once decided (before the first record is sent); not a flag.
    sample_rule: Optional[object] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        from zs_ray.workflow.sample import check_sample_settings

        check_sample_settings(self)

    def sample_rule_for(self, out):
        """The rule of the ``sample`` settings over a complete output's rows (``sample.rule_for_output``)."""
        from zs_ray.workflow.sample import rule_for_output

        return rule_for_output(self, out)


@dataclass(repr=False)
class LogOnlyConfig(SampleConfig):
    """Round 2 (``zs_ray.workflow.uncertain``): the uncertainty queue marked in the records' metadata; and
    ``--log-only`` (``zs_ray.workflow.logonly``): which records are sent now. A mixin of ``RubrixConfig``; they
    reach the server package through ``uncertain_rule_for`` and ``log_only_for``."""

    uncertain: Optional[int] = field(default=None, metadata=_help(
        "Mark the N records whose prediction is least certain (uncertain: round-2), stratified by predicted "
        "label like --sample-by-label, ties broken by --sample-seed; annotate then logs once the predictions "
        "are written (see docs/workflow.md)."))
    uncertain_by: Literal["margin", "entropy"] = field(default="margin", metadata=_help(
        "What --uncertain ranks by: margin (top score minus the second; lowest first) or entropy (highest first)."))
    uncertain_name: str = field(default="round-2", metadata=_help("Metadata value that marks --uncertain."))
    log_only: Optional[list[str]] = field(default=None, metadata=_help(
        "Send only these records now (comma-separated): sample (--sample), uncertain (--uncertain), "
        "above-threshold (--thresholds); every row is still written to Parquet, and `zs-ray log` without "
        "--log-only sends the rest later, exactly once."))
    thresholds: Optional[str] = field(default=None, metadata=_help(
        "With --log-only above-threshold: the JSON of `zs-ray thresholds --output` (a record whose top score "
        "is at or above its label's threshold is sent)."))
    # The thresholds read from --thresholds; not a flag.
    threshold_map: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        from zs_ray.workflow.logonly import check_log_only_settings, parse_log_only

        if self.uncertain is not None and self.uncertain < 1:
            raise ZsRayError(f"--uncertain must be a count N >= 1, got {self.uncertain}")
        if not self.uncertain_name or len(self.uncertain_name) > 128:
            raise ZsRayError("--uncertain-name must be 1-128 characters")
        parsed = parse_log_only(self.log_only)
        self.log_only = list(parsed) if parsed else None
        self.thresholds = self.thresholds or None
        check_log_only_settings(self)
        self.threshold_map = read_thresholds(self.thresholds) if self.thresholds else {}

    def uncertain_rule_for(self, out):
        """The uncertainty queue of a complete output (``uncertain.make_uncertain_rule``); None without
        ``--uncertain``."""
        if self.uncertain is None:
            return None
        from zs_ray.workflow.uncertain import make_uncertain_rule

        return make_uncertain_rule(out, self.uncertain, self.uncertain_by, self.sample_seed, self.uncertain_name)

    def log_only_for(self, out, sample=None, uncertain=None):
        """The records of ``out`` to send now (``logonly.Selection``), from the rules already decided; None:
        every record."""
        from zs_ray.workflow.logonly import selection

        return selection(self, sample, uncertain, out.labels)


@dataclass(repr=False)
class RubrixConfig(LogOnlyConfig, SendConfig):
    """What ``annotate`` and ``log`` take: the server (``ServerConfig``), how records are built and sent
    (``SendConfig``), the round-1 sample (``SampleConfig``), the round-2 queue and ``--log-only``
    (``LogOnlyConfig``). Its ``repr`` leaves the secrets out."""
