#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (by PID file, nothing else) and remove the slurm.conf it
# wrote: with a conf but no controller, every later `snakemake` start waits ~9 s in the slurm
# plugin's `scontrol show config`.  Safe to run twice or after a failed start.
#   SLURM_TEST_ROOT=/tmp/slurm bash .ci/slurm-down.sh
set -uo pipefail
ROOT=${SLURM_TEST_ROOT:?set SLURM_TEST_ROOT to the directory given to slurm-up.sh}
for f in "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid" "$ROOT/run/munged.pid"; do
  if [ -s "$f" ]; then
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  fi
done
if [ -e /etc/slurm/.tpsim-ci ]; then
  rm -f /etc/slurm/slurm.conf /etc/slurm/.tpsim-ci
fi
exit 0
