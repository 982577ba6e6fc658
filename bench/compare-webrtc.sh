#!/usr/bin/env bash
# WebRTC side by side: Sluice and Janus (Debian's janus 1.1.2, EchoTest and VideoRoom over its
# own WebSocket API) with the same client (loadgen's ICE + DTLS-SRTP peer, bench/src/webrtc.rs)
# and the same loads: browser-like sessions, Opus 50 pkt/s (--size, 172 B) + VP8 30 pkt/s
# (--video-size, 1100 B) per sender, one socket each.
#
#   (a) echo: 100 sessions (8,000 pkt/s): server CPU per echoed packet; then the most
#       sessions held loss-free (<= 0.1 %), doubling then bisecting, --step s per step;
#   (b) one publisher -> N listeners, N = 10, 100, 1000 (as far as the fd limit allows),
#       40,000 egress pkt/s in total (publisher rate 40000/N, at least 40): CPU per egress
#       packet, loss, p99 latency;
#   (c) Sluice's room on --workers 2 next to (b)'s --workers 1.
# (Janus's 1 -> 1000 only with JANUS_ROOM_MAX=1000: its subscriber setup is slow.)
#
# Servers are pinned with taskset to cpu 0 (Sluice --workers 2: cpus 0-1), loadgen to the
# last cpu. Janus runs from a private config dir (WebSocket on 127.0.0.1 only, EchoTest and
# VideoRoom only, ICE-lite, no STUN, session timeout off, warnings only). Janus gathers no
# loopback candidates, so both servers are driven from the host's own address (the kernel
# delivers it over loopback all the same); Sluice answers with 127.0.0.1.
#
# Usage: bench/compare-webrtc.sh [OUT_DIR]   (default target/compare-webrtc; QUICK=1: short)
# Writes OUT_DIR/table.md, OUT_DIR/webrtc.png and every run's JSON; installs janus with apt-get where missing (as
# root), otherwise leaves Janus out with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/compare-webrtc}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.err
say() { printf '\n== %s\n' "$*" >&2; }

DUR=10; STEP=2; LISTENERS="10 100 1000"; ECHO_N=100
# Janus's VideoRoom takes about 0.25 s per subscriber here (join, offer, start, ICE, DTLS),
# so 1 -> 1000 would spend 4 minutes setting up: raise this to include it.
JANUS_ROOM_MAX=${JANUS_ROOM_MAX:-100}
[ "$QUICK" = 1 ] && { DUR=3; STEP=1; LISTENERS="10 100"; ECHO_N=20; }

say "building sluice and loadgen (release)"
timeout 1800 cargo build --release -p sluice-control -p sluice-bench >&2
SLUICE=$PWD/target/release/sluice
LOADGEN=$PWD/target/release/loadgen

if ! command -v janus >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian's janus"
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y janus >&2 ||
            echo "compare-webrtc.sh: could not install janus" >&2
    else
        echo "compare-webrtc.sh: janus is missing and cannot be installed here (needs root + apt-get)" >&2
    fi
fi
# The package may start its own service; it would hold ports and CPU.
if command -v systemctl >/dev/null && systemctl is-active --quiet janus 2>/dev/null; then
    systemctl stop janus || true
