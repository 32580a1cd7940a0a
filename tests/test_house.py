"""The house rules of docs/layout.md, kept by the suite: no import cycle among zs_ray's modules, no module over
350 lines, the layers (the server package imports nothing of the workflow, training or the job; a settings module
imports no command; only the CLI lists every command's settings), and the stages' columns. The layer tests read
the code (``ast`` or ``../shared/tools/import_cycles.py``), import nothing of zs_ray and fail naming what they
found."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "zs_ray"
CYCLES_TOOL = ROOT.parent / "shared" / "tools" / "import_cycles.py"  # CI clones ../shared beside the repo
MAX_LINES = 350

#: The modules that run a command (what the CLI's runners call, and what they run): a settings module imports none.
COMMAND_MODULES = {
    "zs_ray.cli", "zs_ray.pipeline", "zs_ray.dryrun", "zs_ray.stages.log",
    "zs_ray.servers.ingest", "zs_ray.servers.pull",
    "zs_ray.workflow.evaluate", "zs_ray.workflow.report", "zs_ray.workflow.thresholds", "zs_ray.workflow.bulk",
    "zs_ray.workflow.audit", "zs_ray.workflow.tune", "zs_ray.workflow.tune_score", "zs_ray.workflow.suggest",
    "zs_ray.train", "zs_ray.train.run", "zs_ray.train.loop", "zs_ray.train.data",
    "zs_ray.workflow.agreement", "zs_ray.workflow.agreement_report", "zs_ray.servers.review",
}
#: What the server package must not import: the layers above it (and its old alias, which imports it).
ABOVE_SERVERS = ("zs_ray.workflow", "zs_ray.train", "zs_ray.pipeline", "zs_ray.rubrix", "zs_ray.stages",
                 "zs_ray.dryrun", "zs_ray.cli", "zs_ray.config")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _imports(path: pathlib.Path) -> set[str]:
    """Every module name an import in ``path`` may load, at module level or inside a function: for
    ``from a.b import c``, both ``a.b`` and ``a.b.c``; and the packages above them that it runs."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    # Importing a.b.c from outside a.b also runs a.b's __init__ (as import_cycles.py counts it).
    parents = {".".join(n.split(".")[:i]) for n in found for i in range(2, n.count(".") + 1)}
    return found | {p for p in parents if not (package == p or package.startswith(p + "."))}


def _is_settings(path: pathlib.Path) -> bool:
    return path.name == "config.py" or path.name.endswith("_config.py")


def test_no_import_cycle_among_the_modules():
    assert CYCLES_TOOL.is_file(), f"{CYCLES_TOOL} is missing: clone the shared repository beside this one (../shared)"
    run = subprocess.run([sys.executable, str(CYCLES_TOOL), "zs_ray"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"import cycle(s) among zs_ray's modules:\n{run.stdout}{run.stderr}"


def test_no_module_over_350_lines():
    over = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by responsibility): " + ", ".join(
        f"{p} ({n})" for p, n in sorted(over.items()))


def test_the_command_list_names_real_modules():
    """A renamed command module must be renamed here too, or the settings rule below would check nothing."""
    assert not COMMAND_MODULES - set(_modules()), sorted(COMMAND_MODULES - set(_modules()))


def test_the_server_package_imports_no_layer_above_it():
    """zs_ray/servers/ never imports the workflow, training, the job or its old alias (the round-1 sample, the
    round-2 queue and --log-only come in through the settings' ``*_rule_for`` / ``log_only_for``)."""
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith(ABOVE_SERVERS))
           for p in (PACKAGE / "servers").rglob("*.py")}
    bad = {p: names for p, names in bad.items() if names}
    assert not bad, f"zs_ray/servers/ imports a layer above it: {bad}"


def test_the_team_package_imports_only_the_error():
    """zs_ray/team/ (agreement, consensus) is usable alone: of zs-ray it imports only ``zs_ray.errors`` (the settings'
    one-line errors), never a server, the workflow, the engine or Ray."""
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                            if n.startswith(("zs_ray.", "ray")) and not n.startswith(("zs_ray.team",
                                                                                                     "zs_ray.errors")))
           for p in (PACKAGE / "team").rglob("*.py")}
    bad = {p: names for p, names in bad.items() if names}
    assert not bad, f"zs_ray/team/ imports beyond itself: {bad}"


def test_settings_import_no_command():
    """A settings module (``config.py``, ``*_config.py``) imports other settings and the checks, never a command
    module: else the CLI's table of every command's settings pulls the commands in, and they import it back."""
    settings = [p for p in _modules().values() if _is_settings(p)]
    assert PACKAGE / "config.py" in settings and PACKAGE / "workflow" / "config.py" in settings
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & COMMAND_MODULES) for p in settings}
    bad = {p: names for p, names in bad.items() if names}
    assert not bad, f"settings modules import command modules: {bad}"


def test_only_the_cli_lists_every_command():
    """``zs_ray.cli.COMMANDS`` lists every command's settings; nothing below the CLI imports it."""
    bad = [str(p.relative_to(ROOT)) for name, p in _modules().items()
           if name not in ("zs_ray.cli", "zs_ray.__main__") and "zs_ray.cli" in _imports(p)]
    assert not bad, f"modules below the CLI import zs_ray.cli (the table of every command): {bad}"


def test_each_stage_needs_what_a_stage_before_it_makes():
    """``zs_ray/stages/``: the job's five stages, in order, each declaring the columns it needs and makes."""
    import importlib

    from zs_ray.stages import ORDER
    from zs_ray.stages.base import check_columns

    assert ORDER == ("read", "tokenize", "model", "write", "log")
    check_columns([importlib.import_module(f"zs_ray.stages.{name}") for name in ORDER])
