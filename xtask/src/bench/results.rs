//! Result records, their aggregation over rounds (median, spread, ratios) and `results.json`.
use std::collections::BTreeMap;

use serde::Serialize;

use super::stats;

/// One figure of `results.json`.
///
/// Schema (`results.json` = `{ "machine": .., "command": .., "records": [Record], "failures": [Failure] }`):
/// - `scenario`: `conn_rate` | `throughput_offload_on` | `throughput_offload_off` | `udp_nodeport` | `control_plane` | `footprint`
/// - `variant`: `direct` | `iptables-nft` | `iptables-legacy` | `nftables` | `skiff-socket` | `skiff-tc` | `skiff-xdp`
/// - `n`: number of Services (each with 10 endpoints); `placement`: where the measured Service sits in the rule set
/// - `metric`, `unit`, `value`: the median over `rounds` rounds; `spread`: (max - min) / median over the rounds
/// - `ratio_to_direct`, `ratio_to_iptables`, `ratio_to_iptables_legacy`: value / the same metric of `direct` /
///   `iptables-nft` / `iptables-legacy` at the same scenario, N and placement, from the same run (null when that
///   variant has no such figure, e.g. a replica over its programming time budget at large N)
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub scenario: String,
    pub variant: String,
    pub n: usize,
    pub placement: Option<String>,
    pub metric: String,
    pub unit: String,
    pub value: f64,
    pub spread: f64,
    pub rounds: usize,
    pub ratio_to_direct: Option<f64>,
    pub ratio_to_iptables: Option<f64>,
    pub ratio_to_iptables_legacy: Option<f64>,
}

/// A variant that could not be measured, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub scenario: String,
    pub variant: String,
    pub error: String,
}

/// A size a variant was not measured at, and why (e.g. its programming would not fit the time budget).
#[derive(Clone, Debug, Serialize)]
pub struct NotMeasured {
    pub variant: String,
    pub n: usize,
    pub reason: String,
}

/// The "Not measured" section of the report (empty when everything was measured).
pub fn not_measured_markdown(rows: &[NotMeasured]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut o = String::from("\n## Not measured\n\n| variant | N | reason |\n|---|---:|---|\n");
    for r in rows {
        o.push_str(&format!(
            "| {} | {} | not measured: {} |\n",
            r.variant,
            r.n,
            r.reason.replace('|', "/")
        ));
    }
    o
}

/// Key of a sample series: scenario, variant, N, placement, metric, unit.
pub type Key = (String, String, usize, Option<String>, String, String);

/// Collects per-round samples and failures.
#[derive(Default)]
pub struct Collector {
    pub samples: BTreeMap<Key, Vec<f64>>,
    pub failures: Vec<Failure>,
    pub not_measured: Vec<NotMeasured>,
}

impl Collector {
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per figure; a struct would only rename the args"
    )]
    pub fn add(
        &mut self,
        scenario: &str,
        variant: &str,
        n: usize,
        placement: Option<&str>,
        metric: &str,
        unit: &str,
        v: f64,
    ) {
        if v.is_finite() {
            let key = (
                scenario.into(),
                variant.into(),
                n,
                placement.map(Into::into),
                metric.into(),
                unit.into(),
            );
            self.samples.entry(key).or_default().push(v);
        }
    }

    /// Records that `variant` is not measured at `n` (no figure of it at that size follows).
    pub fn not_measured(&mut self, variant: &str, n: usize, reason: &str) {
        eprintln!("bench: {variant} not measured at N={n}: {reason}");
        self.not_measured.push(NotMeasured {
            variant: variant.into(),
            n,
            reason: reason.into(),
        });
    }

    pub fn fail(&mut self, scenario: &str, variant: &str, error: impl std::fmt::Display) {
        let mut error = format!("{error:#}");
        if error.len() > 600 {
            let cut = (0..=600).rev().find(|&i| error.is_char_boundary(i)).unwrap_or(0);
            error.truncate(cut);
            error.push_str(" …");
        }
        eprintln!("bench: {variant} failed in {scenario}: {error}");
        self.failures.push(Failure {
            scenario: scenario.into(),
            variant: variant.into(),
            error,
        });
    }

    /// Medians, spreads and ratios to direct and to the iptables (nft backend) replica.
    pub fn records(&self) -> Vec<Record> {
        let med: BTreeMap<&Key, f64> = self
            .samples
            .iter()
            .filter_map(|(k, v)| Some((k, stats::median(v)?)))
            .collect();
        let peer = |k: &Key, variant: &str| {
            let pk: Key = (
                k.0.clone(),
                variant.into(),
                k.2,
                k.3.clone(),
                k.4.clone(),
                k.5.clone(),
            );
            med.get(&pk).copied()
        };
        self.samples
            .iter()
            .filter_map(|(k, v)| {
                let value = *med.get(k)?;
                let ratio = |base: Option<f64>| base.filter(|b| *b != 0.0).map(|b| value / b);
                Some(Record {
                    scenario: k.0.clone(),
                    variant: k.1.clone(),
                    n: k.2,
                    placement: k.3.clone(),
                    metric: k.4.clone(),
                    unit: k.5.clone(),
                    value,
                    spread: stats::spread(v).unwrap_or(0.0),
                    rounds: v.len(),
                    ratio_to_direct: ratio(peer(k, "direct")),
                    ratio_to_iptables: ratio(peer(k, "iptables-nft")),
                    ratio_to_iptables_legacy: ratio(peer(k, "iptables-legacy")),
                })
            })
            .collect()
    }
}

