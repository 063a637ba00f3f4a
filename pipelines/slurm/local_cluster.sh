#!/bin/bash
# A single-node SLURM cluster on this machine: slurmctld (controller) and slurmd (the one compute
# node) on this host, for CI and for trying pipelines/slurm/submit.sh before a real cluster.
#   pipelines/slurm/local_cluster.sh start     # write the config, start munged, slurmctld, slurmd
#   pipelines/slurm/local_cluster.sh stop      # stop them (the config stays)
#   pipelines/slurm/local_cluster.sh config    # only print the config it would write
# Needs root and Debian's slurm-wlm + munge. The node line comes from `slurmd -C` (this machine's
# real CPU layout and memory), so the same script works on any host. No cgroups (containers and CI
# runners rarely delegate them): processes are tracked with proctrack/linuxproc, no task plugin.
# State, spool and logs: $MSGNN_SLURM_DIR (default /var/tmp/msgnn-slurm).
set -euo pipefail
dir=${MSGNN_SLURM_DIR:-/var/tmp/msgnn-slurm}
conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
marker="# written by msgnn-bench pipelines/slurm/local_cluster.sh"

config() {
  local host node
  host=$(hostname -s)
  # slurmd -C prints "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. ... RealMemory=.."; a node
  # that claims more than the hardware has is drained by slurmctld, so take the machine's own line
  node=$(slurmd -C | head -n1)
  cat <<EOF
$marker
ClusterName=msgnn
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# cores are the consumable resource: tasks of --cpus-per-task=1 run side by side, one per core
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# wait until the node takes jobs (slurmd registered with the controller), at most $1 seconds
wait_idle() {
  local t=0
  until sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; do
    t=$((t + 1)); [ "$t" -le "$1" ] || { echo "local_cluster: node not idle after $1 s:" >&2; sinfo -N >&2 || true
                                          tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true; return 1; }
    sleep 1
  done
}

stop_pid() {  # stop the daemon whose pid file is $1 (TERM, then KILL after 10 s)
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

case ${1:-} in
  config) config ;;
  start)
    [ "$(id -u)" = 0 ] || { echo "local_cluster: needs root (slurmd runs jobs as their users)" >&2; exit 1; }
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
      || { echo "local_cluster: slurm-wlm and munge are not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
    if [ -f "$conf" ] && ! head -n1 "$conf" | grep -qF "$marker"; then
      echo "local_cluster: $conf exists and was not written by this script; not touching it" >&2; exit 1
    fi
    mkdir -p "$dir/state" "$dir/spool" "$(dirname "$conf")"
    config > "$conf"
    # munge: one key shared by all nodes (here one); Debian's postinst creates /etc/munge/munge.key
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! munge -n >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; fi
    munge -n | unmunge >/dev/null
    stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"
    slurmctld -c   # -c: forget jobs of an earlier run of this cluster
    slurmd
    wait_idle 60
    echo "local_cluster: up ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))"
    ;;
  stop)
    stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"
    [ -f /run/munge/munged.pid ] && stop_pid /run/munge/munged.pid
    echo "local_cluster: stopped"
    ;;
  *) echo "usage: $0 start|stop|config" >&2; exit 2 ;;
esac
