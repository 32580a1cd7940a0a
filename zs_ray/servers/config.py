"""Annotation-server settings: where the server is (``ServerConfig``) and how records are sent (``SendConfig``).

Field names are the CLI flags (``rubrix_api_url`` is ``--rubrix-api-url``) and the keys of
``--config-file``; see ``zs_ray.config``. Connection values not given explicitly come from the
environment as ``rb.init`` reads it (``RUBRIX_API_URL``, ``RUBRIX_API_KEY``, ``RUBRIX_WORKSPACE``, with
the ``ARGILLA_*`` names as fallback), then the defaults. Secrets (the key, the URL's ``user:password@``, the
extra headers) are never part of ``repr``/``str``; they may come from files (``--rubrix-api-key-file``,
``--rubrix-extra-headers-file``), which keeps them off a command line (``ps``, ``ray job list``). How they
travel and are kept out of every output: ``transport``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Literal, Optional, Union

from zs_ray.errors import ZsRayError
from zs_ray.servers import transport

DEFAULT_API_URL = "http://localhost:6900"
# The key of a fresh server's default user, by generation: used when no key is given (flag or environment).
DEFAULT_API_KEYS = {"rubrix": "rubrix.apikey", "argilla": "argilla.apikey", "argilla2": "argilla.apikey"}
DEFAULT_TAGS = {"tags": "data-annotation"}
SAMPLE_KEY = "sample"  # the metadata key that marks a sampled record (Argilla 2.x: a terms metadata property)
UNCERTAIN_KEY = "uncertain"  # the metadata key that marks the round-2 uncertainty queue (as SAMPLE_KEY)
DATASET_NAME_RE = re.compile(r"^(?!-|_)[a-z0-9-_]+$")
_ENV = {
    "rubrix_api_url": ("RUBRIX_API_URL", "ARGILLA_API_URL"),
    "rubrix_api_key": ("RUBRIX_API_KEY", "ARGILLA_API_KEY"),
    "rubrix_workspace": ("RUBRIX_WORKSPACE", "ARGILLA_WORKSPACE"),
    "rubrix_extra_headers": ("RUBRIX_EXTRA_HEADERS", "ARGILLA_EXTRA_HEADERS"),
}


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class ServerConfig:
    """Which server and dataset, and how to talk to it (one attempt's timeout, the retry policy)."""

    rubrix_dataset: Optional[str] = field(default=None, metadata=_help(
        "Annotation dataset name (lowercase letters, digits, - and _); with annotate: log the predictions."))
    rubrix_api_url: Optional[str] = field(default=None, metadata=_help(
        f"Server URL (default: $RUBRIX_API_URL, $ARGILLA_API_URL, else {DEFAULT_API_URL})."))
    rubrix_api_key: Optional[str] = field(default=None, repr=False, metadata=_help(
        "API key (default: $RUBRIX_API_KEY or $ARGILLA_API_KEY, preferred: flags are visible to `ps`; else "
        "the default of a fresh server: rubrix.apikey on Rubrix 0.x, argilla.apikey on Argilla 1.x and 2.x)."))
    rubrix_api_key_file: Optional[str] = field(default=None, metadata=_help(
        "File holding the API key (used when --rubrix-api-key is not given): keeps the key off the command line, "
        "`ps` and `ray job list`."))
    rubrix_extra_headers: Optional[Union[dict, str]] = field(default=None, repr=False, metadata=_help(
        "Extra HTTP headers on every request to the server, as JSON: '{\"Authorization\": \"Bearer hf_...\"}' "
        "for a private Hugging Face Space or a proxy (default: $RUBRIX_EXTRA_HEADERS or $ARGILLA_EXTRA_HEADERS). "
        "Secret like the key: prefer the variable or --rubrix-extra-headers-file. For a *.hf.space URL the "
        "Hugging Face token (HF_TOKEN or huggingface-cli login) is sent as the bearer by itself."))
    rubrix_extra_headers_file: Optional[str] = field(default=None, metadata=_help(
        "File holding extra headers as a JSON object (merged under --rubrix-extra-headers)."))
    rubrix_ca_bundle: Optional[str] = field(default=None, metadata=_help(
        "CA bundle (PEM file or directory) that signed the server's TLS certificate, e.g. a company CA "
        "(default: $REQUESTS_CA_BUNDLE, else the system's)."))
    rubrix_workspace: Optional[str] = field(default=None, metadata=_help(
        "Workspace (default: $RUBRIX_WORKSPACE or $ARGILLA_WORKSPACE; Argilla 1.6+ needs one; on 2.x, "
        "without one, your only workspace)."))
    rubrix_no_verify_tls: bool = field(default=False, metadata=_help(
        "Do not verify the server's TLS certificate (self-signed test servers only)."))
    rubrix_timeout: float = field(default=60.0, metadata=_help("Seconds per HTTP request."))
    rubrix_retries: int = field(default=5, metadata=_help(
        "Retries of a server operation after a 5xx or transport error (never after a 4xx)."))
    rubrix_backoff: float = field(default=0.5, metadata=_help(
        "First retry's wait in seconds; doubling per retry up to 20 s, with +-50%% jitter."))

    def __post_init__(self) -> None:
        self._key_from_file()  # the file given, before the environment's key
        for name, env_names in _ENV.items():
            if getattr(self, name) is None:
                setattr(self, name, next((os.environ[e] for e in env_names if os.environ.get(e)), None))
        self.rubrix_api_url = (self.rubrix_api_url or DEFAULT_API_URL).rstrip("/")
        # A key not given stays None: the server's generation, known only once asked, chooses the default.
        self.rubrix_workspace = self.rubrix_workspace or None
        self.rubrix_ca_bundle = self.rubrix_ca_bundle or None
        transport.check_ca_files(self)
        headers = transport.parse_headers(self.rubrix_extra_headers, "--rubrix-extra-headers")
        if self.rubrix_extra_headers_file:
            from_file = transport.read_secret_file(self.rubrix_extra_headers_file, "--rubrix-extra-headers-file")
            headers = {**transport.parse_headers(from_file, f"--rubrix-extra-headers-file "
                                                            f"{self.rubrix_extra_headers_file}"), **headers}
        self.rubrix_extra_headers = {**headers, **transport.space_headers(self.rubrix_api_url, headers)}

    def _key_from_file(self) -> None:
        if self.rubrix_api_key is None and self.rubrix_api_key_file:
            self.rubrix_api_key = transport.read_secret_file(self.rubrix_api_key_file, "--rubrix-api-key-file")

    @property
    def public_url(self) -> str:
        """The server URL without ``user:password@``: the only form of it that is printed or written."""
        return transport.public_url(self.rubrix_api_url)

    def api_key_for(self, generation: str) -> str:
        """The key to send to a server of ``generation`` ("rubrix" or "argilla")."""
        return DEFAULT_API_KEYS[generation] if self.rubrix_api_key is None else self.rubrix_api_key

    @property
    def enabled(self) -> bool:
        """Whether a dataset was named (``annotate`` logs only then)."""
        return bool(self.rubrix_dataset)

    def validate(self) -> "ServerConfig":
        """Raise ZsRayError for settings the server would refuse or that make no sense."""
        if not self.rubrix_dataset:
            raise ZsRayError("--rubrix-dataset is required")
        if not DATASET_NAME_RE.match(self.rubrix_dataset):
            raise ZsRayError(
                f"invalid Rubrix dataset name {self.rubrix_dataset!r}: use lowercase letters, digits, '-' "
                "and '_', not starting with '-' or '_' (e.g. zeroshot_noticias)"
            )
        if not re.match(r"^https?://[^/\s]+", self.rubrix_api_url):
            raise ZsRayError(f"invalid Rubrix API URL {self.rubrix_api_url!r}: expected http(s)://host[:port]")
        if self.rubrix_api_key is not None and not self.rubrix_api_key:
            raise ZsRayError("empty Rubrix API key: set --rubrix-api-key or RUBRIX_API_KEY")
        if self.rubrix_retries < 0:
            raise ZsRayError(f"--rubrix-retries must be >= 0, got {self.rubrix_retries}")
        if self.rubrix_timeout <= 0 or self.rubrix_backoff < 0:
            raise ZsRayError("--rubrix-timeout must be positive and --rubrix-backoff not negative")
        return self


@dataclass(repr=False)
class SendConfig(ServerConfig):
    """``ServerConfig`` plus how records are built and sent. The round-1 sample is a workflow setting that
    comes in through ``sample_rule_for`` (``zs_ray.workflow.config.RubrixConfig``, what ``annotate`` and
    ``log`` take); here there is none."""

    rubrix_tags: Optional[list[str]] = field(default=None, metadata=_help(
        "Dataset tags as KEY=VALUE ... (a mapping in a config file or from Python; default: "
        "tags=data-annotation, as the seed tutorial)."))
    chunk_size: int = field(default=500, metadata=_help("Most records per bulk request."))
    chunk_bytes: int = field(default=900_000, metadata=_help(
        "Most bytes per bulk request body (proxies often cap at 1 MB)."))
    senders: int = field(default=4, metadata=_help(
        "Bulk requests in flight at once (Ray tasks, spread over the cluster)."))
    rubrix_ledger: Optional[str] = field(default=None, metadata=_help(
        "File recording acknowledged ids (default: <output>/_rubrix/<dataset>-<hash>.ledger.jsonl)."))
    rubrix_metadata_fields: Optional[list[str]] = field(default=None, metadata=_help(
        "Source columns logged as metadata (default: every source column whose values fit in 128 characters)."))
    rubrix_agent: Optional[str] = field(default=None, metadata=_help("Prediction agent (default: the model)."))
    rubrix_score_metadata: Literal["all", "uncertainty", "none"] = field(default="all", metadata=_help(
        "The distribution as metadata on each record: all (every label's score, the margin and the entropy), "
        "uncertainty (margin and entropy only), none. The per-label scores cost Argilla 2.x about a quarter "
        "of its logging rate (benchmarks/results-argilla2.md)."))
    min_submitted: Optional[int] = field(default=None, metadata=_help(
        "Argilla 2.x: how many people answer each record (the dataset's task distribution, strategy overlap: a "
        "record is completed once K people submitted); set on a new dataset and changed on an existing one. "
        "Not given: a new dataset gets the server's default (1), an existing one keeps its own. Rubrix 0.x and "
        "Argilla 1.x keep one annotation per record (K > 1 is refused there)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rubrix_tags = parse_tags(self.rubrix_tags)
        if self.rubrix_metadata_fields is not None:
            items = [self.rubrix_metadata_fields] if isinstance(self.rubrix_metadata_fields, str) else \
                self.rubrix_metadata_fields
            self.rubrix_metadata_fields = [f.strip() for item in items for f in str(item).split(",") if f.strip()]

    def sample_rule_for(self, out) -> Optional[object]:
        """The records of the output ``out`` to mark as a sample (an object with ``name`` and
        ``contains(id, top_label)``), decided before the first record is sent; None: no sample."""
        return None

    def uncertain_rule_for(self, out) -> Optional[object]:
        """The records of ``out`` to mark as the uncertainty queue (as ``sample_rule_for``); None: none."""
        return None

    def log_only_for(self, out, sample=None, uncertain=None) -> Optional[object]:
        """The records of ``out`` to send now (an object with ``contains(id, top_label, top_score)`` and
        ``describe()``), given the rules decided; None: every record."""
        return None

    def validate(self) -> "SendConfig":
        super().validate()
        for name in ("chunk_size", "chunk_bytes", "senders"):
            if getattr(self, name) < 1:
                raise ZsRayError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.min_submitted is not None and self.min_submitted < 1:
            raise ZsRayError(f"--min-submitted must be >= 1 (people per record), got {self.min_submitted}")
        return self


def _repr(self) -> str:
    """The settings without secrets: the URL's credentials dropped, key and headers left out."""
    shown = ", ".join(f"{f.name}={self.public_url if f.name == 'rubrix_api_url' else getattr(self, f.name)!r}"
                      for f in fields(self) if f.repr)
    return f"{type(self).__name__}({shown})"


ServerConfig.__repr__ = _repr  # subclasses: @dataclass(repr=False), so theirs too


def parse_tags(value) -> dict[str, str]:
    """Tags as a mapping, from ``{"k": "v"}`` or ``["k=v", ...]``; None or empty: the default."""
    if not value:
        return dict(DEFAULT_TAGS)
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = []
        for item in [value] if isinstance(value, str) else value:
            key, sep, val = str(item).partition("=")
            if not sep or not key.strip():
                raise ZsRayError(f"invalid --rubrix-tags {item!r}: expected key=value")
            pairs.append((key, val))
    return {key.strip(): val.strip() for key, val in pairs}


def dataset_names(name: str, configs) -> dict:
    """The annotation dataset of each config: ``name`` for one, ``name-<config>`` for several."""
    if len(configs) <= 1:
        return {c: name for c in configs}
    return {c: f"{name}-{c}" for c in configs}