/// Failures of a (scenario, variant) pair that has no figure at all (setup and programming failures always count).
pub fn fatal_failures<'a>(records: &[Record], failures: &'a [Failure]) -> Vec<&'a Failure> {
    let mut out: Vec<&Failure> = Vec::new();
    for f in failures {
        let measured = records
            .iter()
            .any(|r| r.scenario == f.scenario && r.variant == f.variant);
        let seen = out
            .iter()
            .any(|o| o.scenario == f.scenario && o.variant == f.variant);
        if !measured && !seen {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pairs_without_any_figure_are_fatal() {
        let mut c = Collector::default();
        c.add(
            "conn_rate",
            "skiff-tc",
            10,
            Some("last"),
            "conn_per_s",
            "1/s",
            5.0,
        );
        c.fail("conn_rate", "skiff-tc", "one trial timed out");
        c.fail("udp_nodeport", "skiff-xdp", "no packet reached the backend");
        c.fail("udp_nodeport", "skiff-xdp", "no packet reached the backend");
        c.fail("program", "nftables", "nft -f failed");
        let fatal = fatal_failures(&c.records(), &c.failures);
        let pairs: Vec<(&str, &str)> = fatal
            .iter()
            .map(|f| (f.scenario.as_str(), f.variant.as_str()))
            .collect();
        assert_eq!(pairs, [("udp_nodeport", "skiff-xdp"), ("program", "nftables")]);
    }

    #[test]
    fn ratios_come_from_the_same_scenario_n_and_metric() {
        let mut c = Collector::default();
        for v in [100.0, 110.0, 90.0] {
            c.add("conn_rate", "direct", 10, Some("last"), "conn_per_s", "1/s", v);
        }
        for v in [50.0, 50.0, 50.0] {
            c.add(
                "conn_rate",
                "iptables-nft",
                10,
                Some("last"),
                "conn_per_s",
                "1/s",
                v,
            );
        }
        c.add(
            "conn_rate",
            "skiff-tc",
            10,
            Some("last"),
            "conn_per_s",
            "1/s",
            95.0,
        );
        c.add(
            "conn_rate",
            "skiff-tc",
            100,
            Some("last"),
            "conn_per_s",
            "1/s",
            95.0,
        );
        c.add(
            "conn_rate",
            "skiff-tc",
            10,
            Some("last"),
            "bogus",
            "1/s",
            f64::NAN,
        );
        let r = c.records();
        assert_eq!(r.len(), 4, "NaN samples are dropped");
        let tc10 = r
            .iter()
            .find(|r| r.variant == "skiff-tc" && r.n == 10)
            .expect("tc at 10");
        assert_eq!(tc10.ratio_to_direct, Some(0.95));
        assert_eq!(tc10.ratio_to_iptables, Some(1.9));
        let tc100 = r
            .iter()
            .find(|r| r.variant == "skiff-tc" && r.n == 100)
            .expect("tc at 100");
        assert_eq!(tc100.ratio_to_direct, None);
        let d = r.iter().find(|r| r.variant == "direct").expect("direct");
        assert_eq!((d.value, d.rounds), (100.0, 3));
        assert!((d.spread - 0.2).abs() < 1e-9);
    }
}
