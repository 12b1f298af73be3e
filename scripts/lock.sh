#!/usr/bin/env bash
# Re-resolves requirements/requirements.in into the fully pinned lock (needs `uv` on PATH).
set -euo pipefail
cd "$(dirname "$0")/../requirements"
uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
  --custom-compile-command "scripts/lock.sh" -o requirements.lock.txt
