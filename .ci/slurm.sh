#!/usr/bin/env bash
# Start a real single-node Slurm cluster (munged, slurmctld, slurmd) for CI and development.
#
#   .ci/slurm.sh WORKDIR
#
# Run as root. Installs Debian's slurm-wlm and munge when missing (policy-rc.d keeps the
# packages' services from starting), writes WORKDIR/slurm.conf for one node (this machine)
# with two fake GPUs as GRES (character devices made with mknod, AutoDetect=off), no cgroups
# (proctrack/linuxproc, task/none: it runs inside a container) and a job-completion log
# (WORKDIR/jobcomp.log; there is no slurmdbd, so sacct is disabled). munged listens on
# WORKDIR/munge.socket, so nothing of the system's /etc/slurm or /run/munge is used.
# Waits until `sinfo` shows the node idle. Idempotent: a second call reuses the running
# daemons.
#
# Afterwards:  export SLURM_CONF=WORKDIR/slurm.conf   (also written to WORKDIR/env)
# Stop with:   kill "$(cat WORKDIR/slurmd.pid)" "$(cat WORKDIR/slurmctld.pid)" \
#                   "$(cat WORKDIR/munged.pid)"
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: slurmctld/slurmd/munged need root here; run it as root (CI does)" >&2
    exit 1
fi

mkdir -p "$1"
work=$(cd "$1" && pwd)
conf="$work/slurm.conf"
node=$(hostname -s)
export SLURM_CONF="$conf"

need=()
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "installing ${need[*]}" >&2
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm munge >&2
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
fi

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# -- munge: its own socket, pid, log and seed under WORKDIR --------------------------------
key=/etc/munge/munge.key
if [[ ! -s $key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    chmod 400 "$key"
fi
mkdir -p "$work/munge"
chmod 755 "$work" "$work/munge"
if ! alive "$work/munged.pid"; then
    rm -f "$work/munge/munge.socket" "$work/munge/munge.socket.lock"
    munged --force --socket="$work/munge/munge.socket" --key-file="$key" \
        --pid-file="$work/munged.pid" --log-file="$work/munged.log" \
        --seed-file="$work/munge/munged.seed"
fi

# -- slurm.conf and gres.conf ----------------------------------------------------------------
mkdir -p "$work/state" "$work/spool" "$work/dev"
for i in 0 1; do
    [[ -c $work/dev/gpu$i ]] || mknod "$work/dev/gpu$i" c 1 3
done
cat >"$work/gres.conf" <<EOF
AutoDetect=off
NodeName=$node Name=gpu File=$work/dev/gpu[0-1]
EOF
cat >"$conf.new" <<EOF
# Written by .ci/slurm.sh: a single-node cluster for seglab's tests.
ClusterName=seglab-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$work/jobcomp.log
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
KillWait=10
SlurmdTimeout=600
MinJobAge=600
MessageTimeout=20
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# Restart the daemons only when the configuration changed.
changed=0
if ! cmp -s "$conf.new" "$conf"; then
    mv "$conf.new" "$conf"
    changed=1
else
    rm -f "$conf.new"
fi
if [[ $changed -eq 1 ]]; then
    for daemon in slurmd slurmctld; do
        if alive "$work/$daemon.pid"; then
            kill "$(cat "$work/$daemon.pid")"
            for _ in $(seq 50); do alive "$work/$daemon.pid" || break; sleep 0.2; done
        fi
    done
fi

# -- the daemons ------------------------------------------------------------------------------
if ! alive "$work/slurmctld.pid"; then
    rm -f "$work/slurmctld.pid"
    slurmctld -f "$conf"
fi
if ! alive "$work/slurmd.pid"; then
    rm -f "$work/slurmd.pid"
    slurmd -f "$conf"
fi

state=""
for _ in $(seq 120); do
    state=$(sinfo -h -n "$node" -o '%T' 2>/dev/null || true)
    case $state in
        idle|mixed|allocated) break ;;
        down*|drain*|unknown*|"") ;;
    esac
    if [[ $state == down* || $state == drain* ]]; then
        scontrol update nodename="$node" state=resume 2>/dev/null || true
    fi
    sleep 0.5
done
case $state in
    idle|mixed|allocated) ;;
    *)
        echo "$0: node $node is '${state:-not answering}' after 60 s; see $work/slurmctld.log" \
            "and $work/slurmd.log" >&2
        exit 1
        ;;
esac

echo "export SLURM_CONF=$conf" >"$work/env"
echo "slurm up: node $node $state, $(sinfo -h -n "$node" -o '%G'), SLURM_CONF=$conf" >&2
