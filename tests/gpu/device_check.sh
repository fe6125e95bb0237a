#!/usr/bin/env bash
# The device check (tests/gpu/device_check.py): run from the repository root on a GPU machine
# with PyTorch and cuda-python; the Python part is stopped after 7 minutes, bench by 8; writes
# device_check.{json,md} into $OUT, and bench_torch_cuda.json: the product's `bench` of the
# PyTorch backend on CUDA. Exits non-zero where either part failed or was stopped.
# The official checkpoints and Set5 are read from $LBNET_WEIGHTS_DIR / $LBNET_DATA_DIR, else
# from shared/ in the checkout or ../shared beside it; without them the parity part and the
# checkpoint tests are skipped.
set -uo pipefail
out="${OUT:-$PWD/device-check}"
mkdir -p "$out"
if [ -z "${LBNET_SHARED_DIR:-}" ]; then
  if [ -d "$PWD/shared" ]; then LBNET_SHARED_DIR="$PWD/shared"; else LBNET_SHARED_DIR="$PWD/../shared"; fi
fi
export LBNET_SHARED_DIR
export LBNET_WEIGHTS_DIR="${LBNET_WEIGHTS_DIR:-$LBNET_SHARED_DIR/weights}"
export LBNET_DATA_DIR="${LBNET_DATA_DIR:-$LBNET_SHARED_DIR/data}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export LBNET_CACHE_DIR="${LBNET_CACHE_DIR:-$scratch/cache}"
# the package without its dependencies (the machine may be offline): torch, numpy are there
if ! python3 -m pip install --quiet --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1
then
  # the package maps top-level folders (runtime/, export/, ...) into lbnet_deploy: a checkout on
  # sys.path alone does not import, so lay the same tree out with links
  echo "editable install failed (see install.log); using a linked tree on PYTHONPATH" >&2
  mkdir "$scratch/tree"
  cp -r lbnet_deploy "$scratch/tree/"
  for d in export runtime calibration benchmarks; do
    ln -s "$PWD/$d" "$scratch/tree/lbnet_deploy/$d"
  done
  export PYTHONPATH="$scratch/tree${PYTHONPATH:+:$PYTHONPATH}"
fi
start=$SECONDS
timeout 420 python3 tests/gpu/device_check.py "$out"
check=$?
echo "device_check.py: rc $check after $((SECONDS - start)) s"
# what a user runs: bench's torch-cuda contender (CUDA-synchronised), in what time is left
left=$((470 - (SECONDS - start)))
timeout $((left > 10 ? left : 10)) python3 -c \
  'import sys; from lbnet_deploy.cli import main; sys.exit(main(sys.argv[1:]))' \
  bench --model lbnet-t-x4 --backend torch-cuda --precision fp32,fp16 --no-roofline \
  --sizes 64x64,128x128 --runs 5 --warmup 2 --json "$out/bench_torch_cuda.json"
bench=$?
echo "bench: rc $bench after $((SECONDS - start)) s"
exit $((check != 0 ? check : bench))
