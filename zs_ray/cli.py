"""``zs-ray``: the command line, generated from the settings dataclasses (``COMMANDS``: each
command's, from ``zs_ray.config`` and the settings modules beside the commands).

``zs-ray annotate`` runs the job; ``zs-ray log`` logs (or finishes logging) an output; ``zs-ray pull``
reads annotations back. Flags come from the dataclasses through transformers' ``HfArgumentParser``;
``--config-file FILE`` (YAML or JSON, the flags' names as keys) sets any of them, and flags override it.

Exit status: 0 done; 1 the predictions were written (or logging ran) but some records did not reach the
server; 2 a problem the user can fix (one ``zs-ray: error: ...`` line, no traceback, nothing written);
130 / 143 stopped by Ctrl-C / SIGTERM (one line; the unfinished run is kept, hidden, for the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Optional, Sequence

from transformers import HfArgumentParser

from zs_ray.cluster import Stopped, stop_on_sigterm
from zs_ray.config import AnnotateConfig, LogConfig, PullConfig
from zs_ray.errors import ZsRayError
from zs_ray.servers.config import ServerConfig
from zs_ray.train.config import TrainConfig
from zs_ray.workflow.agreement_config import AgreementConfig
from zs_ray.workflow.config import AuditConfig, BulkLabelConfig, EvaluateConfig, RubrixConfig, ThresholdsConfig
from zs_ray.workflow.tune_config import TuneConfig

#: Each command's settings classes, in the order the CLI builds them: the one table that lists them all
#: (nothing below the CLI imports it).
COMMANDS = {
    "annotate": (AnnotateConfig, RubrixConfig),
    "log": (LogConfig, RubrixConfig),
    "pull": (PullConfig, ServerConfig),
    # The annotation workflow (zs_ray/workflow/config.py, zs_ray/workflow/tune_config.py).
    "evaluate": (EvaluateConfig,),
    "thresholds": (ThresholdsConfig,),
    "bulk-label": (BulkLabelConfig, ServerConfig),
    "audit": (AuditConfig, ServerConfig),
    "tune": (TuneConfig,),
    "train": (TrainConfig,),
    "agreement": (AgreementConfig, ServerConfig),
}

DESCRIPTIONS = {
    "annotate": "classify a dataset split with a zero-shot NLI model on Ray; write Parquet (and log it "
                "with --rubrix-dataset)",
    "log": "log an annotation-job output to Rubrix / Argilla (1.x or 2.x), exactly once (resumable)",
    "pull": "read a dataset's records and annotations back from the server into one Parquet file",
    "evaluate": "score the predictions against human (pulled) or gold labels: metrics.json + report.html",
    "thresholds": "per label, the lowest score threshold whose precision reaches a target (lower bound)",
    "bulk-label": "annotate the records above per-label thresholds on the server (dry run; --apply, --undo)",
    "audit": "the people's answers on bulk-label's audit sample: realised precision per label (--undo-failing)",
    "tune": "rank hypothesis templates and label phrasings by macro-F1 on labelled records; write the winner as presets",
    "train": "fine-tune a student classifier on the human labels with Ray Train; test it against the zero-shot "
             "predictions",
    "agreement": "a team's agreement (alpha, kappa, per annotator, confused labels), its unresolved records, and "
                 "--review N: the most disagreed records marked on the server",
}


class _Parser(HfArgumentParser):
    """An ``HfArgumentParser`` whose errors are one ``ZsRayError`` line rather than usage + exit."""

    def error(self, message: str):
        raise ZsRayError(message)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` only where a flag has one: not for None, an empty string or list, a switch without a
    value (``--no-dry-run``), or a help text that already says its default in its own words; a list as its
    values, as they are typed (``--aggregate max mean``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS
                or (isinstance(action.default, (str, list, tuple)) and not action.default)
                or "default:" in text.lower() or "%(default)" in text):
            return text
        value = action.default
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        return f"{text} (default: {shown.replace('%', '%%')})"


def build_parser(command: str) -> HfArgumentParser:
    parser = _Parser(COMMANDS[command], prog=f"zs-ray {command}", description=DESCRIPTIONS[command],
                     allow_abbrev=False, formatter_class=_Help)
    parser.add_argument("--config-file", help="YAML or JSON file of settings, keyed by the flags' names "
                                              "(text_field or text-field); flags given here override it")
    for action in parser._actions:  # the flags as people type them: --gold-column, not --gold_column
        dashed = [o for o in action.option_strings if not (o.startswith("--") and "_" in o)]
        if dashed and len(dashed) < len(action.option_strings):
            # Shown in usage and --help: the dashed spelling; the underscore one stays in the parser's table of
            # option strings (``_option_string_actions``), so it is still accepted.
            action.option_strings = dashed
    return parser


def load_config_file(path: str, known: set[str]) -> dict:
    """The settings of a YAML/JSON file, keys normalised to field names; unknown keys refused."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh) if path.endswith(".json") else yaml.safe_load(fh)
    except OSError as exc:
        raise ZsRayError(f"cannot read --config-file {path}: {exc.strerror}") from None
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ZsRayError(f"--config-file {path} is not valid YAML/JSON: {first}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ZsRayError(f"--config-file {path} must hold a mapping of settings, not {type(values).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ZsRayError(f"--config-file {path}: unknown setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    return values


def parse(command: str, argv: Sequence[str]) -> tuple:
    """The settings objects of ``command`` from ``--config-file`` and the flags (flags win)."""
    parser = build_parser(command)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config-file")
    known, _ = pre.parse_known_args(argv)
    if known.config_file:
        fields = {a.dest for a in parser._actions if a.dest not in ("help", "config_file")}
        parser.set_defaults(**load_config_file(known.config_file, fields))
    *settings, unknown = parser.parse_args_into_dataclasses(list(argv), look_for_args_file=False,
                                                           return_remaining_strings=True)
    if unknown:  # the flags only: a mistyped --rubrix-api-key's value is a secret
        flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")] or [f"{len(unknown)} value(s)"]
        raise ZsRayError(f"unrecognized arguments: {' '.join(flags)} (see zs-ray {command} --help)")
    return tuple(settings[:len(COMMANDS[command])])


SECRET_FLAGS = ("--rubrix-api-key", "--rubrix-extra-headers", "--rubrix_api_key", "--rubrix_extra_headers")


def argv_secrets(argv: Sequence[str]) -> list[str]:
    """The values of the secret flags on a command line (kept out of every error line)."""
    found = []
    for i, arg in enumerate(argv):
        for flag in SECRET_FLAGS:
            if arg == flag and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                found.append(arg.split("=", 1)[1])
    return [s for s in found if s]


def run_annotate(config, rubrix) -> int:
    from zs_ray.pipeline import annotate

    summary = annotate(config, rubrix if rubrix.enabled else None)
    print(summary, flush=True)
    if config.dry_run:
        return 0
    if summary.log_error:
        print(f"zs-ray: error: logging to {rubrix.rubrix_dataset} failed: {summary.log_error}; the predictions "
              f"are complete in {config.output}: `zs-ray log --input {config.output}` with the same "
              "--rubrix-* settings finishes the logging", file=sys.stderr, flush=True)
        return 1
    return 0 if summary.log is None else report_log(summary.log)


def run_log(settings, rubrix) -> int:
    from zs_ray.stages.log import log_run

    if settings.update_suggestions:
        from zs_ray.workflow.suggest import update_run

        reports = update_run(settings.input, rubrix)
        for r in reports:
            print(r.summary(), flush=True)
        return 0 if all(r.ok for r in reports) else 1
    return report_log(log_run(settings.input, rubrix))


def run_pull(settings, server) -> int:
    from zs_ray.servers import pull

    query = {"status": settings.status} if settings.status else None
    print(pull(server, settings.output, query=query, reviewers=settings.reviewers).summary(), flush=True)
    return 0


def report_log(report) -> int:
    """Print a LogReport (summary, then each undelivered part); the exit code: 1 if anything failed."""
    print(report.summary(), flush=True)
    for err in report.errors:
        print(f"zs-ray: error: {err}", file=sys.stderr)
    return 0 if report.ok else 1


def run_evaluate(settings) -> int:
    from zs_ray.workflow.evaluate import evaluate, summary

    print(summary(evaluate(settings), settings.output), flush=True)
    return 0


def run_thresholds(settings) -> int:
    from zs_ray.workflow.thresholds import table, thresholds

    result = thresholds(settings)
    if settings.output == "-":
        print(json.dumps(result, indent=2, ensure_ascii=False), flush=True)
    else:
        print(table(result, settings.output), flush=True)
    return 0


def run_bulk_label(settings, server) -> int:
    from zs_ray.workflow.bulk import bulk_label

    report = bulk_label(settings, server)
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


def run_audit(settings, server) -> int:
    from zs_ray.workflow.audit import run_audit as audit, table

    result = audit(settings, server)
    if settings.output == "-":
        print(json.dumps(result, indent=2, ensure_ascii=False), flush=True)
    else:
        print(table(result, settings.output), flush=True)
    return 1 if (result.get("undo_failing") or {}).get("not_restored") else 0


def run_tune(settings) -> int:
    from zs_ray.workflow.tune import table, tune

    print(table(tune(settings), settings.output), flush=True)
    return 0


def run_train(settings) -> int:
    from zs_ray.train import TrainFailed, train

    try:
        print(train(settings), flush=True)
    except TrainFailed as exc:
        print(f"zs-ray: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_agreement(settings, server) -> int:
    from zs_ray.workflow.agreement import agreement, summary

    print(summary(agreement(settings, server), settings.output), flush=True)
    return 0


RUNNERS = {"annotate": run_annotate, "log": run_log, "pull": run_pull, "evaluate": run_evaluate,
           "thresholds": run_thresholds, "bulk-label": run_bulk_label, "audit": run_audit, "tune": run_tune,
           "train": run_train, "agreement": run_agreement}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = f"usage: zs-ray {{{','.join(DESCRIPTIONS)}}} [--help] [flags]\n\n" + "\n".join(
            f"  {name:11} {text}" for name, text in DESCRIPTIONS.items())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"zs-ray: error: unknown command {argv[0]!r}: choose {', '.join(DESCRIPTIONS)}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="zs-ray: %(levelname)s: %(message)s")
    stop_on_sigterm()
    try:
        return RUNNERS[argv[0]](*parse(argv[0], argv[1:]))
    except ZsRayError as exc:
        from zs_ray.servers.transport import redact

        print(f"zs-ray: error: {redact(str(exc), argv_secrets(argv))}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as exc:
        stopped_by = "SIGTERM" if isinstance(exc, Stopped) else "Ctrl-C"
        resume = "; run the same command again to resume" if argv[0] in ("annotate", "train") else ""
        print(f"zs-ray: stopped by {stopped_by}{resume}", file=sys.stderr, flush=True)
        return 128 + (signal.SIGTERM if isinstance(exc, Stopped) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
