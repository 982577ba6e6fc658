//! Results: one row per measured target, printed as an aligned table or as JSON.

use std::time::Duration;

use serde_json::{Value, json};

use crate::procstat::Machine;
use crate::traffic::Outcome;

/// One measurement: a target under one load.
#[derive(Clone, Debug)]
pub struct Row {
    /// `sluice` or `reflector`.
    pub target: String,
    pub mode: String,
    /// Echo sessions, or listeners of the fanout.
    pub streams: usize,
    /// Requested packets per second (generator side).
    pub rate: u64,
    /// Packets expected back per packet sent.
    pub copies: u64,
    pub outcome: Outcome,
    /// CPU time the target spent during the window, when it could be read.
    pub cpu_ns: Option<u64>,
    /// Wall time of the CPU window.
    pub window: Duration,
    /// The target's CPU per thread name during the window, busiest first (sluice only).
    pub threads: Vec<(String, u64)>,
    /// Growth of the target's resident memory per stream while its sessions were created.
    pub mem_per_stream: Option<f64>,
    /// After an overload row: streams that still delivered in a gentle pass afterwards.
    pub alive: Option<usize>,
}

impl Row {
    /// Target CPU time per packet it forwarded (= per packet we received back).
    pub fn ns_per_packet(&self) -> Option<f64> {
        let cpu = self.cpu_ns?;
        (self.outcome.received > 0).then(|| cpu as f64 / self.outcome.received as f64)
    }

    /// Target CPU use over the window, in % of one core.
    pub fn cpu_pct(&self) -> Option<f64> {
        Some(100.0 * self.cpu_ns? as f64 / self.window.as_nanos().max(1) as f64)
    }

    pub fn to_json(&self) -> Value {
        let o = &self.outcome;
        let us = |ns: u64| ns as f64 / 1000.0;
        json!({
            "target": self.target,
            "mode": self.mode,
            "streams": self.streams,
            "rate": self.rate,
            "sent": o.sent,
            "send_failed": o.send_failed,
            "expected": o.expected(self.copies),
            "received": o.received,
            "stray": o.stray,
            "protect_failed": o.protect_failed,
            "unprotect_failed": o.unprotect_failed,
            "send_seconds": o.send_time.as_secs_f64(),
            "offered_pps": o.offered_pps(),
            "delivered_pps": o.delivered_pps(),
            "loss_pct": o.loss_pct(self.copies),
            "latency_p50_us": us(o.latency.quantile(0.50)),
            "latency_p99_us": us(o.latency.quantile(0.99)),
            "latency_max_us": us(o.latency.max()),
            "generator_cpu_ns": o.own_cpu_ns,
            "generator_limited": o.generator_limited(self.rate),
            "cpu_ns": self.cpu_ns,
            "cpu_pct": self.cpu_pct(),
            "ns_per_packet": self.ns_per_packet(),
            "packets_per_cpu_second": self.ns_per_packet().map(|ns| 1e9 / ns),
            "mem_per_stream_bytes": self.mem_per_stream,
            "streams_alive_after": self.alive,
            "threads_cpu_ns": self.threads.iter().map(|(n, ns)| json!({"name": n, "cpu_ns": ns})).collect::<Vec<_>>(),
        })
    }
}

const HEADERS: [&str; 11] = [
    "target",
    "mode",
    "streams",
    "offered/s",
    "delivered/s",
    "loss%",
    "p50 µs",
    "p99 µs",
    "cpu%",
    "ns/pkt",
    "pkt/cpu-s",
];

fn cells(r: &Row) -> [String; 11] {
    let o = &r.outcome;
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    [
        r.target.clone(),
        r.mode.clone(),
        r.streams.to_string(),
        format!("{:.0}", o.offered_pps()),
        format!("{:.0}", o.delivered_pps()),
        format!("{:.3}", o.loss_pct(r.copies)),
        format!("{:.1}", o.latency.quantile(0.50) as f64 / 1000.0),
        format!("{:.1}", o.latency.quantile(0.99) as f64 / 1000.0),
        opt(r.cpu_pct(), 1),
        opt(r.ns_per_packet(), 0),
        opt(r.ns_per_packet().map(|ns| 1e9 / ns), 0),
    ]
}

