#!/usr/bin/env bash
# One paper-size MKD iteration on a GPU (configs/mkd.yaml: 256 px, batch 8, full-size networks):
# fp32, then bf16 with channels_last, then the same compiled. For each: iterations/s, images/s
# (target + assistant slices), peak GPU memory, and the Lightning iteration against the bare PyTorch
# loop (a/b). About 5 minutes on one H100 (compiling takes most of the last one).
#   bash benchmarks/gpu_check.sh                      # from the repository root or anywhere
#   bash benchmarks/gpu_check.sh --paper-batch 16     # extra options go to benchmarks/step_cost.py
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
  echo "gpu_check.sh: no NVIDIA GPU here (nvidia-smi failed)" >&2
  exit 1
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" || exit 1
# the benchmark phantom (256 px) is generated once, outside the timed runs
"$PY" - <<'PY'
from benchmarks.step_cost import ROOT, load_size, make_data
make_data(load_size("paper", None, ROOT / "data_cache", 4)[1])
PY
common=(--sizes paper --device cuda --variants bare --warmup 3 --paper-rounds 10 "$@")
status=0
run() {  # run <title> <seconds> <options...>
  local title=$1 limit=$2; shift 2
  echo; echo "== $title"
  timeout "$limit" "$PY" -m benchmarks.step_cost "${common[@]}" "$@" 2>/dev/null | sed -n '/^| size/,$p' || { echo "($title: failed or over ${limit}s)"; status=1; }
}
run "fp32" 60 --precision fp32
run "bf16, channels_last" 60 --precision bf16 --channels-last
run "bf16, channels_last, torch.compile" 170 --precision bf16 --channels-last --compile
exit $status
