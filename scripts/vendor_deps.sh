#!/usr/bin/env bash
# Copies the header-only and test dependencies from this machine's Debian packages into .deps/
# (ignored by git) so they can travel to a machine without a package registry (the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/include
cp -r /usr/include/CLI .deps/include/
cp -r /usr/include/nlohmann .deps/include/
rm -rf .deps/googletest && cp -r /usr/src/googletest .deps/googletest
du -sh .deps