/// The rows as a table: text columns left-aligned, numbers right-aligned.
pub fn table(rows: &[Row]) -> String {
    let body: Vec<[String; 11]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i < 2 {
                s.push_str(c);
                s.push_str(&pad);
            } else {
                s.push_str(&pad);
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&HEADERS.map(String::from));
    for row in &body {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// "name 12.3%, name 0.4%": each thread's share of one core over the window.
pub fn threads_line(r: &Row) -> Option<String> {
    if r.threads.is_empty() {
        return None;
    }
    let window = r.window.as_nanos().max(1) as f64;
    let parts: Vec<String> = r
        .threads
        .iter()
        .map(|(name, ns)| format!("{name} {:.1}%", 100.0 * *ns as f64 / window))
        .collect();
    Some(format!("{} threads: {}", r.target, parts.join(", ")))
}

fn ns_of(rows: &[Row], target: &str) -> Option<f64> {
    rows.iter().find(|r| r.target == target)?.ns_per_packet()
}

/// `num`'s CPU per packet over `den`'s, when both rows have one.
pub fn ratio_of(rows: &[Row], num: &str, den: &str) -> Option<f64> {
    Some(ns_of(rows, num)? / ns_of(rows, den)?)
}

/// `more`'s CPU per packet minus `less`'s (e.g. what SRTP adds to plain echo).
pub fn extra_ns(rows: &[Row], more: &str, less: &str) -> Option<f64> {
    Some(ns_of(rows, more)? - ns_of(rows, less)?)
}

/// Sluice's CPU per packet over the reflector's, when both rows have one.
pub fn cpu_ratio(rows: &[Row]) -> Option<f64> {
    ratio_of(rows, "sluice", "reflector")
}

/// What `proxy` mode adds under the table: CPU-per-packet and loss-free-throughput ratios of
/// sluice against the other targets, memory per stream, and which streams survived overload.
pub fn proxy_lines(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for other in ["rtpengine", "reflector"] {
        // sluice / reflector is printed for every mode already.
        if other != "reflector"
            && let Some(r) = ratio_of(rows, "sluice", other)
        {
            out.push(format!("sluice / {other} CPU per packet: {r:.2}x"));
        }
        let max = |t: &str| {
            rows.iter()
                .find(|r| r.target == format!("{t}@max"))
                .map(|r| r.outcome.delivered_pps())
        };
        if let (Some(s), Some(o)) = (max("sluice"), max(other))
            && o > 0.0
        {
            out.push(format!(
                "sluice / {other} loss-free throughput: {:.2}x ({s:.0} vs {o:.0} pkt/s)",
                s / o
            ));
            if let Some(r) = ratio_of(rows, "sluice@max", &format!("{other}@max")) {
                out.push(format!(
                    "sluice / {other} CPU per packet at saturation: {r:.2}x"
                ));
            }
        }
    }
    for r in rows {
        // Each target's calls were set up once: report it on its first row only.
        let first = rows
            .iter()
            .find(|x| x.target.split('@').next() == r.target.split('@').next());
        if let Some(m) = r.mem_per_stream
            && first.is_some_and(|f| std::ptr::eq(f, r))
        {
            out.push(format!(
                "{}: resident memory grew {m:.0} B per call while {} calls were set up",
                r.target.split('@').next().unwrap_or(&r.target),
                r.streams
            ));
        }
        if let Some(alive) = r.alive {
            out.push(format!(
                "{}: offered {:.0} pkt/s, delivered {:.0}; afterwards {alive} of {} streams delivered",
                r.target,
                r.outcome.offered_pps(),
                r.outcome.delivered_pps(),
                r.streams
            ));
        }
    }
    out
}

pub fn machine_json(m: &Machine) -> Value {
    json!({"cpu_model": m.cpu_model, "cores": m.cores, "kernel": m.kernel, "loadavg_1min": m.loadavg})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, received: u64, cpu_ns: Option<u64>) -> Row {
        let mut outcome = Outcome {
            sent: 1000,
            received,
            send_time: Duration::from_secs(1),
            ..Outcome::default()
        };
        outcome.latency.record(20_000);
        Row {
            target: target.into(),
            mode: "echo".into(),
            streams: 10,
            rate: 1000,
            copies: 1,
            outcome,
            cpu_ns,
            window: Duration::from_secs(2),
            threads: vec![("w".into(), 1_000_000_000)],
            mem_per_stream: None,
            alive: None,
        }
    }

    #[test]
    fn derived_columns() {
        let r = row("sluice", 500, Some(1_000_000));
        assert_eq!(r.ns_per_packet(), Some(2000.0));
        assert_eq!(r.cpu_pct(), Some(0.05));
        assert_eq!(r.outcome.loss_pct(1), 50.0);
        assert_eq!(row("x", 0, Some(1)).ns_per_packet(), None);
        let rows = [r, row("reflector", 1000, Some(1_000_000))];
        assert_eq!(cpu_ratio(&rows), Some(2.0));
        assert_eq!(extra_ns(&rows, "sluice", "reflector"), Some(1000.0));
        assert_eq!(ratio_of(&rows, "sluice-srtp", "reflector"), None);
        assert_eq!(threads_line(&rows[0]).unwrap(), "sluice threads: w 50.0%");
        assert_eq!(rows[0].to_json()["ns_per_packet"], 2000.0);
    }

    #[test]
    fn table_columns_line_up() {
        let t = table(&[
            row("sluice", 1000, None),
            row("reflector", 1000, Some(5_000_000)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l.find("echo").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].ends_with('-') && lines[2].ends_with("200000"));
    }
}
