"""``--help`` as argparse users expect: the flags as people type them (``--gold-column``; the underscore spelling
still accepted, not shown) and ``(default: X)`` only where a flag has a default."""

import pathlib
import re
import subprocess
import sys

import pytest

from zs_ray.cli import COMMANDS, build_parser, parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNDERSCORE_FLAG = re.compile(r"(?<![\w-])--[a-z0-9-]*_[a-z0-9_-]*")


def help_of(command: str) -> str:
    run = subprocess.run([sys.executable, "-m", "zs_ray.cli", command, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def flag_help(text: str, flag: str) -> str:
    """The help lines of one flag: from its line to the next flag's."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {flag} ") or line == f"  {flag}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  -")), len(lines))
    return " ".join(line.strip() for line in lines[start:end])


def check_help(text: str) -> None:
    usage = text.split("\n\n", 1)[0]
    assert usage.startswith("usage: zs-ray ")
    assert not UNDERSCORE_FLAG.findall(text), f"underscore spellings shown: {UNDERSCORE_FLAG.findall(text)}"
    assert "(default: )" not in text and "(default: None)" not in text and "(default: [])" not in text


@pytest.mark.parametrize("command, flag, shown, default", [
    ("tune", "--gold-column", "--gold-column GOLD_COLUMN", None),
    ("tune", "--bootstrap", "--bootstrap BOOTSTRAP", "1000"),
    ("tune", "--aggregate", "--aggregate AGGREGATE [AGGREGATE ...]", "max mean"),
    ("annotate", "--text-field", "--text-field TEXT_FIELD", "summary"),
    ("annotate", "--hypothesis-template", "--hypothesis-template HYPOTHESIS_TEMPLATE", None),
    ("annotate", "--rubrix-dataset", "--rubrix-dataset RUBRIX_DATASET", None),
])
def test_help_shows_dashes_and_only_real_defaults(command, flag, shown, default):
    text = help_of(command)
    check_help(text)
    usage = text.split("\n\n", 1)[0]
    assert f"[{shown}]" in " ".join(usage.split()), usage
    block = flag_help(text, flag)
    assert block.startswith(shown + " ") or block == shown, block
    if default is None:
        assert "(default" not in block, block
    else:
        assert f"(default: {default})" in block, block


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_shows_dashes(command):
    check_help(build_parser(command).format_help())


def test_the_underscore_spellings_still_parse():
    base = ["--input", "round1.parquet", "--output", "out", "--label-map", "map.yaml"]
    for args in (["--gold_column", "topic"], ["--gold-column", "topic"], ["--gold_column=topic"]):
        (tune,) = parse("tune", base + args)
        assert tune.gold_column == "topic" and tune.label_map == "map.yaml"
    (settings, _rubrix) = parse("annotate", ["--output", "o", "--text_field", "text", "--multi_label"])
    assert settings.text_field == "text" and settings.multi_label is True
    (bulk, _server) = parse("bulk-label", ["--threshold", "a=0.9", "--no_dry_run"])
    assert bulk.dry_run is False
