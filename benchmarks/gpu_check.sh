#!/usr/bin/env bash
# One-shot accelerator check (benchmarks/gpu_check.py): gpu tests, attention numerics and the
# throughput benchmark on one device, written as one JSON into --out DIR. Installs nothing and
# needs no network.
#   bash benchmarks/gpu_check.sh --device cuda --out results-gpu    # about 10 minutes on one GPU
#   bash benchmarks/gpu_check.sh --device cpu --out /tmp/check      # the CPU fallback, seconds
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
