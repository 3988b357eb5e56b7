#!/usr/bin/env bash
# Installs everything cppmega needs on a fresh Debian 12 machine (with or without a GPU):
# Debian packages (when apt-get is usable) and a project-local Python environment (.venv).
# On machines without a package registry (the benchmark GPU) it uses what is there, plus
# the copies under .deps/ that scripts/vendor_deps.sh makes. Idempotent; prints the Python
# interpreter to use on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(cmake ninja-build g++ git libgtest-dev libcli11-dev nlohmann-json3-dev python3-venv python3-dev
      python3-numpy python3-pytest python3-torch)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: cannot install ${missing[*]} (no apt-get, not root or no registry); using what is installed and .deps/" >&2
  fi
fi

# Python: a project-local venv over Debian's interpreter (it sees Debian's numpy, pytest and
# torch 1.13 CPU), with the build tools from PyPI. Where Debian's interpreter is absent (the GPU
# machine), the python3 on PATH is used as it is.
python_ok() { "$1" -c 'import nanobind, numpy, pytest' >/dev/null 2>&1; }
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, numpy' >/dev/null 2>&1; then
  if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
  fi
  if ! python_ok .venv/bin/python || ! .venv/bin/python -c 'import ml_dtypes, scikit_build_core' >/dev/null 2>&1; then
    echo "setup: installing Python build and test packages into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
  fi
  PY=$(pwd)/.venv/bin/python
else
  PY=$(command -v python3)
  python_ok "$PY" || echo "setup: warning: $PY lacks nanobind/numpy/pytest; the Python package will not build" >&2
fi
echo "$PY"
