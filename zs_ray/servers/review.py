"""Adjudication on the server: mark records for a reviewer (``zs-ray agreement --review N``).

On Argilla 2.x a mark is the record's metadata ``review: disagreement``: a terms metadata property, made once and
visible to annotators, so a reviewer filters on it in the UI. Each record is read just before it is written and
its metadata is merged (the server replaces a record's metadata as a whole), so nothing else of it changes; a
record marked already is left as it is, so running it again marks nothing twice. Rubrix 0.x / Argilla 1.x keep
one annotation per record: there is no disagreement to review, and the command says so in one line.
"""

from __future__ import annotations

from zs_ray.errors import ZsRayError
from zs_ray.servers.client import RubrixError, with_retries
from zs_ray.servers.config import ServerConfig
from zs_ray.servers.connect import connect

REVIEW_KEY = "review"
REVIEW_VALUE = "disagreement"


def mark_review(config: ServerConfig, ids: list[str], key: str = REVIEW_KEY, value: str = REVIEW_VALUE) -> dict:
    """Mark the records of ``ids`` (zs-ray's ids, the records' external ids); returns what was done:
    ``marked`` (now), ``already`` (marked before), ``missing`` (not on the server)."""
    client, info, existed = connect(config)
    try:
        if info.generation != "argilla2":
            raise ZsRayError(f"--review needs Argilla 2.x: {info.generation} {info.version} keeps one annotation per "
                             "record, so there is no disagreement to review")
        if not existed:
            raise ZsRayError(f"dataset {config.rubrix_dataset} does not exist on {config.public_url}")
        from zs_ray.servers.argilla2_pull import iter_records

        did = client.argilla2.dataset["id"]
        try:
            with_retries(config, lambda: client.request(
                "POST", f"/api/v1/datasets/{did}/metadata-properties", ok=(201,), json_body={
                    "name": key, "title": "zs-ray review", "settings": {"type": "terms"},
                    "visible_for_annotators": True}))
        except RubrixError as exc:
            if exc.status != 409:  # made already
                raise
        wanted = set(ids)
        internal = {str(r.get("external_id")): str(r["id"]) for r in iter_records(client, config, did)
                    if str(r.get("external_id")) in wanted}
        done = {"marked": 0, "already": 0, "missing": len(wanted - set(internal))}
        for rid in internal.values():
            record = with_retries(config, lambda: client.request("GET", f"/api/v1/records/{rid}").json())
            metadata = record.get("metadata") or {}
            if metadata.get(key) == value:
                done["already"] += 1
                continue
            with_retries(config, lambda: client.request("PATCH", f"/api/v1/records/{rid}",
                                                        json_body={"metadata": {**metadata, key: value}}))
            done["marked"] += 1
        return done
    except RubrixError as exc:
        raise ZsRayError(f"marking records for review on {config.rubrix_dataset}: {exc}") from None
    finally:
        client.close()
