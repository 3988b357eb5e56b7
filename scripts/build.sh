#!/usr/bin/env bash
# Configures and builds cppmega (library, CLI, tests, Python extension) into build/.
# CUDA backends are built for sm_90a whenever nvcc is found (CI included). Extra arguments go
# to the CMake configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/setup.sh | tail -n 1)
export PATH="/usr/local/cuda/bin:$PATH"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake --preset default -DPython_EXECUTABLE="$PY" "${launcher[@]}" "$@" >/dev/null
cmake --build build -j "$(nproc)"
echo "$PY"
