#!/usr/bin/env bash
# Start a single-node Slurm (slurmctld + slurmd + munge) on localhost, for the campaign-through-
# Slurm test.  Root only; installs the Debian packages if they are missing.
#   SLURM_TEST_ROOT=/tmp/slurm bash .ci/slurm-up.sh      # state, logs, pid files go there
#   SLURM_TEST_MEM_MB (default 4000)                     # RealMemory of the node
# Stop with .ci/slurm-down.sh (same SLURM_TEST_ROOT).  See .ci/SLURM.md for the traps avoided here.
set -euo pipefail
ROOT=${SLURM_TEST_ROOT:?set SLURM_TEST_ROOT to a scratch directory}
MEM_MB=${SLURM_TEST_MEM_MB:-4000}
CPUS=$(nproc)

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up: needs root (starts munged, slurmctld, slurmd; writes /etc/slurm/slurm.conf)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
fi
if [ -e /etc/slurm/slurm.conf ] && [ ! -e /etc/slurm/.tpsim-ci ]; then
  echo "slurm-up: /etc/slurm/slurm.conf exists and was not written by this script; refusing to replace it" >&2
  exit 1
fi

mkdir -p "$ROOT"/{state/ctld,state/d,log,run} /run/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi

# The conf must be at the default path: the Snakemake jobstep drops SLURM_CONF inside jobs.
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=tpsim-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$ROOT/state/ctld
SlurmdSpoolDir=$ROOT/state/d
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# finished jobs stay visible to squeue for 5 min: Snakemake's squeue status path needs that
MinJobAge=300
KillWait=5
NodeName=localhost CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
touch /etc/slurm/.tpsim-ci

# munged: reuse a running one; otherwise start it and remember its pid for slurm-down.sh
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 20); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$ROOT/run/munged.pid"
fi
/usr/sbin/slurmctld
/usr/sbin/slurmd -N localhost   # the conf names the node localhost; the hostname may differ

for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -q '^idle'; then
    echo "slurm-up: partition debug idle on localhost ($CPUS CPUs, $MEM_MB MB); state in $ROOT"
    exit 0
  fi
  sleep 0.5
done
echo "slurm-up: slurm did not come up; logs in $ROOT/log:" >&2
tail -n 20 "$ROOT"/log/*.log >&2 || true
exit 1
