#!/usr/bin/env bash
# Measures what this machine's hardware allows, so benchmark reports can show the
# broker's figures as ratios of these limits rather than as bare numbers.
#
#   bench/limits.sh                      5 s per measurement, JSON to bench/out/limits.json
#   bench/limits.sh --quick              2 s per measurement, smaller files
#   bench/limits.sh --dir /mnt/data --seconds 10 --out /tmp/limits.json
#
# Measures loopback TCP bandwidth (iperf3, 1 and 2 streams), sequential write and
# read bandwidth and the fdatasync rate of the disk holding --dir (fio), and records
# a short machine description. The JSON goes to --out and to stdout; progress goes
# to stderr. Installs iperf3 and fio with apt-get when they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

OUT="$ROOT/bench/out/limits.json"
DIR="$ROOT/bench/out/fio"
SECONDS_EACH=""
QUICK=0

usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
log() { printf '[limits] %s\n' "$*" >&2; }
die() { printf '[limits] error: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --dir) DIR="${2:?--dir needs a directory}"; shift 2 ;;
        --seconds) SECONDS_EACH="${2:?--seconds needs a number}"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# --quick only changes what the user did not set explicitly.
if [[ -z "$SECONDS_EACH" ]]; then
    if [[ "$QUICK" -eq 1 ]]; then SECONDS_EACH=2; else SECONDS_EACH=5; fi
