#!/usr/bin/env bash
# The main job: set-up, build, then `cppmega bench` on the default device (the GPU if there is
# one, else the CPU reference), printing a table and writing a receipt; on a GPU with torch,
# also the torch-peer bench into a second receipt. Arguments go to `cppmega bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/build.sh | tail -n 1)
out=${CPPMEGA_RECEIPT_DIR:-build/receipts}
mkdir -p "$out"
build/cli/cppmega bench --out "$out" "$@"
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  PYTHONPATH=build/python "$PY" -m cppmega.bench --out "$out"
fi
