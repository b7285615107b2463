#!/usr/bin/env bash
# tests/slurm/cluster.sh start|stop DIR — a one-node SLURM cluster on localhost for the slurm tests: munged, slurmctld
# and slurmd from Debian's packages (munge, slurm-wlm), every file under DIR, ports chosen from the test's pid, so
# nothing of the machine's own configuration is used or changed. `start` prints the slurm.conf path once the node
# is idle; `stop` shuts every daemon it started down. Exit 77 when the packages are not installed.
set -euo pipefail
cmd=$1 D=$2
case $cmd in
start)
  for b in munged slurmctld slurmd sbatch scontrol; do
    command -v $b >/dev/null 2>&1 || [ -x /usr/sbin/$b ] || { echo "$b is not installed (apt-get install munge slurm-wlm)"; exit 77; }
  done
  export PATH=/usr/sbin:$PATH
  mkdir -p $D/state $D/spool $D/log $D/munge
  H=$(hostname -s)
  base=$(( 20000 + ($$ % 20000) ))
  dd if=/dev/urandom of=$D/munge/munge.key bs=1024 count=1 2>/dev/null
  chmod 400 $D/munge/munge.key
  munged --key-file=$D/munge/munge.key --socket=$D/munge/munge.socket --pid-file=$D/munge/munged.pid \
         --log-file=$D/munge/munged.log --seed-file=$D/munge/seed -f
  cat > $D/slurm.conf <<CONF
ClusterName=ligertest
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldPort=$base
SlurmdPort=$(( base + 1 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
NodeName=$H CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF=$D/slurm.conf
  slurmctld -f $D/slurm.conf -i
  slurmd -f $D/slurm.conf
  for i in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then echo $D/slurm.conf; exit 0; fi
    sleep 0.5
  done
  echo "the node did not come up: $(tail -3 $D/log/slurmctld.log $D/log/slurmd.log 2>&1)"
  exit 1
  ;;
stop)
  export SLURM_CONF=$D/slurm.conf PATH=/usr/sbin:$PATH
  pids=""
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f $D/$f ] && pids="$pids $(cat $D/$f)"
  done
  ids=$(squeue -h -o %i 2>/dev/null || true)
  [ -n "$ids" ] && scancel --full $ids 2>/dev/null || true
  scontrol shutdown 2>/dev/null || true
  for p in $pids; do kill $p 2>/dev/null || true; done
  for i in $(seq 1 50); do  # up to 10 s for a clean exit, then SIGKILL
    alive=""
    for p in $pids; do kill -0 $p 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && exit 0
    sleep 0.2
  done
  for p in $alive; do kill -9 $p 2>/dev/null || true; done
  ;;
esac
