"""How zs-ray reaches an annotation server as people deploy it, and keeps its secrets out of every output.

* **Extra headers** on every request (``--rubrix-extra-headers '{"Authorization": "Bearer ..."}'``, a JSON
  file, or ``$RUBRIX_EXTRA_HEADERS`` / ``$ARGILLA_EXTRA_HEADERS``), as the official clients send them
  (``rg.init(extra_headers=...)`` on 1.x, ``rg.Argilla(headers=...)`` on 2.x): a private Hugging Face Space
  or a company proxy answers only requests that carry its header. For a ``*.hf.space`` URL with no
  ``Authorization`` header given, the Hugging Face token (``HF_TOKEN``, or the one ``huggingface-cli login``
  stored: ``huggingface_hub.get_token()``) is sent as ``Authorization: Bearer`` by itself, said once in the log.
  The real servers look at their key header first (argilla-server 2.8: ``APIKeyAuthenticationBackend`` before
  the bearer one), so the bearer meant for the Space does not disturb them.
* **Refused in front of the server**: a 401/403/407 whose body is not the server's own error
  (``{"detail": {"code": "...::UnauthorizedError", ...}}`` on Rubrix 0.x, Argilla 1.x and 2.x alike) came
  from the Space or proxy, and says so (``front_refusal``), never "the server refused the key".
* **TLS**: requests' own ``verify``: ``--rubrix-ca-bundle PATH`` (a company CA), else ``REQUESTS_CA_BUNDLE``
  as requests reads it, else the system's. A certificate that does not verify is one line, never retried and
  never a fallback to no verification (only ``--rubrix-no-verify-tls`` switches it off).
* **Secrets**: the API key, the URL's ``user:password@``, the extra headers' values and the HF token (and a
  forward proxy's ``user:password@`` in ``HTTPS_PROXY``, which requests reads).
  ``redact`` takes them out of any text, ``public_url`` drops a URL's credentials; every message, log line,
  ledger and report goes through them. Ray workers get them inside the settings object (the object store),
  never in a task's arguments as text, its runtime_env or the job's entrypoint (``--rubrix-api-key-file``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)
HF_SPACE_SUFFIX = ".hf.space"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_SAID: set[str] = set()


# -- reading the settings (``ServerConfig.__post_init__``) -------------------------------------------
def read_secret_file(path: str, flag: str) -> str:
    """The stripped contents of a key or headers file; one line naming the flag if it cannot be read."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise ZsRayError(f"cannot read {flag} {path}: {exc.strerror}") from None
    if not text:
        raise ZsRayError(f"{flag} {path} is empty")
    return text


def parse_headers(value, source: str) -> dict[str, str]:
    """Headers from a JSON object (text) or a mapping. The values are secrets: never part of a message."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ZsRayError(f"{source} is not JSON ({getattr(exc, 'msg', 'invalid')} at character "
                             f"{getattr(exc, 'pos', '?')}): expected an object such as "
                             "'{\"Authorization\": \"Bearer <token>\"}'") from None
    if not isinstance(value, dict):
        raise ZsRayError(f"{source} must be a JSON object of header names to values, not {type(value).__name__}")
    out = {}
    for name, val in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name.strip()):
            raise ZsRayError(f"{source}: {str(name)[:40]!r} is not a valid HTTP header name")
        if not isinstance(val, str) or "\n" in val or "\r" in val:
            raise ZsRayError(f"{source}: the value of header {name.strip()!r} must be one line of text")
        out[name.strip()] = val
    return out


def hf_token() -> str | None:
    """The Hugging Face token: ``HF_TOKEN``, else the one ``huggingface-cli login`` stored."""
    try:
        from huggingface_hub import get_token

        return get_token() or None
    except Exception:  # an old or broken huggingface_hub: the variable alone
        return os.environ.get("HF_TOKEN") or None


def space_headers(url: str, headers: dict[str, str]) -> dict[str, str]:
    """``Authorization: Bearer <HF token>`` for a ``*.hf.space`` URL given no Authorization header; else {}."""
    host = (urlsplit(url).hostname or "").lower()
    if not host.endswith(HF_SPACE_SUFFIX) or any(k.lower() == "authorization" for k in headers):
        return {}
    token = hf_token()
    if not token:
        return {}
    if host not in _SAID:
        _SAID.add(host)
        log.info("%s is a Hugging Face Space: sending your Hugging Face token (HF_TOKEN or huggingface-cli "
                 "login) as Authorization: Bearer, which a private Space requires", host)
    return {"Authorization": f"Bearer {token}"}


def check_ca_files(config) -> None:
    """A CA bundle that is not there: one line before any work (requests would raise it mid-run)."""
    if config.rubrix_ca_bundle and config.rubrix_no_verify_tls:
        raise ZsRayError("--rubrix-ca-bundle and --rubrix-no-verify-tls contradict each other: give one")
    if config.rubrix_ca_bundle and not os.path.exists(os.path.expanduser(config.rubrix_ca_bundle)):
        raise ZsRayError(f"--rubrix-ca-bundle {config.rubrix_ca_bundle}: no such file or directory")
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        path = os.environ.get(var)
        if path and not config.rubrix_ca_bundle and config.rubrix_api_url.startswith("https:") \
                and not os.path.exists(path):
            raise ZsRayError(f"{var}={path}: no such file or directory (it names the CA bundle for TLS)")


# -- the session -------------------------------------------------------------------------------------
def verify(config) -> bool | str:
    """requests' ``verify``: the CA bundle, else True (requests then reads REQUESTS_CA_BUNDLE), else False."""
    if config.rubrix_ca_bundle:
        return os.path.expanduser(config.rubrix_ca_bundle)
    return not config.rubrix_no_verify_tls


