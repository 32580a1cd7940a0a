"""What every send to a server does before its first record: the records' spec from the output's manifest and
the settings (``record_spec``), then, once the server has said which generation it is, the spec for that server
(``for_server``: the agent's length, the scores as metadata) and, on Argilla 2.x, the dataset created, set up and
published or checked (``prepare_v2``). ``ingest.log_output`` and ``log --update-suggestions``
(``workflow/suggest.py``) both start here.
"""

from __future__ import annotations

import logging

from zs_ray.errors import ZsRayError
from zs_ray.output import Output
from zs_ray.servers import argilla2
from zs_ray.servers import records as rec
from zs_ray.servers.client import RubrixClient, RubrixError
from zs_ray.servers.config import SendConfig

log = logging.getLogger(__name__)


def record_spec(config: SendConfig, out: Output, sample=None, uncertain=None):
    """The records' spec (``records.make_spec``) before the server is asked, with the round-1 sample and the
    round-2 queue rules already decided (or None). Returns the spec, its warnings (not logged here) and the agent
    as given: Argilla 2.x takes agents of up to 200 characters (``argilla2.sanitise_agent``), 1.x up to 64
    (``make_spec``), so a longer one is checked once the server has said which it is (``for_server``)."""
    agent = config.rubrix_agent or out.manifest.get("model") or ""
    spec, warnings = rec.make_spec(out.dataset, out.manifest, config.rubrix_metadata_fields,
                                   agent[:rec.MAX_AGENT] if len(agent) > rec.MAX_AGENT else config.rubrix_agent,
                                   sample=sample, uncertain=uncertain)
    return spec, warnings, agent


def set_up(client: RubrixClient, config: SendConfig, out: Output, spec: rec.RecordSpec, agent: str, v2: bool):
    """``for_server``, then on 2.x ``prepare_v2``. Returns the spec, ``for_server``'s warnings and the 2.x target
    (None on 1.x)."""
    spec, warnings = for_server(config, out, spec, agent, v2)
    return spec, warnings, prepare_v2(client, config, out, spec, agent) if v2 else None


def for_server(config: SendConfig, out: Output, spec: rec.RecordSpec, agent: str, v2: bool):
    """``spec`` once the server has said which generation it is: an agent too long for 1.x refused (one line),
    the scores as metadata added (``--rubrix-score-metadata``; 1.x holds 50 keys per dataset, 2.x has no such
    limit). Returns the spec and the warnings (logged here)."""
    if not v2 and len(agent) > rec.MAX_AGENT:
        rec.make_spec(out.dataset, out.manifest, config.rubrix_metadata_fields, agent)  # raises: too long
    spec, warnings = rec.with_scores(spec, out.labels, None if v2 else rec.MAX_METADATA_KEYS,
                                     config.rubrix_score_metadata)
    for w in warnings:
        log.warning(w)
    return spec, warnings


def prepare_v2(client: RubrixClient, config: SendConfig, out: Output, spec: rec.RecordSpec, agent: str):
    """Argilla 2.x: the dataset created, set up and published (or checked) before any chunk."""
    agent = argilla2.sanitise_agent(agent)
    labels = out.labels
    if not labels:
        raise ZsRayError("the output's manifest names no candidate labels: Argilla 2.x needs them as the "
                         "label question's options")
    meta = argilla2.metadata_types(out.dataset, spec.metadata_fields)
    if spec.sample is not None:
        meta[rec.SAMPLE_KEY] = "terms"
    titles = {}
    for label, key in spec.score_keys:  # float properties: range filters and sorting in the UI
        meta[key], titles[key] = "float", f"Score: {label}"
    if spec.uncertainty:
        meta[rec.MARGIN_KEY], titles[rec.MARGIN_KEY] = "float", "Margin (1st - 2nd score)"
        meta[rec.ENTROPY_KEY], titles[rec.ENTROPY_KEY] = "float", "Entropy"
    if spec.uncertain is not None:
        meta[rec.UNCERTAIN_KEY] = "terms"
    facts = {k: out.manifest.get(k) for k in ("model", "hypothesis_template", "multi_label") if k in out.manifest}
    try:
        return argilla2.prepare(client, config, client.argilla2, labels, spec.multi_label, agent, meta, facts,
                                titles=titles)
    except RubrixError as exc:
        raise ZsRayError(f"cannot set up dataset {config.rubrix_dataset}: {exc}") from None
