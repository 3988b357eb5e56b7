#!/usr/bin/env bash
# The test command: set-up, build, then every test (C++ unit tests, CLI smoke tests, Python
# tests, the find_package consumer). GPU tests skip where no CUDA device is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/build.sh | tail -n 1)
ctest --test-dir build --output-on-failure -j "$(nproc)"
