#!/usr/bin/env bash
# Every benchmark, sized to finish within 8 minutes on one accelerator machine (an H100 /
# H200 GPU), each under its own time limit; the results JSON files go to OUT (default
# benchmarks/results/, named by device). Run from the repository root:
#
#     bash benchmarks/device.sh [OUT]
#
# JAXROBUST_BENCH_SMALL=1 shrinks every size to a smoke test (3.5 minutes for all four on
# a 2-core CPU); JAXROBUST_BENCH_ONLY="sweep scale" runs only those (the test suite runs
# these two small). A benchmark that fails or overruns its limit is reported and the
# others still run; the exit status is 1 if any did.
set -uo pipefail
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
small=${JAXROBUST_BENCH_SMALL:-0}
slug=$(python -c "from benchmarks.common import device_info, device_slug; print(device_slug(device_info()))")
failed=0

only=${JAXROBUST_BENCH_ONLY:-sweep kernels attribution scale}

bench() {  # bench LIMIT_S NAME ARGS...
  local limit=$1 name=$2
  shift 2
  case " $only " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name (at most ${limit} s)"
  local start=$SECONDS
  if ! timeout "$limit" python -m "benchmarks.$name" "$@" --out "$OUT/$slug-$name.json"; then
    echo "!! $name failed or ran past ${limit} s"
    failed=1
  fi
  echo "== $name: $((SECONDS - start)) s"
}

if [ "$small" = 1 ]; then
  bench 300 sweep --images 4 --ref-images 2 --size 32 --no-tuned
  bench 300 kernels --images 2 --size 32 --ref-images 1 --repeats 1 --radii 1 2 \
    --suite-images 1 --suite-ref-images 1
  bench 300 attribution --steps 4 --batches 2 --no-memory-run --no-xla-options
  bench 300 scale --quick --cases memory
else
  bench 100 sweep --images 256 --ref-images 16 --repeats 1
  bench 150 kernels --images 64 --ref-images 8 --suite-images 16 --suite-ref-images 4
  bench 100 attribution --no-xla-options
  bench 110 scale --cases memory imagenet
fi
exit $failed
