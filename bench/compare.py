#!/usr/bin/env python3
"""Turns bench/compare.sh's loadgen JSON files into one table (Markdown, printed and written
to OUT/table.md) and a plot of CPU per packet against concurrent streams (OUT/streams.png,
when matplotlib is importable). Usage: compare.py OUT_DIR"""

import glob
import json
import os
import re
import sys


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        try:
            with open(path) as f:
                runs[name] = json.load(f)
        except (OSError, ValueError) as e:
            print(f"compare.py: skipping {path}: {e}", file=sys.stderr)
    return runs


def label(target, backend):
    """sluice rows get their I/O backend; other targets are the same in every file."""
    base = target.split("@")[0]
    return f"sluice ({backend})" if base == "sluice" else base


def rows_of(runs, prefix):
    """(label, suffix, row) for every row of the runs named prefix-<backend>."""
    for name, doc in runs.items():
        m = re.fullmatch(re.escape(prefix) + r"-(\w+)", name)
        if not m:
            continue
        for row in doc.get("runs", []):
            target = row["target"]
            suffix = target.split("@")[1] if "@" in target else ""
            yield label(target, m.group(1)), suffix, row


def collect(runs):
    """label -> {column: value}"""
    table = {}

    def put(lbl, key, value):
        table.setdefault(lbl, {})[key] = value

    # The loss-free maximum is the rate the search settled on (the @max row's rate); the
    # @max row itself is a longer run at that rate, whose loss is shown if it had any.
    for lbl, suffix, row in rows_of(runs, "sat1"):
        if suffix == "max":
            put(lbl, "sat1_pps", row["rate"])
            put(lbl, "sat1_ns", row["ns_per_packet"])
            put(lbl, "sat1_loss", row["loss_pct"])
    for lbl, suffix, row in rows_of(runs, "streams100"):
        put(lbl, "r100_ns", row["ns_per_packet"])
        put(lbl, "r100_loss", row["loss_pct"])
        put(lbl, "r100_p99", row["latency_p99_us"])
    for lbl, suffix, row in rows_of(runs, "sat100"):
        if suffix == "max":
            put(lbl, "sat100_pps", row["rate"])
            put(lbl, "sat100_loss", row["loss_pct"])
        elif suffix.endswith("x"):
            put(lbl, "over_offered", row["offered_pps"])
            put(lbl, "over_delivered", row["delivered_pps"])
            put(lbl, "over_alive", f'{row["streams_alive_after"]}/{row["streams"]}')
    # Memory per call at the largest sweep point.
    for name in sorted(runs, key=lambda n: int(re.findall(r"\d+", n)[0]) if n.startswith("streams") else -1):
        if name.startswith("streams"):
            for lbl, _, row in rows_of(runs, name.rsplit("-", 1)[0]):
                if row.get("mem_per_stream_bytes") is not None:
                    put(lbl, "mem", (row["mem_per_stream_bytes"], row["streams"]))
    return table


def relapse(loss):
    """A note when the longer run at the searched maximum was not loss-free after all."""
    return "" if loss is None or loss <= 0.1 else f", then {loss:.1f} % loss over the full run"


def fmt(v, spec="{:,.0f}"):
    return "–" if v is None else spec.format(v)