fi
JANUS=""
command -v janus >/dev/null && JANUS=janus
[ -z "$JANUS" ] && echo "compare-webrtc.sh: janus not available: its rows are left out" >&2

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
CORES=$(nproc)
GEN=$((CORES - 1))
HOSTIP=$(ip -4 route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
[ -z "$HOSTIP" ] && HOSTIP=$(hostname -I | awk '{print $1}')
echo "compare-webrtc.sh: $CORES cores, open-file limit $FDS, client address $HOSTIP" >&2
# loadgen holds one socket per listener; Janus about five descriptors per handle.
ROOMS=""
for n in $LISTENERS; do
    if [ $((n * 6 + 500)) -le "$FDS" ]; then ROOMS="$ROOMS $n"
    else echo "compare-webrtc.sh: open-file limit $FDS: 1 -> $n left out" >&2; fi
done

SRV_PID=""
stop_server() {
    if [ -n "$SRV_PID" ]; then
        kill "$SRV_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SRV_PID" 2>/dev/null || true
        SRV_PID=""
    fi
}
trap stop_server EXIT

wait_port() {
    for _ in $(seq 100); do
        ss -ltn | grep -q "127.0.0.1:$1 " && return 0
        kill -0 "$SRV_PID" 2>/dev/null || { echo "compare-webrtc.sh: the server exited" >&2; return 1; }
        sleep 0.1
    done
    echo "compare-webrtc.sh: nothing listens on port $1" >&2
    return 1
}

start_sluice() { # WORKERS CPUS
    taskset -c "$2" "$SLUICE" --api 127.0.0.1:19410 --rtp-ports 20000-29999 --workers "$1" \
        --api-rate 0 >"$OUT/sluice-w$1.log" 2>&1 &
    SRV_PID=$!
    wait_port 19410
    TARGET=(--api ws://127.0.0.1:19410/api/ws --pid "$SRV_PID")
}

janus_conf() { # DIR PORT
    local dir=$1 port=$2 lib
    lib=$(dirname "$(ls -d /usr/lib/*/janus/plugins 2>/dev/null | head -1)")
    rm -rf "$dir" && mkdir -p "$dir" && cp /etc/janus/*.jcfg "$dir"/
    cat >"$dir/janus.jcfg" <<EOF
general: {
	configs_folder = "$dir"
	plugins_folder = "$lib/plugins"
	transports_folder = "$lib/transports"
	events_folder = "$lib/events"
	loggers_folder = "$lib/loggers"
	debug_level = 3
	session_timeout = 0
	server_name = "loadgen-janus"
}
certificates: {
}
media: {
	ipv6 = false
	rtp_port_range = "50000-65000"
}
nat: {
	ice_lite = true
	ice_tcp = false
	full_trickle = false
	ice_enforce_list = "$HOSTIP"
	nice_debug = false
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_http.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
events: {
	broadcast = false
}
EOF
    cat >"$dir/janus.transport.websockets.jcfg" <<EOF
general: {
	json = "plain"
	ws = true
	ws_port = $port
	ws_ip = "127.0.0.1"
	wss = false
}
admin: {
	admin_ws = false
	admin_wss = false
}
EOF
    printf 'general: {\n}\n' >"$dir/janus.plugin.videoroom.jcfg"
    printf 'general: {\n}\n' >"$dir/janus.plugin.echotest.jcfg"
}

start_janus() {
    janus_conf "$PWD/$OUT/janus-conf" 18188
    taskset -c 0 "$JANUS" -F "$PWD/$OUT/janus-conf" -N -L "$OUT/janus.log" >/dev/null 2>&1 &
    SRV_PID=$!
    wait_port 18188
    TARGET=(--janus ws://127.0.0.1:18188 --pid "$SRV_PID")
}

run() { # NAME ARGS...: one loadgen run, its JSON kept
    local name=$1; shift
    say "$name: loadgen $*"
    if ! timeout 600 "$LOADGEN" "$@" "${TARGET[@]}" --local-ip "$HOSTIP" --gen-cpu "$GEN" --json \
        >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        echo "compare-webrtc.sh: $name failed:" >&2
        tail -5 "$OUT/$name.err" >&2
        rm -f "$OUT/$name.json"
    fi
}

measure_all() { # PREFIX MAX_LISTENERS
    run "$1-echo" webrtc-echo --sessions "$ECHO_N" --duration "$DUR"
    run "$1-echo-max" webrtc-echo --saturate --sessions 25 --step "$STEP" --duration "$DUR"
    for n in $ROOMS; do
        if [ "$n" -gt "$2" ]; then
            echo "compare-webrtc.sh: $1: 1 -> $n left out (JANUS_ROOM_MAX=$2)" >&2
            continue
        fi
        rate=$((40000 / n)); [ "$rate" -lt 40 ] && rate=40
        run "$1-room$n" webrtc-room --listeners "$n" --rate "$rate" --duration "$DUR"
    done
}

say "Sluice, --workers 1 on cpu 0"
start_sluice 1 0
measure_all sluice 100000
stop_server

if [ "$CORES" -ge 2 ]; then
    say "Sluice, --workers 2 on cpus 0-1 (the generator shares cpu $GEN)"
    start_sluice 2 0-1
    for n in $ROOMS; do
        rate=$((40000 / n)); [ "$rate" -lt 40 ] && rate=40
        run "sluice2w-room$n" webrtc-room --listeners "$n" --rate "$rate" --duration "$DUR"
    done
    stop_server
fi

if [ -n "$JANUS" ]; then
    say "Janus $($JANUS --version 2>/dev/null | sed -n 's/Janus version: .*(\(.*\))/\1/p'), on cpu 0"
    start_janus
    measure_all janus "$JANUS_ROOM_MAX"
    stop_server
fi

say "table"
python3 - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, os, sys, platform
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def row(name):
    d = load(name)
    return (d["runs"][-1], d) if d and d.get("runs") else (None, d)
def f(v, fmt="{:,.0f}"):
    return "–" if v is None else fmt.format(v)
def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"
machine = None
for n in os.listdir(out):
    if n.endswith(".json"):
        machine = (load(n[:-5]) or {}).get("machine")
        if machine:
            break
if machine:
    print(f"machine: {machine.get('cpu_model')} ({machine.get('cores')} cores), kernel {machine.get('kernel')}")
print()
print("WebRTC echo (Opus 50 + VP8 30 pkt/s per session, ICE + DTLS-SRTP each; server on one core)")
print()
print("| server | CPU/pkt at the fixed load | p99 | most sessions loss-free in the search (2 s steps; cap 1,000) | CPU/pkt there |")
print("|---|---|---|---|---|")
e = {}
for s in ("sluice", "janus"):
    r, _ = row(f"{s}-echo")
    m, _ = row(f"{s}-echo-max")
    e[s] = (r and r["ns_per_packet"], m and m["ns_per_packet"])
    if r is None and m is None:
        continue
    note = ""
    if m:
        note = f", then {m['loss_pct']:.2f} % loss over the full run"
        if m["generator_limited"]:
            note += ", generator behind"
    print(f"| {s} | {f(r and r['ns_per_packet'])} ns ({r and r['streams']} sessions) | "
          f"{f(r and r['latency_p99_us'], '{:,.0f}')} µs | "
          f"{f(m and m['streams'])} ({f(m and m['delivered_pps'])} pkt/s{note}) | "
          f"{f(m and m['ns_per_packet'])} ns |")
print()
print(f"sluice / janus CPU per echoed packet: {ratio(e['sluice'][0], e.get('janus', (None,))[0])}")
print()
print("One publisher -> N WebRTC listeners (40,000 egress pkt/s: the publisher sends 40000/N pkt/s, 5 audio : 3 video)")
print()
print("| N | server | egress/s | loss % | p99 µs | cpu % | CPU/egress pkt | busiest worker's CPU/egress pkt (workers' shares) | vs janus |")
print("|---|---|---|---|---|---|---|---|---|")
def workers(r):
    return sorted((t for t in r.get("threads_cpu_ns") or [] if t["name"].startswith("sluice-worker")),
                  key=lambda t: t["name"])
def busiest(r):
    # The worker thread that spent the most CPU, per egress packet: what caps the room.
    ws = workers(r)
    return max(t["cpu_ns"] for t in ws) / r["received"] if ws and r.get("received") else None
def shares(r):
    ws = workers(r)
    total = sum(t["cpu_ns"] for t in ws)
    return " / ".join(f"{100 * t['cpu_ns'] / total:.0f} %" for t in ws) if total else ""
scaling = []
for n in (10, 100, 1000):
    j, _ = row(f"janus-room{n}")
    jn = j and j["ns_per_packet"]
    for s, label in (("sluice", "sluice (1 worker)"), ("sluice2w", "sluice (2 workers)"), ("janus", "janus")):
        r, _ = row(f"{s}-room{n}")
        if r is None:
            continue
        b = f"{f(busiest(r))} ns" if s != "janus" else ""
        if s == "sluice2w":
            b += f" ({shares(r)})"
        print(f"| {n} | {label} | {f(r['delivered_pps'])} | {r['loss_pct']:.3f} | "
              f"{f(r['latency_p99_us'])} | {r['cpu_pct'] or 0:.0f} | {f(r['ns_per_packet'])} ns | "
              f"{b} | {ratio(r['ns_per_packet'], jn) if s != 'janus' else ''} |")
    one, _ = row(f"sluice-room{n}")
    two, _ = row(f"sluice2w-room{n}")
    if one and two and busiest(one) and busiest(two):
        scaling.append((n, busiest(one) / busiest(two)))
if scaling:
    print()
    print("Rooms on 2 workers: the egress rate the busiest worker's CPU allows, against 1 worker "
          "(1 worker's CPU per egress packet / the busiest of 2 workers'; the generator shares "
          "the second core, so this is argued from CPU, not a saturation run):")
    print()
    for n, x in scaling:
        print(f"- 1 -> {n}: {x:.2f}x")
EOF

say "plot"
. bench/plot-python.sh
PY=$(plot_python)
[ -z "$PY" ] && exit 0
"$PY" - "$OUT" <<'EOF'
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
def run(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            d = json.load(f)
        return d["runs"][-1] if d.get("runs") else None
    except (OSError, ValueError):
        return None
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
for prefix, label in (("sluice", "Sluice, 1 worker"), ("sluice2w", "Sluice, 2 workers"), ("janus", "Janus")):
    pts = [(n, r["ns_per_packet"] / 1000) for n in (10, 100, 1000)
           if (r := run(f"{prefix}-room{n}")) and r.get("ns_per_packet")]
    if pts:
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
ax1.set_xscale("log")
ax1.set_xlabel("listeners (one publisher, 40,000 egress pkt/s)")
ax1.set_ylabel("server CPU per egress packet (µs)")
ax1.set_ylim(bottom=0)
ax1.legend()
ax1.grid(alpha=0.3)
bars = [(s, r["ns_per_packet"] / 1000) for s in ("sluice", "janus")
        if (r := run(f"{s}-echo")) and r.get("ns_per_packet")]
ax2.bar([b[0] for b in bars], [b[1] for b in bars], color=["tab:blue", "tab:green"][: len(bars)])
ax2.set_ylabel("server CPU per echoed packet (µs)")
ax2.set_title("WebRTC echo, 100 sessions")
fig.tight_layout()
fig.savefig(os.path.join(out, "webrtc.png"), dpi=110)
print("wrote " + os.path.join(out, "webrtc.png"), file=sys.stderr)
EOF
