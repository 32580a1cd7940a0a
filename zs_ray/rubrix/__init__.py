"""The old name of ``zs_ray.servers`` (it spoke Rubrix 0.x, Argilla 1.x and 2.x under one generation's name),
kept so that existing imports work: ``from zs_ray.rubrix import RubrixConfig, log_output, preflight, pull``
and ``zs_ray.rubrix.<module>`` (the same module objects as ``zs_ray.servers.<module>``). New code imports
``zs_ray.servers`` and ``zs_ray.workflow.config.RubrixConfig``; nothing inside zs_ray imports this package.
"""

import importlib
import sys

from zs_ray.servers import LogReport, PullReport, SendConfig, ServerConfig, connect, log_output, preflight, pull
from zs_ray.workflow.config import RubrixConfig

_MODULES = ("argilla2", "argilla2_pull", "client", "connect", "ingest", "ledger", "pull", "records", "transport", "v1")
for _name in _MODULES:  # zs_ray.rubrix.client is zs_ray.servers.client: one module, patched or read alike
    _module = importlib.import_module(f"zs_ray.servers.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    if _name not in ("connect", "pull"):  # those two names are the functions, as before
        globals()[_name] = _module
del _name, _module

from zs_ray.rubrix import config  # noqa: E402  (servers.config plus RubrixConfig, as before)

__all__ = ["RubrixConfig", "SendConfig", "ServerConfig", "LogReport", "PullReport", "connect", "log_output",
           "preflight", "pull"]
