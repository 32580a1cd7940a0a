"""The settings of ``zs-ray agreement`` (the team's agreement, its consensus and its review queue), documented as
``zs_ray.config`` documents the others; ``--review`` takes the server's settings too (``ServerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from zs_ray.errors import ZsRayError
from zs_ray.team.config import ConsensusConfig
from zs_ray.workflow.config import BULK_AGENT, HUMAN_STATUSES


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class AgreementConfig(ConsensusConfig):
    """``zs-ray agreement``: how far a team's annotators agree (agreement.json + report.html), who is far off,
    which labels they confuse, how many records their consensus leaves unresolved; ``--review N`` marks the N
    records they disagree on most on the server for a reviewer."""

    input: str = field(default="", metadata=_help("A `zs-ray pull` Parquet file (with its responses column)."))
    output: str = field(default="", metadata=_help("Directory for agreement.json and report.html."))
    review: int = field(default=0, metadata=_help(
        "Mark the N records whose annotators disagree most on the server (metadata review: disagreement, a "
        "filter in Argilla's UI) for --reviewers to decide; needs --rubrix-dataset (Argilla 2.x)."))
    status: list[str] = field(default_factory=lambda: list(HUMAN_STATUSES), metadata=_help(
        "The statuses whose responses count as answers (Validated: submitted; Edited: drafts too)."))
    exclude_agent: list[str] = field(default_factory=lambda: [BULK_AGENT], metadata=_help(
        "Users whose responses are not a person's answers (default: zs-ray-bulk, the bulk labels)."))
    bootstrap: int = field(default=1000, metadata=_help(
        "Bootstrap resamples over records for the intervals of alpha and kappa."))
    seed: int = field(default=0, metadata=_help("Seed of the bootstrap."))
    title: Optional[str] = field(default=None, metadata=_help("Title of the report (default: the input)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.input:
            raise ZsRayError("--input is required (a `zs-ray pull` file)")
        if not self.output:
            raise ZsRayError("--output is required (a directory for agreement.json and report.html)")
        if self.review < 0 or self.bootstrap < 0:
            raise ZsRayError("--review and --bootstrap must be >= 0")
