"""argparse glue for the Rubrix side: connection flags and the ``log`` and ``pull`` commands.

The main CLI calls ``add_connection_arguments`` (on ``annotate``), ``config_from_args`` and
``register_commands``.
"""

from __future__ import annotations

import argparse
import sys

from zs_ray.rubrix.config import RubrixConfig, parse_tags


def add_connection_arguments(parser: argparse.ArgumentParser, *, dataset_required: bool = False,
                             sending: bool = True) -> None:
    """Add ``--rubrix-*`` flags. Connection values default to env vars, then rb.init's defaults."""
    g = parser.add_argument_group("Rubrix / Argilla 1.x")
    g.add_argument("--rubrix-dataset", required=dataset_required,
                   help="dataset name (lowercase letters, digits, - and _)")
    g.add_argument("--rubrix-api-url", help="server URL (env RUBRIX_API_URL; http://localhost:6900)")
    g.add_argument("--rubrix-api-key",
                   help="API key (env RUBRIX_API_KEY, preferred: flags are visible to `ps`; "
                        "default rubrix.apikey)")
    g.add_argument("--rubrix-workspace", help="workspace (env RUBRIX_WORKSPACE)")
    g.add_argument("--rubrix-no-verify-tls", action="store_true",
                   help="do not verify the server's TLS certificate")
    g.add_argument("--rubrix-timeout", type=float, help="seconds per HTTP request (default 60)")
    g.add_argument("--rubrix-retries", type=int,
                   help="retries after a 5xx/transport error, with backoff (default 5)")
    if sending:
        g.add_argument("--rubrix-tags", action="append", metavar="KEY=VALUE",
                       help="dataset tag, repeatable (default tags=data-annotation)")
        g.add_argument("--chunk-size", type=int, help="records per bulk request (default 500)")
        g.add_argument("--chunk-bytes", type=int, help="most bytes per bulk request (default 900000)")
        g.add_argument("--senders", type=int, help="concurrent bulk requests (default 4)")
        g.add_argument("--rubrix-ledger", help="acknowledgement ledger file "
                       "(default <input>/_rubrix/<dataset>-<hash>.ledger.jsonl)")
        g.add_argument("--rubrix-metadata-fields",
                       help="comma-separated source columns to log as metadata "
                            "(default: every source column with values <= 128 chars)")
        g.add_argument("--rubrix-agent", help="prediction agent (default: the model name)")


def config_from_args(args: argparse.Namespace) -> RubrixConfig | None:
    """The RubrixConfig the flags and env describe, validated; None without --rubrix-dataset."""
    if not getattr(args, "rubrix_dataset", None):
        return None
    fields = getattr(args, "rubrix_metadata_fields", None)
    flags = {
        "api_url": args.rubrix_api_url,
        "api_key": args.rubrix_api_key,
        "workspace": args.rubrix_workspace,
        "timeout_s": args.rubrix_timeout,
        "retries": args.rubrix_retries,
        "tags": parse_tags(getattr(args, "rubrix_tags", None)),
        "chunk_size": getattr(args, "chunk_size", None),
        "chunk_bytes": getattr(args, "chunk_bytes", None),
        "senders": getattr(args, "senders", None),
        "ledger_path": getattr(args, "rubrix_ledger", None),
        "metadata_fields": [f.strip() for f in fields.split(",") if f.strip()] if fields else None,
        "agent": getattr(args, "rubrix_agent", None),
    }
    if args.rubrix_no_verify_tls:
        flags["verify_tls"] = False
    return RubrixConfig.from_sources(args.rubrix_dataset, **flags).validate()


def cmd_log(args: argparse.Namespace) -> int:
    from zs_ray.rubrix.ingest import log_output

    return report_result(log_output(args.input, config_from_args(args)))


def report_result(report) -> int:
    """Print a LogReport (summary, then each undelivered part); the exit code: 1 if anything failed."""
    print(report.summary(), flush=True)
    for err in report.errors:
        print(f"zs-ray: error: {err}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_pull(args: argparse.Namespace) -> int:
    from zs_ray.rubrix.pull import pull

    query = {"status": args.status} if args.status else None
    print(pull(config_from_args(args), args.output, query=query).summary())
    return 0


def register_commands(subparsers) -> None:
    """Add ``log`` and ``pull`` subcommands; each sets ``func(args) -> exit code``."""
    p = subparsers.add_parser("log", help="log an annotation-job output to Rubrix (resumable)")
    p.add_argument("--input", required=True, help="the annotation job's --output directory")
    add_connection_arguments(p, dataset_required=True)
    p.set_defaults(func=cmd_log)

    p = subparsers.add_parser("pull", help="read a Rubrix dataset's records and annotations")
    p.add_argument("--output", required=True, help="Parquet file to write")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="only records with this status (Default, Edited, Discarded, Validated)")
    add_connection_arguments(p, dataset_required=True, sending=False)
    p.set_defaults(func=cmd_pull)
