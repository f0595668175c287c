#!/usr/bin/env bash
# A one-node SLURM on this machine, for the test suite and for trying fmadask on SLURM without a
# cluster: Debian's slurmctld + slurmd + munge, started by hand (no systemd).
#
#   scripts/slurm-local.sh start    # install the packages if missing, start munge, slurmctld, slurmd
#   scripts/slurm-local.sh status   # sinfo; exit 0 when the node is up
#   scripts/slurm-local.sh stop     # stop the daemons this script started
#   scripts/slurm-local.sh env      # the line to eval: export SLURM_CONF=...
#
# Idempotent: `start` on a running one only checks it. It never touches /etc/slurm: its own
# slurm.conf, state and logs live in $FMADASK_SLURM_DIR (default /tmp/fmadask-slurm), and clients
# find it through SLURM_CONF (`eval "$(scripts/slurm-local.sh env)"`). Needs root (apt, munge's
# user, slurmd). One node named after this host with all its CPUs and memory, one partition
# `debug`; processes are tracked by pid (proctrack/linuxproc) and not confined (task/none), which
# is what works in a container.
set -euo pipefail
DIR=${FMADASK_SLURM_DIR:-/tmp/fmadask-slurm}
CONF=$DIR/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "slurm-local: $*" >&2; exit 2; }

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]} (apt-get)"
    command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} with your package manager"
    echo "slurm-local: installing ${missing[*]}" >&2
    # policy-rc.d 101: the packages' postinst must not try to start services (no systemd here)
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    apt-get update -qq >"$DIR/apt.log" 2>&1 || true    # a fresh machine has no package lists
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$DIR/apt.log" 2>&1 \
        || { [ $created -eq 1 ] && rm -f "$policy"; die "apt-get install failed: see $DIR/apt.log"; }
    [ $created -eq 1 ] && rm -f "$policy"
    return 0
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # leave 10 % of the memory to the system so a job asking for "all" of it still fits
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log"
    cat >"$CONF.tmp" <<EOF
# written by scripts/slurm-local.sh: a one-node SLURM for fmadask's tests
ClusterName=fmadask-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=${FMADASK_SLURMCTLD_PORT:-6817}
SlurmdPort=${FMADASK_SLURMD_PORT:-6818}
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_up() { SLURM_CONF=$CONF sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (munge's user, slurmd)"
    mkdir -p "$DIR"
    install_packages
    [ -f "$CONF" ] || write_conf
    # munge: its key comes with the package; its socket folder is made at boot by systemd
    [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || die "no /etc/munge/munge.key"; }
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged --force
    fi
    running "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -f "$CONF"
    running "$DIR/slurmd.pid" || /usr/sbin/slurmd -f "$CONF"
    for _ in $(seq 60); do
        if node_up; then
            SLURM_CONF=$CONF scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
            echo "slurm-local: up ($CONF); clients need: export SLURM_CONF=$CONF" >&2
            return 0
        fi
        sleep 0.5
    done
    die "slurmd did not register within 30 s: see $DIR/log/"
}

stop() {
    for name in slurmd slurmctld; do
        if running "$DIR/$name.pid"; then
            kill "$(cat "$DIR/$name.pid")"
            for _ in $(seq 40); do running "$DIR/$name.pid" || break; sleep 0.25; done
        fi
    done
    # munge stays: other SLURM clients on this machine may use it, and it costs nothing
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) node_up && SLURM_CONF=$CONF sinfo || { echo "slurm-local: not running" >&2; exit 1; } ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
