#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests/test_compare_slurm.py: installs slurm-wlm and munge if missing,
# starts munged, slurmctld and slurmd if they are not running, and returns once the node takes jobs.
# Idempotent, and safe to call from two test workers at once (one lock). Needs root and Debian's apt.
# A machine with its own /etc/slurm/slurm.conf (not written here) keeps it: then this only checks that jobs can run.
set -euo pipefail

fail() { echo "start_slurm.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (installs slurm-wlm and munge, starts their daemons); run the SLURM tests as root or set MKDSEG_SKIP_SLURM_TESTS=1"

exec 9>/var/lock/mkdseg-start-slurm.lock
flock -w 120 9 || fail "another start_slurm.sh holds /var/lock/mkdseg-start-slurm.lock"

CONF=/etc/slurm/slurm.conf
MARK="# written by mkdseg's .ci/start_slurm.sh"
LOGS=/var/log/slurm
NODE=$(hostname -s)

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/tmp/mkdseg-slurm-apt.log 2>&1 \
        || { apt-get update -q >>/tmp/mkdseg-slurm-apt.log 2>&1 && apt-get install -y -q slurm-wlm munge >>/tmp/mkdseg-slurm-apt.log 2>&1; } \
        || fail "apt-get install slurm-wlm munge failed (is apt reachable?): $(tail -3 /tmp/mkdseg-slurm-apt.log)"
fi

# munge: slurm's authentication; one key on one machine
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged 9>&-  # a daemon must not inherit (and hold) the lock
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || fail "munged does not answer (see /var/log/munge/munged.log)"
fi

NODE_LINE="NodeName=$NODE CPUs=$(nproc) RealMemory=1000 State=UNKNOWN"
# written when absent, and rewritten when it is ours but names another host or CPU count (a copied disk, a new machine)
if [ ! -f "$CONF" ] || { grep -qF "$MARK" "$CONF" && ! grep -qxF "$NODE_LINE" "$CONF"; }; then
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
    # CPUs from nproc: a node declaring more than it has would be drained; memory is not scheduled (CR_CPU)
    cat >"$CONF" <<EOF
$MARK
ClusterName=mkdseg-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
$NODE_LINE
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if grep -qF "$MARK" "$CONF"; then  # our own cluster: ours to start
    running /run/slurmctld.pid || slurmctld 9>&-
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    running /run/slurmd.pid || slurmd 9>&-
fi

# ready: the node idle (or running jobs); a node left down or drained by an earlier start is resumed
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle*|mixed*|allocated*|completing*) exit 0 ;;
        down*|drain*|drained*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
fail "node $NODE is not taking jobs after 60 s (state: ${state:-none}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
