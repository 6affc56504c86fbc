#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for CI and for trying the launcher presets on a laptop.
#
#   sudo bash slurm/local_cluster.sh start    # install (once), configure, start munge + slurmctld + slurmd
#   bash slurm/local_cluster.sh status        # sinfo + squeue
#   sudo bash slurm/local_cluster.sh stop     # stop the daemons (the configuration stays)
#
# The node is this machine (all its CPUs, most of its memory), one partition `debug`, no GPUs,
# no accounting database (so `sacct` is unavailable: submitit then learns that a job finished
# from the result file the job writes, see slurm/README.md). Process tracking is
# proctrack/linuxproc and task/none, so it needs no cgroups and runs inside containers.
# Debian/Ubuntu only (apt packages slurmctld slurmd slurm-client munge). Needs root.
set -euo pipefail

STATE_DIR="${SLURM_LOCAL_STATE:-/var/tmp/midtrain-slurm}"   # spool, state, logs, pid files
CONF="/etc/slurm/slurm.conf"
MARKER="# written by midtrain slurm/local_cluster.sh"
NODE="localhost"
PARTITION="debug"

log() { echo "[local_cluster] $*" >&2; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    log "'$1' needs root (it installs packages and starts system daemons); re-run with sudo"
    exit 1
  fi
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || { log "slurm binaries missing and no apt-get to install them"; exit 1; }
  log "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to overwrite it"
    exit 1
  fi
  local cpus mem_mb
  cpus=$(nproc)
  # Leave 2 GiB to the system; slurmd refuses to start if RealMemory exceeds what it sees.
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 - 2048}' /proc/meminfo)
  mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/d" "$(dirname "$CONF")"
  local new="$CONF.new"
  cat >"$new" <<EOF
$MARKER
ClusterName=midtrain-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Step credential lifetime (s); SLURM also holds a requeued job this long before it may restart.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Requeued jobs (scontrol requeue, submitit after preemption) go back to the queue at once.
JobRequeue=1
ReturnToService=2
MaxArraySize=10001
# Seconds between SIGTERM and SIGKILL when a job is cancelled or requeued.
KillWait=10
# Finished jobs stay visible to scontrol/squeue for this many seconds.
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -f "$CONF" ]] && cmp -s "$new" "$CONF"; then
    rm -f "$new"
    return
  fi
  mv "$new" "$CONF"
  CONFIG_CHANGED=1
  log "wrote $CONF (CPUs=$cpus RealMemory=${mem_mb}MB, state in $STATE_DIR)"
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n </dev/null >/dev/null 2>&1; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  if id munge >/dev/null 2>&1 && command -v runuser >/dev/null; then
    runuser -u munge -- munged
  else
    munged --force
  fi
  for _ in $(seq 20); do munge -n </dev/null >/dev/null 2>&1 && return; sleep 0.5; done
  log "munged did not come up"; exit 1
}

wait_node_idle() {
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
    case "$state" in
      idle|mixed|allocated) log "node $NODE is $state"; return ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  log "node $NODE not ready (state: ${state:-unknown}); see $STATE_DIR/slurmd.log and slurmctld.log"
  exit 1
}

start() {
  need_root start
  install_packages
  CONFIG_CHANGED=0
  write_config
  if [[ $CONFIG_CHANGED == 1 ]] && pid_alive "$STATE_DIR/slurmctld.pid"; then
    log "configuration changed: restarting the daemons"
    stop
  fi
  start_munge
  if ! pid_alive "$STATE_DIR/slurmctld.pid"; then
    slurmctld
  fi
  for _ in $(seq 30); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
  scontrol ping >/dev/null 2>&1 || { log "slurmctld did not answer; see $STATE_DIR/slurmctld.log"; exit 1; }
  if ! pid_alive "$STATE_DIR/slurmd.pid"; then
    slurmd -N "$NODE"
  fi
  wait_node_idle
}

stop() {
  need_root stop
  local name pidfile
  for name in slurmd slurmctld; do
    pidfile="$STATE_DIR/$name.pid"
    if pid_alive "$pidfile"; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 20); do pid_alive "$pidfile" || break; sleep 0.5; done
      log "stopped $name"
    fi
  done
}

status() {
  if ! scontrol ping >/dev/null 2>&1; then
    echo "local SLURM cluster: not running"
    return 1
  fi
  sinfo
  squeue
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
