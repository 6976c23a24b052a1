//! The `--stats` objects and `docs/counters.md` list the same fields: a counter or field
//! added to a struct without its row in the document (or a row left after its field went)
//! fails here, and so does a schema version the document does not state.

use std::collections::BTreeSet;

use netstage_netback_user::{
    BackendStats, MetricsSnapshot, QueueMetricsSnapshot, StatsKind, VifMetricsSnapshot,
};
use netstage_netfront_user::FrontendStats;
use serde_json::Value;

/// `docs/counters.md`.
fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/counters.md");
    std::fs::read_to_string(path).unwrap()
}

/// The field names in the first column of the table under the heading `## {section}`.
fn documented(doc: &str, section: &str) -> BTreeSet<String> {
    let heading = format!("## {section}");
    let body = doc
        .split("\n## ")
        .find(|s| format!("## {s}").starts_with(&heading))
        .unwrap_or_else(|| panic!("docs/counters.md has no section {heading:?}"));
    body.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The keys of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// A backend's stats object with one vif of one queue.
fn backend_stats() -> Value {
    let counters = MetricsSnapshot::default();
    let stats = BackendStats {
        schema: netstage_netback_user::STATS_SCHEMA,
        kind: StatsKind::Final,
        time: 0.0,
        elapsed_s: 0.0,
        vifs: vec![VifMetricsSnapshot {
            domid: 1,
            devid: 0,
            counters,
            queues: vec![QueueMetricsSnapshot { index: 0, counters }],
        }],
        total: counters,
    };
    serde_json::to_value(stats).unwrap()
}

fn frontend_stats() -> Value {
    let stats = FrontendStats {
        schema: netstage_netfront_user::STATS_SCHEMA,
        kind: netstage_netfront_user::StatsKind::Stats,
        time: 0.0,
        elapsed_s: 0.0,
        domid: 1,
        devid: 0,
        design: "grant-copy".into(),
        queues: 1,
        counters: netstage_netfront_user::MetricsSnapshot::default(),
        queue_counters: vec![netstage_netfront_user::MetricsSnapshot::default()],
    };
    serde_json::to_value(stats).unwrap()
}

#[test]
fn every_backend_field_and_counter_is_documented() {
    let doc = document();
    let v = backend_stats();
    let vif = &v["vifs"][0];
    let queue = &vif["queues"][0];
    for (section, object) in [
        ("netback-user: the stats object", &v),
        ("netback-user: a vif object", vif),
        ("netback-user: a queue object", queue),
        ("netback-user: counters", &v["total"]),
        ("netback-user: counters", &vif["counters"]),
        ("netback-user: counters", &queue["counters"]),
    ] {
        assert_eq!(keys(object), documented(&doc, section), "{section}");
    }
    assert_eq!(v["kind"], "final");
}

#[test]
fn every_frontend_field_and_counter_is_documented() {
    let doc = document();
    let v = frontend_stats();
    for (section, object) in [
        ("netfront-user: the stats object", &v),
        ("netfront-user: counters", &v["counters"]),
    ] {
        assert_eq!(keys(object), documented(&doc, section), "{section}");
    }
    assert_eq!(v["kind"], "stats");
}

#[test]
fn the_document_states_each_schema_version() {
    let doc = document();
    for (end, version) in [
        ("netback-user", netstage_netback_user::STATS_SCHEMA),
        ("netfront-user", netstage_netfront_user::STATS_SCHEMA),
    ] {
        let row = format!("| `schema` | integer | the layout's version ({version}) |");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{end}: the stats object")))
            .unwrap();
        assert!(section.contains(&row), "{end}: {row}");
    }
}
