"""Where zs-ray keeps, per user, what it measured or built once so that it need not again: one directory,
``$ZS_RAY_CACHE``, else ``$XDG_CACHE_HOME/zs-ray``, else ``~/.cache/zs-ray``. It holds

- ``precision.json``: ``--precision auto``'s choice on a CPU, per model and machine (``engine/calibrate.py``);
- ``onnx/``: the ONNX Runtime int8 models of ``--precision onnx-int8`` (``engine/onnx.py``);
- ``calibration.json``: the dry run's measured speed per model and machine (``dryrun.py``);
- ``log-rates.json``: each annotation server's logging rate (``servers/rate.py``; no secret in it).

Everything there may be deleted at any time; it is measured or built again. The ledgers of outputs on object
stores are not cache (they make logging exactly once) and stay in ``$XDG_CACHE_HOME/zs-ray/ledgers``
whatever ``$ZS_RAY_CACHE`` says (``servers/ledger.py``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """zs-ray's cache directory (not created here)."""
    root = os.environ.get("ZS_RAY_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zs-ray"
