"""The settings that say how a team's answers become one label: ``--consensus`` and ``--reviewers``.

Every command that takes human labels from a pulled file (``evaluate``, ``thresholds``, ``tune``, ``train``,
``agreement``) and ``audit`` inherit them, so the consensus has one definition (``zs_ray.team.consensus``) and one
pair of flags. ``pull`` takes ``--reviewers`` alone: the file it writes holds every response, and its
``annotation_labels`` are the majority's (a reviewer deciding); the other commands recompute the consensus with
their ``--consensus`` from the ``responses`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from zs_ray.errors import ZsRayError

CONSENSUS_HELP = (
    "How several people's answers to a record become its label: majority (a tie stays unresolved and is left "
    "out), dawid-skene (each annotator's confusion matrix learned by EM, so a careless annotator weighs less), or "
    "model-weighted (the zero-shot scores as a prior beside the annotators, weighted by their agreement). A "
    "reviewer's answer decides whatever the method.")
REVIEWERS_HELP = ("Users whose answer decides a record over the others' (comma-separated or one per argument), "
                  "e.g. a lead annotator adjudicating the records `zs-ray agreement --review` marked.")


def parse_names(value, flag: str = "--reviewers") -> list[str]:
    """Names from ``"a,b"``, ``["a", "b,c"]`` or None; empty names refused."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",")]
    if any(not n for n in names):
        raise ZsRayError(f"{flag}: empty name in {', '.join(map(str, items))!r}")
    return list(dict.fromkeys(names))


@dataclass
class ConsensusConfig:
    """``--consensus`` and ``--reviewers`` (mixed into the settings of the commands that take labels)."""

    consensus: Literal["majority", "dawid-skene", "model-weighted"] = field(default="majority", metadata={
        "help": CONSENSUS_HELP})
    reviewers: Optional[list[str]] = field(default=None, metadata={"help": REVIEWERS_HELP})

    def __post_init__(self) -> None:
        from zs_ray.team.consensus import METHODS

        if self.consensus not in METHODS:
            raise ZsRayError(f"--consensus must be one of {', '.join(METHODS)}, not {self.consensus!r}")
        self.reviewers = parse_names(self.reviewers)
