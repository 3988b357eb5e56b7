#!/usr/bin/env bash
# One call on the benchmark GPU: build, run every test, run the GPU tests under
# compute-sanitizer (memcheck, racecheck), then the benches. Logs and receipts go to $OUT.
# Usage: scripts/device_run.sh [build] [test] [sanitize] [bench] [pybench]   (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test sanitize bench pybench)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
PY=$(command -v python3)
export PATH=/usr/local/cuda/bin:$PATH
# The image's default CXX (/opt/gcc) links libstdc++ statically into the Python module, which
# then crashes on exceptions; the system compiler links it shared.
[ -x /usr/bin/g++ ] && export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$OUT/gpu.txt"
status=0
if has build; then
  cmake -S . -B build-dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPPMEGA_BUILD_PYTHON=ON -DPython_EXECUTABLE="$PY" \
    >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build build-dev -j 16 >"$OUT/build.log" 2>&1 || { grep -E "error|Error" -A5 "$OUT/build.log" | head -60; exit 1; }
  echo "build ok"
fi
if has test; then
  ctest --test-dir build-dev --output-on-failure -j 4 >"$OUT/ctest.log" 2>&1 || status=1
  grep -E "tests passed|tests failed|Failed|\*\*\*|SKIPPED" "$OUT/ctest.log" | head -40
fi
if has sanitize; then
  # Our kernels only (the ceilings test times cuBLAS, which the sanitizers slow 100x); the large
  # randomized sweeps run without the sanitizer. A step budget keeps the call inside its limit.
  mem_filter=${CPPMEGA_MEMCHECK_FILTER:-'*Cuda*-Ceilings.*:*Randomized*:*RandomShapes*:*EveryConfiguration*:*IssueShapes*:*BitPatterns*'}
  race_filter=${CPPMEGA_RACECHECK_FILTER:-'*UserStream*:Fp8Cuda.Pack*:*Empty*:*NonFinite*:*Deterministic*:*Adversarial*'}
  budget=${CPPMEGA_SANITIZE_BUDGET:-300}
  start=$SECONDS
  for t in build-dev/tests/cpp/test_*; do
    [ -x "$t" ] || continue
    for tool in memcheck racecheck; do
      filter=$mem_filter; [ "$tool" = racecheck ] && filter=$race_filter
      "$t" --gtest_list_tests --gtest_filter="$filter" | grep -q '^  ' || continue  # no GPU test selected
      left=$((budget - (SECONDS - start)))
      if [ $left -le 10 ]; then echo "sanitize $(basename "$t") $tool: skipped (step budget spent)"; status=1; continue; fi
      log="$OUT/sanitize-$(basename "$t")-$tool.log"
      timeout "$left" compute-sanitizer --tool "$tool" --error-exitcode 9 "$t" --gtest_filter="$filter" >"$log" 2>&1
      rc=$?
      echo "sanitize $(basename "$t") $tool rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$log" | tr '\n' ' ')"
      [ $rc -eq 0 ] || status=1
    done
  done
fi
if has bench; then
  build-dev/cli/cppmega bench --out "$OUT" ${CPPMEGA_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" || status=1
fi
if has pybench; then
  PYTHONPATH=build-dev/python PYTHONUNBUFFERED=1 "$PY" -m cppmega.bench --out "$OUT" ${CPPMEGA_PYBENCH_ARGS:-} 2>&1 | tee "$OUT/pybench.log" || status=1
fi
exit $status
