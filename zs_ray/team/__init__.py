"""Several annotators on one dataset: their agreement, who is far off, and one consensus label per record.

``Responses`` holds every submitted answer as integer arrays; ``agreement.report`` measures the team
(Krippendorff's alpha, Fleiss' kappa with bootstrap intervals, Cohen's kappa per pair, flagged annotators,
confused label pairs); ``consensus.resolve`` gives each record its label (majority, Dawid-Skene, or the model
as a weighted voice beside the people). numpy / scipy / scikit-learn only (and `config.py`, the
``--consensus`` / ``--reviewers`` settings, `zs_ray.errors`): no Ray, no server, no workflow.
"""

from .agreement import (binary_counts, bootstrap_interval, cohen_kappa, disagreement_order, fleiss_kappa,
                        krippendorff_alpha, observed_agreement, report)
from .consensus import METHODS, Consensus, resolve
from .responses import Responses

__all__ = ["Responses", "Consensus", "METHODS", "resolve", "report", "krippendorff_alpha", "fleiss_kappa",
           "observed_agreement", "bootstrap_interval", "cohen_kappa", "binary_counts", "disagreement_order"]
