#!/usr/bin/env bash
# Set up a fresh virtual environment and run zs-ray's test suite:   bash tests/run.sh [pytest args]
# torch is installed first at 2.13.0 (the CPU build on CI machines), so the `torch>=2.4`
# requirement adds nothing and no multi-GB CUDA build is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ZS_RAY_VENV:-.venv}"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
exec python -m pytest "$@"
