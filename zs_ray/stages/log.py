"""Log stage: records reach the annotation server while the job still predicts, not hours later.

A driver thread looks every ``INTERVAL_S`` seconds for data files the write stage has committed (their
Ray Data checkpoint is committed: the file is complete and will never be written again,
``write.committed_files``) and logs the new ones with ``rubrix.log_output``, exactly as ``zs-ray log``
would: every chunk asks the server which ids it holds before sending, so nothing is sent twice and no
person's annotation is touched, also across kills and re-runs. Its ledger lives in the work directory's
``data/_rubrix/`` and moves into ``--output`` with the files, where the final pass (``pipeline.annotate``,
or a later ``zs-ray log``) finds every id logged here already acknowledged.

A multi-language output is logged as one annotation dataset per config (``log_run``): the labels differ
per language. Each is named ``<--rubrix-dataset>-<config>``; a single-config run keeps the given name.
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from dataclasses import dataclass, replace
from typing import Optional

import pyarrow.dataset as pads

from zs_ray.output import ID_COLUMN, Output, open_output
from zs_ray.servers import LogReport, log_output
from zs_ray.servers.config import SendConfig, dataset_names
from zs_ray.stages.base import TEXT
from zs_ray.stages.write import OutputTarget, committed_files

log = logging.getLogger(__name__)
NEEDS = (ID_COLUMN, "labels", "scores", TEXT)  # read back from the committed files (``servers.ingest``)
MAKES = ()  # records on the server
INTERVAL_S = 5.0


@dataclass
class LogReports:
    """What logging a multi-language output did: one ``LogReport`` per config's dataset."""

    reports: list[LogReport]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def errors(self) -> list[str]:
        return [e for r in self.reports for e in r.errors]

    def summary(self) -> str:
        return "\n".join(r.summary() for r in self.reports)


def log_run(output: "str | os.PathLike | Output", rubrix: SendConfig) -> "LogReport | LogReports":
    """Log an output (or the committed files of a running job): to ``rubrix.rubrix_dataset``, or, for several
    configs, each config's rows with its own labels and agent to its own dataset (``dataset_names``)."""
    out = output if isinstance(output, Output) else open_output(str(output))
    configs = out.configs
    if len(configs) <= 1:
        return log_output(out, rubrix)
    names = dataset_names(rubrix.rubrix_dataset, configs)
    return LogReports([log_output(out.for_config(c), replace(rubrix, rubrix_dataset=names[c])) for c in configs])


class LiveLog:
    """``start()`` before the write, ``stop()`` once it is done (before the files move): the logging thread
    makes a last pass over what is committed and ends."""

    def __init__(self, target: OutputTarget, rubrix: SendConfig, manifest: dict, interval_s: float = INTERVAL_S):
        self.target, self.rubrix, self.manifest, self.interval_s = target, rubrix, manifest, interval_s
        self.logged: set[str] = set()
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._last_pass = True
        self._thread = threading.Thread(target=self._run, name="zs-ray-live-log", daemon=True)

    def start(self) -> "LiveLog":
        self._thread.start()
        return self

    def stop(self, last_pass: bool = True) -> None:
        """End the thread, after a last pass over what is committed (not when the job failed or stopped:
        the next run logs the rest)."""
        self._last_pass = last_pass
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and not self.error:
            self._log_new_files()
        if self._last_pass and not self.error:
            self._log_new_files()

    def _log_new_files(self) -> None:
        new = [f for f in committed_files(self.target) if f not in self.logged]
        if not new:
            return
        fs = self.target.fs
        data = posixpath.join(self.target.partial, "data")
        # The job's files so far as an Output: the final output's URI (an object store's ledger is named by
        # it), the work directory's data/ as its path (a local ledger goes to data/_rubrix/ and moves with it).
        files = Output(self.target.uri, fs, data, self.manifest, pads.dataset(new, filesystem=fs, format="parquet"))
        try:
            report = log_run(files, self.rubrix)
        except Exception as exc:  # noqa: BLE001 - logging must never stop the predictions; the final pass reports
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("logging while predicting stopped (%s); the rest is logged at the end", self.error)
            return
        self.logged.update(new)
        if not report.ok:
            self.error = "; ".join(report.errors)
