# Environment for midtrain jobs; sourced by the sbatch scripts that submitit writes (the
# `setup:` lines of conf/hydra/launcher/slurm_*.yaml) and by slurm/run_one.sbatch.
# Safe under `set -eu`. Site-specific lines (module load, proxies, scratch paths) go in
# conf/local/env.sh, which is gitignored and sourced last when present.

_midtrain_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# One BLAS/OpenMP thread per allocated CPU; tokenizers must not fork thread pools under DDP/FSDP.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export MKL_NUM_THREADS="${OMP_NUM_THREADS}"
export TOKENIZERS_PARALLELISM=false
# Unbuffered Python output, so the per-job log files follow training live.
export PYTHONUNBUFFERED=1
# Faster failure and clearer errors from NCCL on multi-GPU jobs.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
# Jobs must not stop to ask for a W&B login; the key comes from the submitting shell's environment.
export WANDB_CONSOLE="${WANDB_CONSOLE:-off}"

# A virtual environment to activate, if the launcher's Python is not already the right one
# (submitit runs the job with the same interpreter path that submitted it).
if [ -n "${MIDTRAIN_VENV:-}" ] && [ -f "${MIDTRAIN_VENV}/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "${MIDTRAIN_VENV}/bin/activate"
fi

if [ -f "${_midtrain_repo}/conf/local/env.sh" ]; then
  # shellcheck disable=SC1091
  . "${_midtrain_repo}/conf/local/env.sh"
fi
unset _midtrain_repo
