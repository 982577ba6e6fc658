//! deploy/ cannot drift from the code: the Grafana dashboard queries only metric families that
//! `/metrics` exports, and the systemd unit grants the capabilities steering and raw sending
//! need.

use serde_json::Value;
use sluice_control::metrics::{ApiCounters, BusyWindow, ClusterCounters, Snapshot, render};

fn deploy_file(name: &str) -> String {
    let path = format!("{}/../deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Every `sluice_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_exported_families_only() {
    let dash: Value =
        serde_json::from_str(&deploy_file("grafana-dashboard.json")).expect("valid JSON");
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    // One worker, so that its per-worker family has a series too.
    let snapshot = Snapshot {
        workers: vec![(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(2),
        )],
        ..Snapshot::default()
    };
    let exposition = render(
        &snapshot,
        &ApiCounters::default(),
        &BusyWindow::default(),
        &ClusterCounters::default(),
    )
    .expect("renders");
    let exported: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for q in &queries {
        for name in metric_names(q) {
            assert!(
                exported.contains(&name.as_str()),
                "{name} (in {q}) is not exported:\n{exposition}"
            );
        }
    }
}

#[test]
fn the_systemd_unit_grants_what_steering_and_raw_sending_need() {
    let unit = deploy_file("sluice.service");
    for needed in ["CAP_NET_ADMIN", "CAP_BPF", "CAP_NET_RAW", "LimitNOFILE="] {
        assert!(unit.contains(needed), "sluice.service lacks {needed}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let layer = sluice_control::config::Layer::from_toml(&deploy_file("sluice.toml"))
        .expect("valid TOML with known keys");
    let config = layer.resolve().expect("valid values");
    assert!(!config.drain_timeout.is_zero(), "SIGTERM drains");
}
