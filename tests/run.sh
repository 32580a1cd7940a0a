#!/usr/bin/env bash
# Set up a fresh virtual environment and run zs-ray's test suite:   bash tests/run.sh [pytest args]
# torch is installed first at 2.13.0 (the CPU build on CI machines), so the `torch>=2.4`
# requirement adds nothing and no multi-GB CUDA build is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
# The report test opens report.html in a real headless Chromium (and fails, never skips, without one):
# install Debian's chromium when none is there and we may (root, apt-get present).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null 2>&1 || echo "tests: could not install chromium; the report test will fail" >&2
  else
    echo "tests: no chromium and no root to install it; the report test will fail" >&2
  fi
fi
# The argilla-server 2.8 tests run on PostgreSQL too (tests/argilla2_server/postgres.py; they fail, never skip,
# without it): install Debian's postgresql when no initdb is there and we may.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null && [ -z "${ZS_RAY_PG_BIN:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } \
      >/dev/null 2>&1 || echo "tests: could not install postgresql; the PostgreSQL tests will fail" >&2
  else
    echo "tests: no PostgreSQL (initdb) and no root to install it; the PostgreSQL tests will fail" >&2
  fi
fi
venv="${ZS_RAY_VENV:-.venv}"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
# One process by default. ZS_RAY_TEST_WORKERS=2 runs the test files on two pytest-xdist workers (--dist loadfile):
# 23 min 32 s against 28 min 48 s on a 2-core AMD EPYC, but there the autoscaler test's `ray start` once timed
# out beside the other worker's load, so CI keeps one process (benchmarks/results-suite.md).
workers="${ZS_RAY_TEST_WORKERS:-0}"
if [ "$workers" != 0 ] && [[ " $* " != *" -n "* ]]; then
  set -- -n "$workers" --dist loadfile "$@"
fi
exec python -m pytest "$@"
