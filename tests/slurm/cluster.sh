#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, with one fake GPU, for tests/test_slurm.py.
#
#   tests/slurm/cluster.sh start    install Debian's SLURM if needed, start munged, slurmctld and
#                                   slurmd; a no-op when our cluster is already up
#   tests/slurm/cluster.sh stop     cancel its jobs, stop the daemons it started (by pidfile)
#   tests/slurm/cluster.sh status   exit 0 when it is up
#
# Needs root (apt-get, daemons). Debian 12: slurm-wlm 22.05, munge 0.5; no systemd needed.
# The configuration goes where every client finds it, /etc/slurm/slurm.conf (+ gres.conf), marked
# as ours; `start` refuses to replace one it did not write, `stop` removes it. Everything SLURM
# writes lives under SEMISEG_SLURM_ROOT (default /tmp/semiseg-slurm): state/, spool/, log/
# (slurmctld.log, slurmd.log, jobcomp.log: one line per finished job), run/ (pidfiles). munged is
# the system one (/etc/munge/munge.key, /run/munge): started here only if none answers, and then
# stopped by `stop`.
#
# The cluster: node `localhost` with the machine's cores and memory (at least 16 GB), one GPU of type
# `fake` (gres.conf points it at /dev/null: SLURM drops GPUs without a device file), partitions
# `cpu` (default) and `gpu` on that node, no accounting database (sacct does not work; jobs stay
# visible to squeue/scontrol for MinJobAge=600 s, so run snakemake with
# --slurm-status-command squeue), jobcomp/filetxt as the record of finished jobs.
#
# Environment: SEMISEG_SLURM_ROOT (above); SEMISEG_SLURM_NO_APT=1 fails instead of installing.
#
# Failures met while writing this (Debian 12, 2 cores, a container without systemd):
#   - apt's postinst cannot start the daemons (policy-rc.d): they are started by hand here.
#   - a GPU without File= is dropped by slurmd, the node goes INVAL/DRAIN "gres/gpu count reported
#     lower than configured"; the DRAIN survives restarts in state/, which start wipes.
#   - NodeName with CPUs only: "Node reconfigured socket/core boundaries": take the topology
#     from `slurmd -C`; RealMemory above what slurmd detects leaves the node INVAL unless
#     SlurmdParameters=config_overrides (used here, see write_config).
#   - SLURM_CONF pointing at a private slurm.conf: every job fails, "srun: fatal: Could not
#     establish a configuration source" (the plugin's job step drops SLURM_* before srun).
#   - AccountingStorageTRES=gres/gpu (GPUs in the jobs' TRES) needs slurmdbd: slurmctld exits
#     "fatal: slurmdbd is required to run with TRES gres/gpu"; `scontrol show job` still shows
#     a job's GPU request as TresPerJob.
#   - with accounting_storage/none `sacct` fails, and the plugin's default status command is
#     sacct: snakemake then waits forever.
set -euo pipefail

ROOT=${SEMISEG_SLURM_ROOT:-/tmp/semiseg-slurm}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MARK="# Written by tests/slurm/cluster.sh: a one-node test cluster."
export SLURM_CONF=$CONF
PKGS="munge slurmctld slurmd slurm-client"

