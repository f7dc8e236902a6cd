#!/usr/bin/env bash
# Single-node Slurm (Debian 12 "bookworm", Slurm 22.05.x) for local/CI tests of
# `tokenwatt sweep --executor slurm`: one node, 2 fake GPUs, partition "debug".
#
# Usage: scripts/slurm-single-node.sh start|stop|status|restart
#
#   start   install packages if missing, write /etc/slurm/{slurm,gres}.conf,
#           start munged, slurmctld, slurmd; wait (bounded) until the node is
#           usable. Idempotent: a second start is a quick no-op.
#   stop    cancel every job, kill what is left of their processes, stop
#           slurmd, slurmctld and munged.
#   status  print daemon pids, sinfo and squeue (exit 0 only if all is up).
#
# Needs root and no systemd (daemons are started directly). Only 127.0.0.1 is
# used. Environment overrides (optional):
#   SLURM_FAKE_GPUS   number of fake GPUs (default 2)
#   SLURM_WAIT_S      how long start waits for the node (default 30)
#   SLURM_NO_INSTALL  set to 1 to fail instead of running apt-get
#
# Fake GPUs are character devices /dev/fake-nvidiaN (major 195 minor N);
# Slurm's gres/gpu plugin then exports CUDA_VISIBLE_DEVICES=0/1/... per job.
# Logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log,
#       /var/log/munge/munged.log.
# No accounting (AccountingStorageType=accounting_storage/none): `sacct` does
# not work; finished jobs stay visible to squeue/scontrol for MinJobAge=3600 s.
set -euo pipefail

CONF_DIR=/etc/slurm
SLURM_CONF_FILE="$CONF_DIR/slurm.conf"
GRES_CONF_FILE="$CONF_DIR/gres.conf"
CTLD_SPOOL=/var/spool/slurm/ctld
SLURMD_SPOOL=/var/spool/slurm/d
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID="$MUNGE_RUN/munged.pid"
NGPUS="${SLURM_FAKE_GPUS:-2}"
WAIT_S="${SLURM_WAIT_S:-30}"
GPU_DEV_PREFIX=/dev/fake-nvidia
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "[slurm-single-node] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- processes
# pid_alive PIDFILE NAME: prints the pid if PIDFILE names a live process whose
# command name starts with NAME (guards against reused pids).
pid_alive() {
    local file=$1 name=$2 pid comm
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$name"* ]] || return 1
    # a killed daemon can linger as a zombie until init reaps it
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

# stop_pidfile PIDFILE NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pidfile() {
    local file=$1 name=$2 pid i
    if pid=$(pid_alive "$file" "$name"); then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$file"
}

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ ${SLURM_NO_INSTALL:-0} == 1 ]] && die "missing packages: ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/tmp/slurm-single-node-apt.log 2>&1; then
        apt-get update >>/tmp/slurm-single-node-apt.log 2>&1 || true
        apt-get install -y --no-install-recommends "${PACKAGES[@]}" >>/tmp/slurm-single-node-apt.log 2>&1 ||
            { tail -20 /tmp/slurm-single-node-apt.log >&2; die "apt-get install failed"; }
    fi
}