def new_session(config):
    """A ``requests.Session`` with the extra headers and the TLS setting (the key headers: the client)."""
    import requests

    session = requests.Session()
    session.verify = verify(config)
    session.headers["Content-Type"] = "application/json"
    session.headers.update(config.rubrix_extra_headers or {})
    return session


def fingerprint(config) -> str:
    """A digest of everything secret or transport-related (a cache key that holds no secret)."""
    parts = [config.rubrix_api_key or "", json.dumps(config.rubrix_extra_headers or {}, sort_keys=True),
             str(verify(config)), config.rubrix_api_url]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# -- secrets out of every text -----------------------------------------------------------------------
def public_url(url: str) -> str:
    """``url`` without ``user:password@``: the only form of it ever printed or written."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_secrets(url: str) -> list[str]:
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rpartition("@")[0]
    user, sep, password = userinfo.partition(":")
    found = [userinfo] + ([password] if sep and password else [user])
    return found + [unquote(s) for s in found] + [quote(unquote(s), safe="") for s in found]


def secrets_of(config) -> list[str]:
    """Every secret ``config`` holds, longest first (so a key inside a header value goes whole)."""
    found = [config.rubrix_api_key or ""] + url_secrets(config.rubrix_api_url)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        found += url_secrets(os.environ.get(var) or "")  # a forward proxy's user:password@, as requests reads it
    for value in (config.rubrix_extra_headers or {}).values():
        found.append(value)
        found.extend(value.split()[1:])  # "Bearer <token>": the token alone too
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- what went wrong on the way -----------------------------------------------------------------------
def transport_error(exc, method: str, url: str) -> tuple[str, bool]:
    """(message, retryable) for a request that got no answer. A TLS failure is never retried."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        match = re.search(r"\[SSL[^\]]*\][^'\"()]*", str(exc))
        reason = (match.group(0) if match else type(exc).__name__).strip().rstrip(".")
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return (f"TLS: the certificate of {url} does not verify ({reason}): give the CA that signed it "
                    "with --rubrix-ca-bundle PATH or REQUESTS_CA_BUNDLE (verification stays on)", False)
        return f"TLS: {method} {url} failed ({reason})", False
    return f"cannot reach {method} {url}: {type(exc).__name__}: {exc}", True


def front_refusal(status: int, code: str | None, method: str, path: str) -> str | None:
    """The message for a 401/403/407 that the server did not write (its body is not the server's own
    error), i.e. the Hugging Face Space or a proxy refused the request before the server saw it; else None."""
    if status not in (401, 403, 407) or code is not None:
        return None
    return (f"{method} {path} -> HTTP {status} from the Hugging Face Space or proxy in front of the server, "
            "not from the server: it refused the request before the server saw it (a private Space needs "
            "your Hugging Face token: HF_TOKEN or --rubrix-extra-headers '{\"Authorization\": \"Bearer "
            "...\"}'; a proxy, the header it expects)")
