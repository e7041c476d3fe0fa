//! `report.md` of the apiserver bench: one table per scenario with a column per store backend.
use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::super::results::{Failure, Record};

/// What each scenario measures, printed under its heading.
fn about(scenario: &str) -> &'static str {
    match scenario {
        "creates" => {
            "N ConfigMaps, then N Pods, created by concurrent clients; rate over the wall time, latency per request."
        }
        "list" => {
            "Lists of a namespace holding N pods: full, paginated (limit=500, whole traversal), label selector \
             (a tenth of the pods), as a Table (`kubectl get`)."
        }
        "watch_fanout" => {
            "N watchers on the pods of one namespace; one pod updated M times, one at a time: time from the \
             update's acknowledgement to the last watcher receiving it; events delivered must equal N*M."
        }
        "scheduler" => {
            "N unbound pods created by concurrent clients onto 100 fake Ready nodes; from the first create to the last binding seen on a watch."
        }
        "footprint" => {
            "Resident memory of skiff-control after each phase (`rss_after_schedule`: the scheduler phase's own server)."
        }
        _ => "",
    }
}

/// Scenarios and metrics in report order (others follow in the order of the records).
const ORDER: &[&str] = &[
    "creates",
    "list",
    "watch_fanout",
    "scheduler",
    "footprint",
    "configmap_creates_per_s",
    "configmap_create_p50",
    "configmap_create_p99",
    "pod_creates_per_s",
    "pod_create_p50",
    "pod_create_p99",
    "list_full_p50",
    "list_full_p99",
    "list_paginated_p50",
    "list_paginated_p99",
    "list_selector_p50",
    "list_selector_p99",
    "list_table_p50",
    "list_table_p99",
    "fanout_p50",
    "fanout_p99",
    "fanout_max",
    "events_delivered",
    "events_expected",
    "pods_bound_per_s",
    "time_to_bind_all",
    "creates_per_s",
    "rss_after_start",
    "rss_after_creates",
    "rss_after_lists",
    "rss_after_watch",
    "rss_after_schedule",
];

fn rank(name: &str) -> usize {
    ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len())
}

/// The Markdown report: header, one table per scenario (rows: N and metric; columns: variants), failures.
pub fn markdown(records: &[Record], failures: &[Failure], header: &str) -> String {
    let mut o = format!("# skiff-control API benchmark\n\n{header}\n");
    let variants: Vec<&str> = {
        let mut v: Vec<&str> = records
            .iter()
            .map(|r| r.variant.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The embedded store first: it is the default.
        v.sort_by_key(|x| (*x != "embedded", *x));
        v
    };
    let mut scenarios: Vec<&str> = Vec::new();
    for r in records {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    scenarios.sort_by_key(|s| rank(s));
    for s in scenarios {
        let _ = writeln!(o, "\n## {s}\n\n{}\n", about(s));
        let _ = write!(o, "| N | metric | unit |");
        for v in &variants {
            let _ = write!(o, " {v} |");
        }
        o.push_str("\n|---:|---|---|");
        o.push_str(&"---:|".repeat(variants.len()));
        o.push('\n');
        let mut rows: Vec<(usize, &str, &str)> = Vec::new();
        for r in records.iter().filter(|r| r.scenario == s) {
            let row = (r.n, r.metric.as_str(), r.unit.as_str());
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
        rows.sort_by_key(|(n, metric, _)| (*n, rank(metric)));
        for (n, metric, unit) in rows {
            let _ = write!(o, "| {n} | {metric} | {unit} |");
            for v in &variants {
                let cell = records
                    .iter()
                    .find(|r| r.scenario == s && r.n == n && r.metric == metric && r.variant == *v)
                    .map(cell)
                    .unwrap_or_else(|| "–".into());
                let _ = write!(o, " {cell} |");
            }
            o.push('\n');
        }
    }
    if !failures.is_empty() {
        o.push_str("\n## Failures\n\n| scenario | variant | error |\n|---|---|---|\n");
        for f in failures {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                f.scenario,
                f.variant,
                f.error.replace('|', "/").replace('\n', " ")
            );
        }
    }
    o
}

/// A value with its spread over rounds ((max - min) / median) when there was more than one.
fn cell(r: &Record) -> String {
    let digits = if r.value.abs() >= 100.0 {
        0
    } else if r.value.abs() >= 10.0 {
        1
    } else {
        2
    };
    if r.rounds > 1 {
        format!("{:.digits$} ({:.0}%)", r.value, r.spread * 100.0)
    } else {
        format!("{:.digits$}", r.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(variant: &str, metric: &str, value: f64, rounds: usize) -> Record {
        Record {
            scenario: "list".into(),
            variant: variant.into(),
            n: 10_000,
            placement: None,
            metric: metric.into(),
            unit: "ms".into(),
            value,
            spread: 0.1,
            rounds,
            ratio_to_direct: None,
            ratio_to_iptables: None,
            ratio_to_iptables_legacy: None,
        }
    }

    #[test]
    fn one_row_per_metric_and_a_column_per_store() {
        let records = [
            rec("etcd", "list_full_p50", 212.4, 3),
            rec("embedded", "list_full_p50", 95.25, 3),
            rec("embedded", "list_table_p50", 7.5, 1),
            rec("embedded", "list_full_p99", 120.0, 3),
        ];
        let f = Failure {
            scenario: "watch_fanout".into(),
            variant: "etcd".into(),
            error: "lost|events".into(),
        };
        let md = markdown(&records, &[f], "run");
        assert!(md.contains("| N | metric | unit | embedded | etcd |"), "{md}");
        assert!(
            md.contains("| 10000 | list_full_p50 | ms | 95.2 (10%) | 212 (10%) |"),
            "{md}"
        );
        assert!(md.contains("| 10000 | list_table_p50 | ms | 7.50 | – |"), "{md}");
        assert!(md.contains("| watch_fanout | etcd | lost/events |"), "{md}");
        let p50 = md.find("list_full_p50").unwrap();
        assert!(p50 < md.find("list_full_p99").unwrap() && p50 < md.find("list_table_p50").unwrap());
    }
}
