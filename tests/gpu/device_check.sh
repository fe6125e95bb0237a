#!/usr/bin/env bash
# The device check (tests/gpu/device_check.py): run from the repository root on a GPU machine
# with PyTorch and cuda-python; stopped after 8 minutes at most (never run yet); writes
# device_check.{json,md} into $OUT.
set -uo pipefail
out="${OUT:-$PWD/device-check}"
mkdir -p "$out"
# the package without its dependencies (the machine may be offline): torch, numpy are there
python3 -m pip install --quiet --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1 \
  || echo "editable install failed (see install.log); trying the checkout on sys.path" >&2
timeout 480 python3 tests/gpu/device_check.py "$out"