say() { printf '[cluster.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.25 s until it succeeds.
wait_for() {
  local n=$(($1 * 4)) what=$2
  shift 2
  for _ in $(seq 1 "$n"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  say "timed out after $((n / 4)) s waiting for: $what"
  return 1
}

# wait_daemon SECONDS NAME COMMAND...: like wait_for, but give up as soon as daemon NAME, once
# its pidfile is there, is gone (a fatal error in its log).
wait_daemon() {
  local n=$(($1 * 4)) name=$2 f=$ROOT/run/$2.pid
  shift 2
  for _ in $(seq 1 "$n"); do
    "$@" >/dev/null 2>&1 && return 0
    if [ -s "$f" ] && ! pid_alive "$f" "$name"; then
      say "$name exited"
      return 1
    fi
    sleep 0.25
  done
  say "timed out after $((n / 4)) s waiting for $name"
  return 1
}

# pid_alive PIDFILE NAME: the pid in PIDFILE is running and is NAME (not a recycled pid).
pid_alive() {
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

# stop_pidfile PIDFILE NAME: TERM the daemon, KILL it after 15 s, remove the pidfile.
stop_pidfile() {
  local f=$1 name=$2 pid
  if pid_alive "$f" "$name"; then
    pid=$(cat "$f")
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) ignored SIGTERM; SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

dump_logs() {
  for f in "$ROOT"/log/slurmctld.log "$ROOT"/log/slurmd.log; do
    [ -f "$f" ] && { say "last lines of $f:"; tail -n 25 "$f" >&2; }
  done
  return 0
}

cluster_up() {
  pid_alive "$ROOT/run/slurmctld.pid" slurmctld && pid_alive "$ROOT/run/slurmd.pid" slurmd &&
    scontrol ping 2>/dev/null | grep -q UP &&
    sinfo -h -n localhost -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)$'
}

install_packages() {
  local missing=0
  for bin in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel; do
    command -v "$bin" >/dev/null || missing=1
  done
  [ $missing = 0 ] && return 0
  [ "${SEMISEG_SLURM_NO_APT:-0}" = 1 ] && die "SLURM is not installed and SEMISEG_SLURM_NO_APT=1"
  command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get"
  say "apt-get install $PKGS"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The postinst scripts' "invoke-rc.d: policy-rc.d denied execution" is expected here.
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already answers; using it"
    return 0
  fi
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 "munged" bash -c 'munge -n | unmunge' || die "munged did not start"
  # Only a munged started here is ours to stop.
  cp /run/munge/munged.pid "$ROOT/run/munged.pid"
}

# write_config: slurm.conf.new and gres.conf.new in $ROOT, to compare with what runs.
write_config() {
  local hw mem
  hw=$(slurmd -C | head -n 1)
  field() { tr ' ' '\n' <<<"$hw" | sed -n "s/^$1=//p"; }
  # Below what slurmd detects (else the node is INVAL), but at least 16 GB: with
  # config_overrides slurmd trusts this file, and without cgroups nothing enforces it, so the GPU
  # rules' 8 GB requests fit on a small CI machine (the test's jobs use far less).
  mem=$(($(field RealMemory) - 512))
  [ "$mem" -ge 16384 ] || mem=16384
  cat >"$ROOT/slurm.conf.new" <<EOF
$MARK
ClusterName=semiseg-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups: with task/cgroup ConstrainDevices the fake GPU's /dev/null is fenced off.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$ROOT/log/jobcomp.log
# squeue/scontrol still show a finished job for this long (the plugin polls squeue).
MinJobAge=600
# SIGTERM to SIGKILL when a job is cancelled or hits its time limit.
KillWait=30
GresTypes=gpu
NodeName=localhost CPUs=$(field CPUs) Boards=$(field Boards) SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore) RealMemory=$mem Gres=gpu:fake:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
  echo "NodeName=localhost Name=gpu Type=fake File=/dev/null" >"$ROOT/gres.conf.new"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  mkdir -p "$ROOT"/{state,spool,log,run}
  if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real SLURM setup"
  fi
  install_packages
  write_config
  if cluster_up && cmp -s "$CONF" "$ROOT/slurm.conf.new" && cmp -s "$GRES" "$ROOT/gres.conf.new"; then
    rm -f "$ROOT/slurm.conf.new" "$ROOT/gres.conf.new"
    say "already up: $(sinfo -h -o '%P %T %G' | tr '\n' ' ')"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  stop_daemons # leftovers of an earlier, interrupted run, or a cluster of another config
  mkdir -p /etc/slurm
  mv "$ROOT/slurm.conf.new" "$CONF"
  mv "$ROOT/gres.conf.new" "$GRES"
  start_munge
  rm -rf "$ROOT"/state/* "$ROOT"/spool/* # no DRAIN state or job ids from an earlier run
  : >"$ROOT/log/jobcomp.log"
  slurmctld -f "$CONF" || { dump_logs; die "slurmctld did not start"; }
  wait_daemon 30 slurmctld bash -c 'scontrol ping | grep -q UP' || { dump_logs; die "slurmctld is not up"; }
  slurmd -f "$CONF" -N localhost || { dump_logs; die "slurmd did not start"; }
  wait_daemon 60 slurmd bash -c '[ "$(sinfo -h -n localhost -o %T)" = idle ]' ||
    { sinfo -N -l >&2 || true; dump_logs; die "node localhost is not idle"; }
  say "up: $(sinfo -h -o '%P %T %G' | tr '\n' ' ')"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
  if pid_alive "$ROOT/run/slurmctld.pid" slurmctld; then
    # A job's processes belong to its slurmstepd, not to slurmd: cancel them first.
    scancel --quiet --user root 2>/dev/null || true
    wait_for 45 "jobs to end" bash -c '[ -z "$(squeue -h -t running,completing -o %i)" ]' || true
  fi
  stop_pidfile "$ROOT/run/slurmd.pid" slurmd
  stop_pidfile "$ROOT/run/slurmctld.pid" slurmctld
  stop_pidfile "$ROOT/run/munged.pid" munged
}

remove_config() {
  if [ -e "$CONF" ] && grep -qxF "$MARK" "$CONF"; then
    rm -f "$CONF" "$GRES"
  fi
}

case ${1:-} in
  start) start ;;
  stop)
    [ "$(id -u)" = 0 ] || die "must run as root"
    stop_daemons
    remove_config
    say "stopped"
    ;;
  status)
    if cluster_up; then
      sinfo -h -o '%P %T %G'
    else
      say "down"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
