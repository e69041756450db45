#!/usr/bin/env bash
# make gpu-check: on a fresh GPU machine without network (torch + triton preinstalled in the
# system python3), in one command and within 9 minutes:
#   1. install fastgan in place and build its extension (a failed build does not stop the rest),
#   2. `fastgan doctor`,
#   3. every GPU-marked test (`pytest -m gpu -x`): op parity on CUDA, graph vs eager,
#   4. the quick benchmark matrix, written to $FASTGAN_RESULTS/<date>-<gpu>.json and .md,
# then print the markdown table last.
#
# Environment: FASTGAN_RESULTS (default bench/results), PYTHON (default python3),
# FASTGAN_GPU_CHECK_BUDGET_S (default 520 s for the whole script), FASTGAN_PYTEST_TIMEOUT_S (240).
# Files written to $FASTGAN_RESULTS: build.log, pytest-gpu.log, bench.log, <date>-<gpu>.json,
# <date>-<gpu>.md (five; the caller's own tee of this output makes six).
set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1 PIP_NO_INDEX=1

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
RESULTS=${FASTGAN_RESULTS:-bench/results}
BUDGET=${FASTGAN_GPU_CHECK_BUDGET_S:-520}
mkdir -p "$RESULTS"
# Import fastgan from this checkout whatever pip manages to do.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

elapsed() { echo $((SECONDS)); }
step() { echo; echo "=== gpu-check [$(elapsed) s] $*"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv,noheader 2>&1 | head -4
"$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| triton', triton.__version__, '| cuda', torch.version.cuda, '| GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" 2>&1

step "install + build the extension (log: $RESULTS/build.log)"
FASTGAN_REQUIRE_EXT=0 timeout 300 "$PY" -m pip install --no-build-isolation --no-deps -e . \
    >"$RESULTS/build.log" 2>&1
build_rc=$?
tail -n 15 "$RESULTS/build.log"
echo "build: exit $build_rc in $(elapsed) s"

step "fastgan doctor"
timeout 120 "$PY" -m fastgan doctor 2>&1
doctor_rc=$?

# The GPU tests get what is left after reserving time for the benchmark (at least 150 s).
left=$((BUDGET - $(elapsed)))
pt=${FASTGAN_PYTEST_TIMEOUT_S:-240}
if [ $((left - 150)) -lt "$pt" ]; then pt=$((left - 150)); fi
if [ "$pt" -lt 30 ]; then pt=30; fi
step "pytest -m gpu -x (timeout ${pt} s; log: $RESULTS/pytest-gpu.log)"
timeout "$pt" "$PY" -m pytest -m gpu -q -x -p no:cacheprovider >"$RESULTS/pytest-gpu.log" 2>&1
pytest_rc=$?
tail -n 25 "$RESULTS/pytest-gpu.log"
[ $pytest_rc -eq 124 ] && echo "pytest: TIMED OUT after ${pt} s"
echo "pytest: exit $pytest_rc at $(elapsed) s"

DATE=$(date -u +%Y-%m-%d)
SLUG=$("$PY" -c "from fastgan.benchmark import gpu_slug; print(gpu_slug())" 2>/dev/null || echo gpu)
JSON="$RESULTS/$DATE-$SLUG.json"
MD="$RESULTS/$DATE-$SLUG.md"
left=$((BUDGET - $(elapsed)))
bench_budget=$((left - 25))
if [ $bench_budget -lt 60 ]; then bench_budget=60; fi
step "fastgan bench --quick (budget ${bench_budget} s; progress: $RESULTS/bench.log)"
FASTGAN_BENCH_BUDGET_S=$bench_budget timeout $((bench_budget + 20)) \
    "$PY" -m fastgan bench --quick --json "$JSON" --md "$MD" >/dev/null 2>"$RESULTS/bench.log"
bench_rc=$?
tail -n 12 "$RESULTS/bench.log"
[ $bench_rc -eq 124 ] && echo "bench: TIMED OUT (partial results are in $JSON)"

step "done: build $build_rc, doctor $doctor_rc, pytest $pytest_rc, bench $bench_rc; $(elapsed) s in all"
echo "results: $JSON $MD"
echo
if [ -f "$MD" ]; then cat "$MD"; else echo "no results table was written"; fi
[ $pytest_rc -eq 0 ] && [ $bench_rc -eq 0 ]
