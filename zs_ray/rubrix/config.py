"""Connection and sending settings for Rubrix / Argilla 1.x, filled from flags, env vars, defaults.

Precedence: an explicit flag wins over the environment, the environment over the defaults
(``RUBRIX_API_URL``, ``RUBRIX_API_KEY``, ``RUBRIX_WORKSPACE``, with the ``ARGILLA_*`` names as
fallback), as ``rb.init`` reads them. The API key is never part of ``repr``/``str``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from zs_ray.errors import ZsRayError

DEFAULT_API_URL = "http://localhost:6900"
DEFAULT_API_KEY = "rubrix.apikey"
DEFAULT_TAGS = {"tags": "data-annotation"}
DATASET_NAME_RE = re.compile(r"^(?!-|_)[a-z0-9-_]+$")


@dataclass
class RubrixConfig:
    """Where and how to log records.

    Attributes:
        dataset: target dataset name (``^(?!-|_)[a-z0-9-_]+$``).
        api_url: server base URL, e.g. ``http://localhost:6900``.
        api_key: the user's API key; excluded from repr, never logged or written.
        workspace: workspace name (required by Argilla >= 1.13), or None for the user's own.
        tags: dataset tags sent with every bulk request (the seed's ``{"tags": "data-annotation"}``).
        chunk_size: most records per bulk request.
        chunk_bytes: most JSON bytes per bulk request body (proxies often cap at 1 MB).
        senders: most bulk requests in flight at once (Ray tasks sending in parallel).
        retries: extra attempts after a 5xx or transport error (never after a 4xx).
        backoff_s / backoff_max_s: exponential backoff base and cap; each wait gets +-50% jitter.
        timeout_s: connect/read timeout of one HTTP request.
        verify_tls: verify the server's TLS certificate (turn off only for self-signed test servers).
        ledger_path: where the acknowledgement ledger lives; None = ``<input>/_rubrix/``.
        metadata_fields: source columns to log as metadata; None = every short source column.
        agent: prediction agent; None = the model name from the manifest.
        sender_cpus: Ray CPU request of one sender task (I/O bound, so a fraction).
    """

    dataset: str
    api_url: str = DEFAULT_API_URL
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    workspace: str | None = None
    tags: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TAGS))
    chunk_size: int = 500
    chunk_bytes: int = 900_000
    senders: int = 4
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 20.0
    timeout_s: float = 60.0
    verify_tls: bool = True
    ledger_path: str | None = None
    metadata_fields: list[str] | None = None
    agent: str | None = None
    sender_cpus: float = 0.25

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")

    def validate(self) -> "RubrixConfig":
        """Raise ZsRayError for settings the server would refuse or that make no sense."""
        if not DATASET_NAME_RE.match(self.dataset or ""):
            raise ZsRayError(
                f"invalid Rubrix dataset name {self.dataset!r}: use lowercase letters, digits, '-' "
                "and '_', not starting with '-' or '_' (e.g. zeroshot_noticias)"
            )
        if not re.match(r"^https?://[^/\s]+", self.api_url):
            raise ZsRayError(f"invalid Rubrix API URL {self.api_url!r}: expected http(s)://host[:port]")
        if not self.api_key:
            raise ZsRayError("empty Rubrix API key: set --rubrix-api-key or RUBRIX_API_KEY")
        for name in ("chunk_size", "chunk_bytes", "senders"):
            if getattr(self, name) < 1:
                raise ZsRayError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.retries < 0:
            raise ZsRayError(f"retries must be >= 0, got {self.retries}")
        for k, v in self.tags.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise ZsRayError(f"invalid dataset tag {k!r}={v!r}: tags are key=value strings")
        return self

    @classmethod
    def from_sources(
        cls, dataset: str, env: Mapping[str, str] | None = None, **flags
    ) -> "RubrixConfig":
        """Build a config: non-None ``flags`` win, then env vars, then defaults."""
        env = os.environ if env is None else env

        def pick(flag_name: str, *env_names: str):
            if flags.get(flag_name) is not None:
                return flags[flag_name]
            for n in env_names:
                if env.get(n):
                    return env[n]
            return None

        values = {k: v for k, v in flags.items() if v is not None}
        for name, envs in (
            ("api_url", ("RUBRIX_API_URL", "ARGILLA_API_URL")),
            ("api_key", ("RUBRIX_API_KEY", "ARGILLA_API_KEY")),
            ("workspace", ("RUBRIX_WORKSPACE", "ARGILLA_WORKSPACE")),
        ):
            v = pick(name, *envs)
            if v is not None:
                values[name] = v
            else:
                values.pop(name, None)
        return cls(dataset=dataset, **values)


def parse_tags(items: list[str] | None) -> dict[str, str] | None:
    """``["k=v", ...]`` -> dict; None when no tags were given (keep the default)."""
    if not items:
        return None
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ZsRayError(f"invalid --rubrix-tags {item!r}: expected key=value")
        tags[key.strip()] = value.strip()
    return tags
