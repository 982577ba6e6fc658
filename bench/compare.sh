#!/usr/bin/env bash
# Sluice (io_uring and recvmmsg backends) next to rtpengine and the two minimal reflectors
# (recvmmsg/sendmmsg and io_uring), with one generator (loadgen) and the same loads, on this
# machine:
#
#   1 stream and 100 streams at saturation (loss-free maximum, then 2x overload),
#   100 streams at 100k pkt/s, 1 -> 10,000 streams at 100k pkt/s in total (the plot),
#   100 streams at 100k pkt/s with Sluice's rounds as long as the io_uring reflector's (2 ms),
#   SFU fanout 1->64 against the recvmmsg reflector, control-plane create+destroy per second.
#
# Usage: bench/compare.sh [OUT_DIR]   (default target/compare; QUICK=1 for a short smoke run;
#        ONLY="sat1-uring churn-uring" re-runs those runs and keeps the other results)
# Prints a table, writes OUT_DIR/table.md, OUT_DIR/streams.png and every run's JSON; then runs
# bench/compare-webrtc.sh into OUT_DIR/webrtc (Sluice and Janus over WebRTC; WEBRTC=0: not).
# rtpengine comes from Debian's rtpengine-daemon (userspace: --table=-1, one thread), which
# this script installs with apt-get where it is missing and it can; otherwise its rows are
# left out and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/compare}
QUICK=${QUICK:-0}
ONLY=${ONLY:-}
mkdir -p "$OUT"
[ -z "$ONLY" ] && rm -f "$OUT"/*.json

say() { printf '\n== %s\n' "$*" >&2; }

say "building sluice and loadgen (release)"
cargo build --release -p sluice-control -p sluice-bench >&2
SLUICE=target/release/sluice
LOADGEN=target/release/loadgen

if ! command -v rtpengine >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian's rtpengine-daemon"
        DEBIAN_FRONTEND=noninteractive apt-get install -y rtpengine-daemon >&2 ||
            (apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y rtpengine-daemon >&2) ||
            echo "compare.sh: could not install rtpengine-daemon" >&2
    else
        echo "compare.sh: rtpengine is missing and cannot be installed here (needs root + apt-get)" >&2
    fi
fi
# Debian's package may start its own service; it would hold ports and CPU.
if command -v systemctl >/dev/null && systemctl is-active --quiet rtpengine-daemon 2>/dev/null; then
    systemctl stop rtpengine-daemon || true
fi
RTPE=""
command -v rtpengine >/dev/null && RTPE=rtpengine
OTHERS=reflector,reflector-uring
[ -n "$RTPE" ] && OTHERS=rtpengine,$OTHERS
[ -z "$RTPE" ] && echo "compare.sh: rtpengine not available: its rows are left out" >&2

# Every proxy run offers and answers rtcp-mux (RFC 5761), as current phones and WebRTC do:
# Sluice then holds 2 sockets per call (one per leg); rtpengine keeps 4 (RTP + RTCP per leg).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
cap() { local c=$(( (FDS - 400) / $1 )); [ "$c" -gt 10000 ] && c=10000; echo "$c"; }
MAX_CALLS=$(cap 2)
RTPE_MAX_CALLS=$(cap 4)
if [ "$MAX_CALLS" -lt 10000 ]; then
    echo "compare.sh: open-file limit $FDS allows $MAX_CALLS calls, not 10,000 (raise 'ulimit -Hn' to 21000 as root for the full sweep)" >&2
fi
[ "$RTPE_MAX_CALLS" -lt "$MAX_CALLS" ] &&
    echo "compare.sh: rtpengine (4 sockets per call) is swept up to $RTPE_MAX_CALLS calls only" >&2

DUR=5; STEP=2; SWEEP="1 10 100 1000"
for top in "$RTPE_MAX_CALLS" "$MAX_CALLS"; do
    top=$(( top / 1000 * 1000 ))
    [ "$top" -ge 2000 ] && [[ " $SWEEP " != *" $top "* ]] && SWEEP="$SWEEP $top"
done
if [ "$QUICK" = 1 ]; then DUR=1; STEP=0.5; SWEEP="1 100"; fi

SPAWN=(--spawn "$SLUICE" --server-arg=--rtp-ports --server-arg=20000-61999)
URING=("${SPAWN[@]}" --server-arg=--io --server-arg=uring)
MMSG=("${SPAWN[@]}" --server-arg=--io --server-arg=mmsg)
RTPE_ARGS=()
[ -n "$RTPE" ] && RTPE_ARGS=(--rtpengine "$RTPE")
MUX=--rtcp-mux

run() { # NAME ARGS...: one loadgen run, JSON kept as OUT/NAME.json
    local name=$1; shift
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    say "$name: loadgen $*"
    if ! "$LOADGEN" "$@" --json >"$OUT/$name.json"; then
        echo "compare.sh: run $name failed" >&2
        rm -f "$OUT/$name.json"
    fi
}

run sat1-uring proxy $MUX "${URING[@]}" "${RTPE_ARGS[@]}" --targets "sluice,$OTHERS" \
    --sessions 1 --saturate --rate 50000 --duration "$DUR" --step "$STEP"
run sat1-mmsg proxy $MUX "${MMSG[@]}" --targets sluice --sessions 1 --saturate --rate 50000 \
    --duration "$DUR" --step "$STEP"
run sat100-uring proxy $MUX "${URING[@]}" "${RTPE_ARGS[@]}" --targets "sluice,$OTHERS" \
    --sessions 100 --saturate --rate 50000 --duration "$DUR" --step "$STEP"
run sat100-mmsg proxy $MUX "${MMSG[@]}" --targets sluice --sessions 100 --saturate --rate 50000 \
    --duration "$DUR" --step "$STEP"
for n in $SWEEP; do
    others=$OTHERS
    [ "$n" -gt "$RTPE_MAX_CALLS" ] && others=${OTHERS#rtpengine,}
    run "streams$n-uring" proxy $MUX "${URING[@]}" "${RTPE_ARGS[@]}" --targets "sluice,$others" \
        --sessions "$n" --rate 100000 --duration "$DUR"
    run "streams$n-mmsg" proxy $MUX "${MMSG[@]}" --targets sluice --sessions "$n" --rate 100000 \
        --duration "$DUR"
done
# Like for like: Sluice with the io_uring reflector's own round bound (2 ms), both in one run.
run rounds2ms-uring proxy $MUX "${URING[@]}" --server-arg=--batch-wait-us --server-arg=2000 \
    --targets sluice,reflector-uring --sessions 100 --rate 100000 --duration "$DUR"
run fanout64-uring fanout "${URING[@]}" --listeners 64 --rate 1562 --duration "$DUR"
run fanout64-reflector reflector --sessions 64 --rate 100000 --duration "$DUR"
run churn-uring churn "${URING[@]}"

say "report"
# The table needs python3 alone, the plot matplotlib (compare.py leaves it out without).
. bench/plot-python.sh
PY=$(plot_python)
"${PY:-python3}" bench/compare.py "$OUT"

# The WebRTC side (Sluice and Janus: SRTP echo and rooms), with its own table and plot in
# OUT_DIR/webrtc. WEBRTC=0 leaves it out.
if [ "${WEBRTC:-1}" = 1 ] && [ -z "$ONLY" ]; then
    say "WebRTC: bench/compare-webrtc.sh"
    bash bench/compare-webrtc.sh "$OUT/webrtc" ||
        echo "compare.sh: the WebRTC comparison failed (see above)" >&2
fi
