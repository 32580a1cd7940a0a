"""``zs-ray``: the command line.

``zs-ray annotate`` runs the annotation job (flags generated from
``AnnotateConfig``); ``zs-ray log`` and ``zs-ray pull`` talk to Rubrix. A
``ZsRayError`` is printed as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from zs_ray.config import add_config_arguments, config_from_args
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import cli as rubrix_cli


def _annotate(args: argparse.Namespace) -> int:
    from zs_ray.pipeline import annotate

    config = config_from_args(args, rubrix=rubrix_cli.config_from_args(args))
    summary = annotate(config)
    print(summary, flush=True)
    if summary.rubrix is not None:
        return rubrix_cli.report_result(summary.rubrix)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs-ray", description="Zero-shot pre-annotation of text at cluster scale.")
    commands = parser.add_subparsers(dest="command", required=True)
    annotate = commands.add_parser(
        "annotate", help="classify a dataset split with a zero-shot NLI model and write Parquet",
        description="Classify a dataset split with a zero-shot NLI model on Ray; write Parquet "
                    "(and log to Rubrix with --rubrix-dataset).")
    add_config_arguments(annotate)
    rubrix_cli.add_connection_arguments(annotate)
    annotate.set_defaults(func=_annotate)
    rubrix_cli.register_commands(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="zs-ray: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except ZsRayError as exc:
        print(f"zs-ray: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("zs-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