fi
[[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer, got '$SECONDS_EACH'"

# Upper bounds for the fio files. The sequential write also stops after
# SECONDS_EACH, so these only need to exceed what the disk can do in that time.
if [[ "$QUICK" -eq 1 ]]; then
    SEQ_MIB=1024
    SYNC_MIB=256
else
    SEQ_MIB=4096
    SYNC_MIB=1024
fi

# ---------------------------------------------------------------------------
# Tools

need_install=()
command -v iperf3 >/dev/null 2>&1 || need_install+=(iperf3)
command -v fio >/dev/null 2>&1 || need_install+=(fio)
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is required to parse the JSON results"
if [[ ${#need_install[@]} -gt 0 ]]; then
    log "installing ${need_install[*]} (apt-get)"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${need_install[*]} by hand"
        SUDO=(sudo)
    fi
    # noninteractive: iperf3's package asks whether to start a daemon.
    apt_install() {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${need_install[@]}" >&2
    }
    # The package lists may be missing or stale (fresh containers); only then pay
    # for an update.
    if ! apt_install; then
        "${SUDO[@]}" apt-get update >&2
        apt_install
    fi
fi

# ---------------------------------------------------------------------------
# Cleanup: the iperf3 server and the fio files must not outlive the script,
# whichever way it ends.

TMP="$(mktemp -d)"
IPERF_PID=""
CREATED_DIR=0
SEQ_FILE=""
SYNC_FILE=""
cleanup() {
    if [[ -n "$IPERF_PID" ]]; then
        kill "$IPERF_PID" 2>/dev/null || true
        wait "$IPERF_PID" 2>/dev/null || true
    fi
    [[ -n "$SEQ_FILE" ]] && rm -f "$SEQ_FILE"
    [[ -n "$SYNC_FILE" ]] && rm -f "$SYNC_FILE"
    if [[ "$CREATED_DIR" -eq 1 ]]; then rmdir "$DIR" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Loopback TCP

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True when something listens on 127.0.0.1:$1. Probing with a connect() would not
# do: a one-off server (-1) takes the probe for its client and exits.
listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    # /proc/net/tcp: local address is "0100007F:PORT" (hex), state 0A is LISTEN.
    awk -v want="0100007F:$hex" '$2 == want && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

# Runs one iperf3 client against a fresh one-off server; prints MB/s (10^6 bytes/s).
iperf_mb_s() {
    local streams="$1" port json
    port="$(free_port)"
    json="$TMP/iperf-$streams.json"
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$TMP/iperf-server.log" 2>&1 &
    IPERF_PID=$!
    local tries=0
    until listening "$port"; do
        kill -0 "$IPERF_PID" 2>/dev/null || { cat "$TMP/iperf-server.log" >&2; die "iperf3 server exited early"; }
        tries=$((tries + 1))
        [[ "$tries" -le 100 ]] || die "iperf3 server did not listen on port $port within 10 s"
        sleep 0.1
    done
    # iperf3 -J reports its own errors inside the JSON, so keep going and let the
    # parser show them.
    iperf3 -c 127.0.0.1 -p "$port" -t "$SECONDS_EACH" -P "$streams" -J >"$json" || true
    wait "$IPERF_PID" 2>/dev/null || true
    IPERF_PID=""
    "$PYTHON" - "$json" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    r = json.load(f)
if "error" in r:
    sys.exit("iperf3: " + r["error"])
print(round(r["end"]["sum_received"]["bits_per_second"] / 8 / 1e6, 1))
EOF
}

log "loopback TCP, 1 stream, ${SECONDS_EACH} s (iperf3)"
TCP1="$(iperf_mb_s 1)"
log "  ${TCP1} MB/s"
log "loopback TCP, 2 streams, ${SECONDS_EACH} s (iperf3)"
TCP2="$(iperf_mb_s 2)"
log "  ${TCP2} MB/s"

# ---------------------------------------------------------------------------
# Disk

if [[ ! -d "$DIR" ]]; then
    mkdir -p "$DIR"
    CREATED_DIR=1
fi
DIR="$(cd "$DIR" && pwd)"

# Leave room for the rest of the disk's users: never take more than half of the
# free space.
free_mib=$(( $(df --output=avail -B1M "$DIR" | tail -n 1 | tr -d ' ') ))
cap_mib=$(( free_mib / 2 ))
(( cap_mib >= 64 )) || die "only ${free_mib} MiB free under $DIR"
(( SEQ_MIB <= cap_mib )) || SEQ_MIB=$cap_mib
(( SYNC_MIB <= cap_mib )) || SYNC_MIB=$cap_mib

SEQ_FILE="$DIR/limits-seq.fio"
SYNC_FILE="$DIR/limits-sync.fio"
rm -f "$SEQ_FILE" "$SYNC_FILE"

# Common fio settings. fallocate=none: the broker appends to plain files, so the
# writes should allocate blocks as they go, not fill a preallocated file.
FIO_COMMON=(--ioengine=psync --fallocate=none --output-format=json)

# Prints one field of a single-job fio JSON result, evaluated by python.
fio_field() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    text = f.read()
# Older fio versions may put warnings before the JSON object.
job = json.loads(text[text.index("{"):])["jobs"][0]
if job.get("error"):
    sys.exit("fio job failed with error %d" % job["error"])
w, r = job["write"], job["read"]
print(eval(sys.argv[2]))
EOF
}

log "disk sequential write, 1 MiB buffered + final fsync, up to ${SECONDS_EACH} s / ${SEQ_MIB} MiB (fio, $DIR)"
# Not time_based: looping over the file would rewrite pages still in the page cache
# and report memory speed. Size and runtime are both upper bounds instead, and
# end_fsync puts every byte on the disk before the clock stops.
fio --name=seqwrite --filename="$SEQ_FILE" --rw=write --bs=1M --size="${SEQ_MIB}M" \
    --runtime="$SECONDS_EACH" --end_fsync=1 "${FIO_COMMON[@]}" \
    --output="$TMP/seqwrite.json" >&2
SEQ_W="$(fio_field "$TMP/seqwrite.json" 'round(w["bw_bytes"] / 1e6, 1)')"
SEQ_WRITTEN_MIB="$(fio_field "$TMP/seqwrite.json" 'w["io_bytes"] // (1 << 20)')"
log "  ${SEQ_W} MB/s (${SEQ_WRITTEN_MIB} MiB written)"
(( SEQ_WRITTEN_MIB >= 1 )) || die "sequential write wrote less than 1 MiB"

log "disk sequential read, 1 MiB O_DIRECT, ${SECONDS_EACH} s (fio)"
# O_DIRECT so the figure is the disk's, not the page cache's. Only the part of the
# file that was actually written is read: a read job asking for more would make
# fio lay out the rest first.
fio --name=seqread --filename="$SEQ_FILE" --rw=read --bs=1M --direct=1 \
    --size="${SEQ_WRITTEN_MIB}M" --time_based --runtime="$SECONDS_EACH" \
    "${FIO_COMMON[@]}" --output="$TMP/seqread.json" >&2
SEQ_R="$(fio_field "$TMP/seqread.json" 'round(r["bw_bytes"] / 1e6, 1)')"
log "  ${SEQ_R} MB/s"
rm -f "$SEQ_FILE"

log "disk fsync rate, 4 KiB writes each followed by fdatasync, ${SECONDS_EACH} s (fio)"
# What a broker pays per durable append: every write waits for its own fdatasync.
fio --name=fsync --filename="$SYNC_FILE" --rw=write --bs=4k --fdatasync=1 \
    --size="${SYNC_MIB}M" --time_based --runtime="$SECONDS_EACH" \
    "${FIO_COMMON[@]}" --output="$TMP/fsync.json" >&2
# One fdatasync per write, so writes per second are fsyncs per second.
FSYNC_PS="$(fio_field "$TMP/fsync.json" 'round(w["iops"], 1)')"
FSYNC_MB="$(fio_field "$TMP/fsync.json" 'round(w["bw_bytes"] / 1e6, 2)')"
log "  ${FSYNC_PS} fsync/s (${FSYNC_MB} MB/s)"
rm -f "$SYNC_FILE"

# ---------------------------------------------------------------------------
# Machine description and the JSON itself

log "describing the machine"
DISK_SOURCE="$(df --output=source "$DIR" | tail -n 1 | tr -d ' ')"
DISK_FS="$(df --output=fstype "$DIR" | tail -n 1 | tr -d ' ')"
DISK_BYTES="$(df --output=size -B1 "$DIR" | tail -n 1 | tr -d ' ')"

mkdir -p "$(dirname "$OUT")"
DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
CPU_MODEL="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
CORES="$(nproc)" \
MEM_KIB="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)" \
KERNEL="$(uname -r)" \
DISK_SOURCE="$DISK_SOURCE" DISK_FS="$DISK_FS" DISK_BYTES="$DISK_BYTES" \
TCP1="$TCP1" TCP2="$TCP2" SEQ_W="$SEQ_W" SEQ_R="$SEQ_R" \
FSYNC_PS="$FSYNC_PS" FSYNC_MB="$FSYNC_MB" \
SECONDS_EACH="$SECONDS_EACH" DIR="$DIR" \
"$PYTHON" - "$OUT" <<'EOF'
import json, os, sys

e = os.environ

def read(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None

def block_device(directory):
    """/sys/block/<name> of the whole disk holding directory, or None.

    Goes by the directory's device number rather than df's source name, which can
    be /dev/root, a /dev/mapper alias or a partition. Filesystems without a block
    device of their own (overlay, tmpfs, btrfs subvolumes) have none.
    """
    dev = os.stat(directory).st_dev
    sys_dev = "/sys/dev/block/%d:%d" % (os.major(dev), os.minor(dev))
    if not os.path.exists(sys_dev):
        return None
    path = os.path.realpath(sys_dev)
    # A partition (vda1) sits inside its disk's directory (vda); the model and the
    # queue settings belong to the disk.
    if os.path.exists(os.path.join(path, "partition")):
        path = os.path.dirname(path)
    return path

disk = block_device(e["DIR"])
model = rotational = None
if disk:
    # SCSI, SATA and NVMe disks have a model; virtio disks (/dev/vda) do not.
    model = read(os.path.join(disk, "device", "model"))
    rot = read(os.path.join(disk, "queue", "rotational"))
    rotational = None if rot is None else rot == "1"

result = {
    "date": e["DATE"],
    "machine": {
        "cpu_model": e["CPU_MODEL"] or None,
        "cores": int(e["CORES"]),
        "memory_mib": int(e["MEM_KIB"]) // 1024,
        "kernel": e["KERNEL"],
        "disk": {
            "device": e["DISK_SOURCE"] or None,
            "fs": e["DISK_FS"] or None,
            "size_gib": round(int(e["DISK_BYTES"]) / (1 << 30), 1),
            "model": model,
            "rotational": rotational,
        },
    },
    "loopback_tcp_mb_s": float(e["TCP1"]),
    "loopback_tcp_2_streams_mb_s": float(e["TCP2"]),
    "disk_seq_write_mb_s": float(e["SEQ_W"]),
    "disk_seq_read_mb_s": float(e["SEQ_R"]),
    "fsync_per_s": float(e["FSYNC_PS"]),
    "fsync_4k_write_mb_s": float(e["FSYNC_MB"]),
    "settings": {"seconds": int(e["SECONDS_EACH"]), "dir": e["DIR"]},
}
text = json.dumps(result, indent=2)
with open(sys.argv[1], "w") as f:
    f.write(text + "\n")
print(text)
EOF
log "written to $OUT"
