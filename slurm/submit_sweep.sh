#!/usr/bin/env bash
# Launch a sweep preset on SLURM from a login node, detached from your terminal.
#
#   slurm/submit_sweep.sh <preset> [hydra overrides...]
#   slurm/submit_sweep.sh doc_count hydra/launcher=slurm_1gpu
#   slurm/submit_sweep.sh paper hydra/launcher=slurm_8gpu trainer=fsdp_8gpu model=llama3_1_8b model.revision=<sha>
#
# The Hydra process that submits the job array blocks until every job has finished (that is
# how hydra-submitit-launcher collects results), so it runs here under nohup and survives a
# closed ssh session; its log is printed below. Run it inside tmux instead if you prefer:
#   tmux new -s sweep 'midtrain-pipeline --config-dir sweeps --config-name doc_count hydra/launcher=slurm_1gpu'
# Re-running the same command later resumes the sweep: finished runs (DONE) do no work.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
preset="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -f "$repo/sweeps/$preset.yaml" ]]; then
  echo "no sweep preset sweeps/$preset.yaml; choose from: $(cd "$repo/sweeps" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
command -v midtrain-pipeline >/dev/null || { echo "midtrain-pipeline not on PATH: activate the project's environment first" >&2; exit 1; }

cd "$repo"   # `--config-dir sweeps` is relative to the repository (slurm/env.sh is found from anywhere)
mkdir -p logs
log="logs/sweep-${preset}-$(date +%Y%m%d-%H%M%S).log"
nohup midtrain-pipeline --config-dir sweeps --config-name "$preset" "$@" >"$log" 2>&1 &
pid=$!
echo "sweep '$preset' submitting from pid $pid; log: $repo/$log"
echo "follow: tail -f $log    jobs: squeue --me    stop: kill $pid && scancel --name=pipeline"
