#!/usr/bin/env bash
# A real Slurm run of the sharded preprocess stage, on a single-node cluster started here on localhost.
#
# Installs Debian's slurm-wlm and munge when sbatch is missing (needs root and apt), writes a private
# slurm.conf (SLURM_CONF, nothing under /etc/slurm is touched; no cgroups, which containers often lack),
# starts munged, slurmctld and slurmd, submits `cargo xtask preprocess` as `sbatch --array=0-2 --wait` (each
# task finds its shard in SLURM_ARRAY_TASK_*), merges the parts with `cargo xtask manifest merge` and compares
# the result with an unsharded run: manifest.csv, rejects.csv and every output image, byte for byte.
# Stops the daemons it started (by their pid files) on exit. Fails loudly on any step.
#
# Usage: tests/slurm/run.sh            (from anywhere; builds xtask in release mode if needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

log() { printf 'slurm-test: %s\n' "$*"; }
die() { printf 'slurm-test: FAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null || ! command -v slurmd >/dev/null; then
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge"
    log "installing slurm-wlm and munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

cargo build --release -q -p xtask
XTASK="$ROOT/target/release/xtask"

W=$(mktemp -d /tmp/cxr-slurm.XXXXXX)
chmod 755 "$W"
STARTED_MUNGE=0
cleanup() {
    local rc=$?
    for pidfile in "$W/slurmd.pid" "$W/slurmctld.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ "$STARTED_MUNGE" = 1 ] && [ -f "$W/munge/munged.pid" ]; then
        kill "$(cat "$W/munge/munged.pid")" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ]; then
        for f in "$W"/slurmctld.log "$W"/slurmd.log "$W"/out/*.log; do
            [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; } >&2
        done
    fi
    sleep 1
    rm -rf "$W"
    exit $rc
}
trap cleanup EXIT

# --- munge: reuse a running daemon, else start one with the package's key (created if missing).
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge "$W/munge"
    if id munge >/dev/null 2>&1; then
        chown munge:munge /run/munge /var/log/munge /var/lib/munge "$W/munge"
        runuser -u munge -- /usr/sbin/munged --pid-file="$W/munge/munged.pid" || die "munged did not start"
    else
        /usr/sbin/munged --force --pid-file="$W/munge/munged.pid" || die "munged did not start"
    fi
    STARTED_MUNGE=1
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge credentials do not round-trip"
    log "munged started"
fi

# --- a private single-node cluster.
HOST=$(hostname -s)
CPUS=$(nproc)
mkdir -p "$W/state" "$W/spool" "$W/out"
cat > "$W/slurm.conf" <<EOF
ClusterName=cxrtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$W/slurm.conf"
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start (see $W/slurmctld.log)"
slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $W/slurmd.log)"
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in idle*|mixed*|alloc*) break ;; esac
    sleep 0.5
done
state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
case "$state" in idle*|mixed*|alloc*) ;; *) die "node $HOST is '$state', not idle" ;; esac
log "cluster up: node $HOST ($CPUS CPUs) $state"

# --- inputs: a tiny synthetic world's BIMCV (PNGs with window and photometric columns) through its ingest
# adapter, plus one truncated file so that rejects.csv is compared too. Plain awk: no Python needed.
"$XTASK" synth --out "$W/world" --per-source 12 --size 128 --lung-masks 0 >/dev/null
"$XTASK" manifest --dataset bimcv --root "$W/world/BIMCV-COVID19+" --out "$W/input.csv" >/dev/null
first=$(awk -F, 'NR == 2 { print $6 }' "$W/input.csv")
head -c 300 "$W/$first" > "$W/truncated.png"
awk -F, -v OFS=, '{ print } NR == 2 { $1 = "truncated-file"; $6 = "truncated.png"; $8 = ""; extra = $0 }
    END { print extra }' "$W/input.csv" > "$W/input.tmp" && mv "$W/input.tmp" "$W/input.csv"
log "input manifest: $(($(wc -l < "$W/input.csv") - 1)) rows"

"$XTASK" preprocess --manifest "$W/input.csv" --out "$W/whole" --size 96 --augment

# --- the array: three tasks, each its own shard from SLURM_ARRAY_TASK_*; --wait returns when all are done.
cat > "$W/preprocess.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=cxr-preprocess
#SBATCH --output=$W/out/preprocess-%A_%a.log
#SBATCH --cpus-per-task=1
set -euo pipefail
"$XTASK" preprocess --manifest "$W/input.csv" --out "$W/shards" --size 96 --augment
EOF
log "sbatch --array=0-2 --wait"
sbatch --array=0-2 --wait "$W/preprocess.sbatch" || die "the array job failed"
for k in 0 1 2; do
    grep -q "shard $k/3 from the Slurm array" "$W"/out/preprocess-*_"$k".log \
        || die "task $k did not take shard $k/3 from the Slurm environment"
done
[ ! -e "$W/shards/manifest.csv" ] || die "a shard wrote manifest.csv"
"$XTASK" manifest merge "$W/shards"

# --- byte for byte: manifest, rejects and every image.
cmp "$W/whole/manifest.csv" "$W/shards/manifest.csv" || die "manifest.csv differs"
cmp "$W/whole/rejects.csv" "$W/shards/rejects.csv" || die "rejects.csv differs"
grep -q truncated-file "$W/whole/rejects.csv" || die "the truncated file was not rejected"
diff -r -q "$W/whole/png8" "$W/shards/png8" || die "the images differ"
images=$(find "$W/whole/png8" -name '*.png' | wc -l)
[ "$images" -ge 100 ] || die "only $images images"
log "OK: 3 Slurm array tasks, merged: manifest.csv, rejects.csv and $images images identical to the unsharded run"