# ---------------------------------------------------------------- munge
start_munge() {
    install -d -m 0700 -o munge -g munge /etc/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    install -d -m 0755 -o munge -g munge "$MUNGE_RUN"
    install -d -m 0700 -o munge -g munge /var/lib/munge /var/log/munge
    # a working munged (ours or anyone's) is good enough
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    stop_pidfile "$MUNGE_PID" munged
    log "starting munged"
    # --force: start even if a dead munged left its socket behind
    runuser -u munge -- /usr/sbin/munged --force
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

# ---------------------------------------------------------------- config
gen_slurm_conf() {
    local node=$1 hw cpus boards sockets cores threads mem realmem
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    hw=$(slurmd -C 2>/dev/null | head -1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); mem=$(field RealMemory)
    [[ -n $cpus ]] || cpus=$(nproc)
    [[ -n $mem ]] || mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
    # a bit below the real memory, so slurmd never drains the node for "Low RealMemory"
    realmem=$((mem * 9 / 10))
    local topo="CPUs=$cpus"
    if [[ -n $boards && -n $sockets && -n $cores && -n $threads ]]; then
        topo+=" Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
    fi
    cat <<EOF
# Generated by scripts/slurm-single-node.sh -- single-node test cluster.
ClusterName=tokenwatt
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# credential lifetime; also the delay before a requeued job may start again (default 120 s)
AuthInfo=cred_expire=20
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
# run the schedulers often (defaults 60 s / 30 s) so jobs that become eligible
# by time (e.g. after a requeue) start within seconds
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# without accounting (no sacct) finished jobs are only known to squeue/scontrol
# for MinJobAge seconds: keep them an hour (default 300)
MinJobAge=3600
# seconds between SIGTERM and SIGKILL on cancel/timeout/requeue (default 30);
# submitit ignores SIGTERM, so this is how long a cancelled job stays COMPLETING
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node $topo RealMemory=$realmem Gres=gpu:$NGPUS State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

gen_gres_conf() {
    local node=$1 i
    echo "# Generated by scripts/slurm-single-node.sh -- fake GPUs (char devices, major 195)."
    for ((i = 0; i < NGPUS; i++)); do
        echo "NodeName=$node Name=gpu File=$GPU_DEV_PREFIX$i"
    done
}

make_fake_gpus() {
    local i dev
    for ((i = 0; i < NGPUS; i++)); do
        dev=$GPU_DEV_PREFIX$i
        if [[ -e $dev && ! -c $dev ]]; then rm -f "$dev"; fi
        [[ -c $dev ]] || mknod -m 0666 "$dev" c 195 "$i"
    done
}

# write_if_changed FILE CONTENT: returns 0 if FILE was (re)written.
write_if_changed() {
    local file=$1 content=$2
    if [[ -f $file ]] && [[ "$(cat "$file")" == "$content" ]]; then
        return 1
    fi
    printf '%s\n' "$content" >"$file.tmp"
    chmod 0644 "$file.tmp"
    mv -f "$file.tmp" "$file"
    return 0
}

# ---------------------------------------------------------------- slurm
node_state() { timeout 10 sinfo -h -N -o %T 2>/dev/null | head -1 || true; }

wait_node_ready() {
    local node=$1 t0 st resumed=0
    t0=$(date +%s)
    while :; do
        st=$(node_state)
        case $st in
            idle | mixed | allocated | completing)
                log "node $node is $st after $(($(date +%s) - t0)) s"
                return 0 ;;
            down* | drain* | drained*)
                if ((resumed == 0)) && (($(date +%s) - t0 >= 3)); then
                    log "node $node is $st, resuming it"
                    scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        if (($(date +%s) - t0 >= WAIT_S)); then
            log "node $node not ready after $WAIT_S s (state: '${st:-?}')"
            tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

cmd_start() {
    need_root
    install_packages
    local node changed=0
    node=$(hostname -s)
    install -d -m 0755 "$CONF_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL" "$LOG_DIR" "$RUN_DIR"
    make_fake_gpus
    start_munge
    write_if_changed "$SLURM_CONF_FILE" "$(gen_slurm_conf "$node")" && changed=1
    write_if_changed "$GRES_CONF_FILE" "$(gen_gres_conf "$node")" && changed=1
    if ((changed)); then
        log "configuration written to $SLURM_CONF_FILE and $GRES_CONF_FILE"
        # daemons started with an older config must pick up the new one
        stop_pidfile "$SLURMD_PID" slurmd
        stop_pidfile "$CTLD_PID" slurmctld
    fi
    if ! pid_alive "$CTLD_PID" slurmctld >/dev/null; then
        log "starting slurmctld"
        slurmctld -f "$SLURM_CONF_FILE"
    fi
    if ! pid_alive "$SLURMD_PID" slurmd >/dev/null; then
        log "starting slurmd"
        slurmd -f "$SLURM_CONF_FILE" -N "$node"
    fi
    wait_node_ready "$node"
}

cmd_stop() {
    need_root
    local ids i pids
    if pid_alive "$CTLD_PID" slurmctld >/dev/null; then
        ids=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u || true)
        if [[ -n $ids ]]; then
            log "cancelling jobs: $(echo $ids)"
            # shellcheck disable=SC2086
            timeout 10 scancel $ids 2>/dev/null || true
        fi
        for ((i = 0; i < 40; i++)); do
            [[ -z $(timeout 10 squeue -h -t PD,R,CG,S,CF,RQ,RS,SO,ST -o %A 2>/dev/null || true) ]] && break
            sleep 0.5
        done
    fi
    if pid_alive "$SLURMD_PID" slurmd >/dev/null; then
        # kill job processes that survived the cancel (pids known to slurmd)
        pids=$(timeout 10 scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}' || true)
        if [[ -n $pids ]]; then
            log "killing leftover job processes: $(echo $pids)"
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 1
        fi
    fi
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    stop_pidfile "$MUNGE_PID" munged
    log "stopped"
}

cmd_status() {
    local rc=0 pid
    for d in "munged:$MUNGE_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if pid=$(pid_alive "${d#*:}" "${d%%:*}"); then
            echo "${d%%:*}: running (pid $pid)"
        else
            echo "${d%%:*}: not running"
            rc=3
        fi
    done
    if pid_alive "$CTLD_PID" slurmctld >/dev/null; then
        echo "--- sinfo"
        timeout 10 sinfo -N -o '%N %P %T %c %m %G' || rc=3
        echo "--- squeue"
        timeout 10 squeue -o '%.12i %.9P %.20j %.8T %.10M %.6D %b %R' || rc=3
    fi
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