def markdown(runs, table):
    order = sorted(table, key=lambda l: (not l.startswith("sluice"), l))
    lines = [
        "| forwarder | 1 stream, saturation | 100 streams at 100k pkt/s | loss | p99 | 100 streams, saturation | overload: offered → delivered, alive after | memory per call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lbl in order:
        t = table[lbl]
        sat1 = t.get("sat1_pps")
        sat1_s = "–" if sat1 is None else f"{sat1:,.0f} pkt/s ({fmt(t.get('sat1_ns'))} ns/pkt){relapse(t.get('sat1_loss'))}"
        sat100_s = "–" if t.get("sat100_pps") is None else f"{t['sat100_pps']:,.0f} pkt/s{relapse(t.get('sat100_loss'))}"
        over = "–"
        if "over_delivered" in t:
            pct = ""
            if t.get("sat100_pps"):
                pct = f" ({100 * t['over_delivered'] / t['sat100_pps']:.0f} % of max)"
            over = f"{t['over_offered']:,.0f} → {t['over_delivered']:,.0f}{pct}, {t['over_alive']}"
        mem = "–"
        if "mem" in t:
            b, n = t["mem"]
            mem = f"{b / 1024:.1f} KiB ({n} calls)"
        lines.append(
            f"| {lbl} | {sat1_s} | {fmt(t.get('r100_ns'))} ns/pkt | {fmt(t.get('r100_loss'), '{:.3f} %')} "
            f"| {fmt(t.get('r100_p99'), '{:,.0f} µs')} | {sat100_s} | {over} | {mem} |"
        )

    def ratio(a, b, key):
        x, y = table.get(a, {}).get(key), table.get(b, {}).get(key)
        return None if not x or not y else x / y

    # The kernel baseline is whichever reflector (recvmmsg or io_uring) spent less per packet.
    reflectors = [l for l in table if re.fullmatch(r"reflector(-\w+)?", l) and table[l].get("r100_ns")]
    reflector = min(reflectors, key=lambda l: table[l]["r100_ns"], default="reflector")

    notes = []
    for a in [l for l in order if l.startswith("sluice")]:
        for b, key, what in [
            ("rtpengine", "r100_ns", "CPU per packet, 100 streams at 100k pkt/s (target ≤ 0.5)"),
            (reflector, "r100_ns", "CPU per packet, 100 streams at 100k pkt/s (target ≤ 1.0; the lower of the reflectors)"),
            ("rtpengine", "sat100_pps", "loss-free throughput, 100 streams (target ≥ 1.6)"),
        ]:
            r = ratio(a, b, key)
            if r is not None:
                notes.append(f"- {a} / {b}: {r:.2f}× {what}")
        t = table.get(a, {})
        if t.get("over_delivered") and t.get("sat100_pps"):
            notes.append(
                f"- {a} under overload delivered {100 * t['over_delivered'] / t['sat100_pps']:.0f} % "
                f"of its loss-free maximum (target ≥ 90 %), streams alive afterwards {t['over_alive']}"
            )
    sweep = sweep_points(runs)
    for lbl, pts in sweep.items():
        d = dict(pts)
        if 100 in d and d[100] and len(pts) > 1:
            n, ns = max(pts)
            if ns and n != 100:
                notes.append(f"- {lbl}: {n} streams cost {ns / d[100]:.2f}× the CPU per packet of 100 streams (target ≤ 1.10)")
    # The same load with Sluice's rounds bounded like the io_uring reflector's (2 ms), both
    # measured in one run: what the default's shorter rounds (lower latency) cost.
    like = {r["target"]: r for r in runs.get("rounds2ms-uring", {}).get("runs", [])}
    s, r = like.get("sluice", {}), like.get("reflector-uring", {})
    if s.get("ns_per_packet") and r.get("ns_per_packet"):
        notes.append(
            f"- sluice (uring) with 2 ms rounds (`--batch-wait-us 2000`) / reflector-uring (2 ms), in one run: "
            f"{s['ns_per_packet'] / r['ns_per_packet']:.2f}× CPU per packet ({s['ns_per_packet']:,.0f} vs "
            f"{r['ns_per_packet']:,.0f} ns), p99 {fmt(s.get('latency_p99_us'), '{:,.0f} µs')} vs "
            f"{fmt(r.get('latency_p99_us'), '{:,.0f} µs')}"
        )
    fan = runs.get("fanout64-uring", {}).get("runs", [])
    refl = runs.get("fanout64-reflector", {}).get("runs", [])
    if fan and refl and fan[0].get("ns_per_packet") and refl[0].get("ns_per_packet"):
        r = fan[0]["ns_per_packet"] / refl[0]["ns_per_packet"]
        notes.append(
            f"- fanout 1→64: {fan[0]['ns_per_packet']:,.0f} ns per egress packet, {r:.2f}× the reflector's "
            f"{refl[0]['ns_per_packet']:,.0f} ns/pkt at the same 100k pkt/s (target ≤ 0.8)"
        )
    churn = runs.get("churn-uring")
    if churn:
        rate = churn.get("pairs_per_s") or churn.get("churn", {}).get("pairs_per_s")
        if rate:
            notes.append(f"- control plane: {rate:,.0f} session create+destroy per second (target ≥ 5,000)")
    machine = next(iter(runs.values()), {}).get("machine", {})
    head = f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, kernel {machine.get('kernel', '?')}; loopback, 172-byte RTP, forwarder on cpu 0, loadgen on cpu 1."
    return "\n".join([head, "", *lines, "", *notes]) + "\n"


def sweep_points(runs):
    """label -> [(streams, ns/pkt)] from the streamsN-<backend> runs."""
    pts = {}
    for name, doc in runs.items():
        m = re.fullmatch(r"streams(\d+)-(\w+)", name)
        if not m:
            continue
        for row in doc.get("runs", []):
            lbl = label(row["target"], m.group(2))
            pts.setdefault(lbl, []).append((int(m.group(1)), row.get("ns_per_packet")))
    return {k: sorted(v) for k, v in pts.items()}


def plot(runs, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare.py: matplotlib is not importable: no plot", file=sys.stderr)
        return False
    pts = sweep_points(runs)
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    every = sorted(ns / 1000 for v in pts.values() for _, ns in v if ns)
    # A forwarder that nearly stopped delivering has a huge CPU per delivered packet: such
    # points are drawn at the top edge, with their value written beside them.
    top = 2.0 * every[len(every) // 2]
    for lbl in sorted(pts, key=lambda l: (not l.startswith("sluice"), l)):
        xs = [n for n, ns in pts[lbl] if ns]
        ys = [ns / 1000 for n, ns in pts[lbl] if ns]
        line = ax.plot(xs, [min(y, top) for y in ys], marker="o", label=lbl)[0]
        for x, y in zip(xs, ys):
            if y > top:
                ax.annotate(f"{y:.0f} µs ↑", (x, top), textcoords="offset points", xytext=(6, -12),
                            color=line.get_color(), fontsize=8)
    ax.set_ylim(0, top * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("concurrent streams (100k pkt/s in total)")
    ax.set_ylabel("forwarder CPU per packet (µs)")
    ax.grid(True, which="both", alpha=0.3)
    machine = next(iter(runs.values()), {}).get("machine", {})
    ax.set_title(f"CPU per forwarded packet — {machine.get('cpu_model', '')}, {machine.get('cores', '?')} cores", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = load(out)
    if not runs:
        sys.exit(f"compare.py: no results in {out}")
    md = markdown(runs, collect(runs))
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md)
    print(md)
    png = os.path.join(out, "streams.png")
    if plot(runs, png):
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
