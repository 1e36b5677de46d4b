#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine (../shared/CLUSTER.md).
#
# Debian's slurm-wlm + munge, both daemons on this host, traffic on 127.0.0.1 only, with two
# fake GPUs declared through gres so that `--gres=gpu:N` job scripts run and are accounted
# (CUDA_VISIBLE_DEVICES is not set this way). Needs root and apt-get.
#
# Idempotent: safe to re-run. Packages are installed only when missing, the configuration is
# rewritten only when it changes (and then the daemons restart), and daemons that already
# answer are left alone. Ends with `sinfo` and a one-line sbatch smoke job.
#
#   .ci/slurm-up.sh            # install if needed, start, check
#   .ci/slurm-up.sh --down     # stop slurmctld, slurmd and munged
set -euo pipefail

log() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (apt-get and daemons); run tests without the slurm marker instead"

if [[ ${1:-} == "--down" ]]; then
    scontrol shutdown 2>/dev/null || true
    [[ -f /run/munge/munged.pid ]] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    log "stopped"
    exit 0
fi

# 1. Packages -------------------------------------------------------------------------------
PKGS=(slurmctld slurmd munge slurm-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
else
    log "packages present: ${PKGS[*]}"
fi

# 2. munge ----------------------------------------------------------------------------------
[[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing (munge postinst should create it)"
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    sleep 1
fi
munge -n | unmunge | grep -q 'STATUS: *Success' || die "munge credential round trip failed"

# 3. Configuration --------------------------------------------------------------------------
H=$(hostname)
ADDR=$(getent ahostsv4 "$H" | awk 'NR==1{print $1}')
if [[ $ADDR != 127.0.0.1 ]]; then
    log "adding '127.0.0.1 $H' to /etc/hosts (hostname resolved to '${ADDR:-nothing}')"
    echo "127.0.0.1 $H" >>/etc/hosts
fi
CPUS=$(nproc)
MEM=$(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 8 / 10))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
touch /var/lib/fakegpu0 /var/lib/fakegpu1

conf=$(cat <<CONF
ClusterName=testcluster
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
gres="NodeName=$H Name=gpu File=/var/lib/fakegpu[0-1]"

changed=0
if [[ ! -f /etc/slurm/slurm.conf ]] || [[ $(cat /etc/slurm/slurm.conf) != "$conf" ]]; then
    printf '%s\n' "$conf" >/etc/slurm/slurm.conf
    changed=1
fi
if [[ ! -f /etc/slurm/gres.conf ]] || [[ $(cat /etc/slurm/gres.conf) != "$gres" ]]; then
    printf '%s\n' "$gres" >/etc/slurm/gres.conf
    changed=1
fi

# 4. Daemons --------------------------------------------------------------------------------
running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ((changed)); then
    log "configuration written (/etc/slurm/slurm.conf, gres.conf)"
    if running /run/slurmctld.pid || running /run/slurmd.pid; then
        log "restarting daemons for the new configuration"
        scontrol shutdown 2>/dev/null || true
        for _ in $(seq 20); do
            running /run/slurmctld.pid || running /run/slurmd.pid || break
            sleep 0.5
        done
    fi
fi
if ! running /run/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
    sleep 2
fi
if ! running /run/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd
    sleep 3
fi

# A node that was INVAL/DOWN (e.g. before the fake GPUs existed) must be resumed once.
state=$(sinfo -h -n "$H" -o '%t' 2>/dev/null | head -1 || true)
case $state in
    idle | mix | alloc) ;;
    *)
        log "node state '${state:-unknown}', resuming"
        scontrol update nodename="$H" state=resume 2>/dev/null || true
        sleep 2
        ;;
esac

# 5. Check ----------------------------------------------------------------------------------
for _ in $(seq 30); do
    state=$(sinfo -h -n "$H" -o '%t' 2>/dev/null | head -1 || true)
    [[ $state == idle || $state == mix || $state == alloc ]] && break
    sleep 1
done
sinfo
[[ $state == idle || $state == mix || $state == alloc ]] || die "node $H is '$state', see /var/log/slurm/"
out=$(mktemp -d)
job=$(sbatch --parsable --gres=gpu:1 --output="$out/smoke.out" --wrap 'echo hello from job $SLURM_JOB_ID')
for _ in $(seq 60); do
    [[ -s $out/smoke.out ]] && break
    sleep 0.5
done
[[ -s $out/smoke.out ]] || die "smoke job $job did not run (squeue: $(squeue -h -j "$job" 2>&1))"
log "smoke job: $(cat "$out/smoke.out")"
rm -rf "$out"
log "ready"
