#!/usr/bin/env bash
# Creates .venv from the pinned lock without dependency resolution. Idempotent: a stamp file
# records the hash of the lock and setup.py, so a second call returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
STAMP="$VENV/.fmnist-setup-stamp"
want=$(cat requirements/requirements.lock.txt requirements/tfx-wheels.txt setup.py | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

echo "==> creating $VENV with $("$PYTHON" --version)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check uv==0.13.9
echo "==> installing the pinned lock (no resolution)"
# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (CI, containers) nothing would cache the
# .pyc files, and every start would compile pandas, pyarrow, TF's Python (~1 s more per command).
"$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" --no-deps --compile-bytecode \
  -r requirements/requirements.lock.txt
echo "==> installing tfx wheels (--no-deps)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python \
  -r requirements/tfx-wheels.txt
echo "==> installing the project"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "==> environment ready: $VENV"
