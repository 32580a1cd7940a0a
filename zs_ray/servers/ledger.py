"""A crash-safe, append-only record of which record ids a Rubrix dataset has acknowledged.

One JSON object per line, each flushed and fsync'd:

* ``{"op": "open", "api_url", "workspace", "dataset"}`` first (never the key);
* ``{"op": "ack", "chunk", "ids"}`` once the server is known to hold those ids.

The ledger only saves work; it is not what prevents a resend. Whenever the dataset already
existed, every id the ledger does not list is checked against the server before sending (see
``ingest``), so a lost answer, a crash between the server's store and the ack line, a torn line
or a deleted ledger all end in a check, never in a blind resend. Torn lines are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)


def default_path(output, identity: dict) -> Path:
    """Beside a local output (``<output>/_rubrix/<dataset>-<hash>.ledger.jsonl``); for an output on an
    object store, which cannot append and fsync, in the user's cache directory, named by the output's URI."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{identity['dataset']}-{digest}.ledger.jsonl"
    protocol = output.fs.protocol if isinstance(output.fs.protocol, str) else output.fs.protocol[0]
    if protocol in ("file", "local"):
        return Path(output.path) / "_rubrix" / name
    where = hashlib.sha256(output.uri.rstrip("/").encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "zs-ray" / "ledgers" / where / name


class Ledger:
    def __init__(self, path: str | os.PathLike, identity: dict):
        self.path = Path(path)
        self.identity = dict(identity)
        self.acked: set[str] = set()
        self._fh = None

    @classmethod
    def open(cls, path, identity: dict, *, reset: bool = False) -> "Ledger":
        """Load (or start) the ledger. ``reset`` moves an old one aside (the dataset is gone)."""
        led = cls(path, identity)
        if reset and led.path.exists():
            stale = led.path.with_name(led.path.name + f".stale-{int(time.time())}")
            led.path.rename(stale)
            log.warning("dataset %s is not on the server: old ledger moved to %s",
                        identity["dataset"], stale)
        try:
            led.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not led.path.exists() or led.path.stat().st_size == 0
            if not fresh:
                led._load()
            led._fh = open(led.path, "a", encoding="utf-8")
        except OSError as exc:
            raise ZsRayError(f"cannot use ledger {led.path}: {exc.strerror}; choose a writable "
                             "place with --rubrix-ledger") from None
        if fresh:
            led._append({"op": "open", **led.identity})
            _fsync_dir(led.path.parent)
        return led

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                # A line torn by a crash mid-append: its ids count as unacknowledged (re-checked).
                log.warning("ignoring torn line %d of %s", n + 1, self.path)
                continue
            op = entry.get("op")
            if op == "open":
                theirs = {k: entry.get(k) for k in self.identity}
                if theirs != self.identity:
                    raise ZsRayError(f"ledger {self.path} belongs to {theirs}, not {self.identity}")
            elif op == "ack":
                self.acked.update(entry["ids"])

    def _append(self, entry: dict) -> None:
        # A torn line from an earlier crash would glue onto this one: always start on a new line.
        self._fh.write("\n" + json.dumps(entry, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def ack(self, chunk: str, ids: list[str]) -> None:
        if ids:
            self._append({"op": "ack", "chunk": chunk, "ids": ids})
        self.acked.update(ids)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
