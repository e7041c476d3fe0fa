//! `report.md` and SVG plots from the aggregated records.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::results::{Failure, Record};

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// The Markdown report: one table per scenario, then failures.
pub fn markdown(records: &[Record], failures: &[Failure], header: &str) -> String {
    let mut o = format!("# Skiff benchmark\n\n{header}\n");
    let scenarios: BTreeSet<&str> = records.iter().map(|r| r.scenario.as_str()).collect();
    for s in scenarios {
        let _ = writeln!(o, "\n## {s}\n");
        o.push_str("| variant | N | placement | metric | value | unit | spread | ratio to direct | ratio to iptables-nft | ratio to iptables-legacy | rounds |\n");
        o.push_str("|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|\n");
        let mut rows: Vec<&Record> = records.iter().filter(|r| r.scenario == s).collect();
        rows.sort_by(|a, b| {
            (&a.metric, a.n, &a.placement, &a.variant).cmp(&(&b.metric, b.n, &b.placement, &b.variant))
        });
        for r in rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.2} | {} | {:.1}% | {} | {} | {} | {} |",
                r.variant,
                r.n,
                r.placement.as_deref().unwrap_or("–"),
                r.metric,
                r.value,
                r.unit,
                r.spread * 100.0,
                fmt_opt(r.ratio_to_direct),
                fmt_opt(r.ratio_to_iptables),
                fmt_opt(r.ratio_to_iptables_legacy),
                r.rounds
            );
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

/// Draws `metric` of `scenario` against N (log10 x axis), one line per variant (placement `last` only).
pub fn plot_vs_n(
    records: &[Record],
    scenario: &str,
    metric: &str,
    ratio: bool,
    path: &Path,
    title: &str,
) -> Result<()> {
    let pts = |v: &str| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = records
            .iter()
            .filter(|r| r.scenario == scenario && r.metric == metric && r.variant == v)
            .filter(|r| r.placement.as_deref().is_none_or(|p| p == "last"))
            .filter_map(|r| {
                Some((
                    (r.n as f64).log10(),
                    if ratio { r.ratio_to_direct? } else { r.value },
                ))
            })
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    let variants: BTreeSet<&str> = records.iter().map(|r| r.variant.as_str()).collect();
    let series: Vec<(&str, Vec<(f64, f64)>)> = variants
        .into_iter()
        .map(|v| (v, pts(v)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let (xmin, xmax) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold((f64::MAX, f64::MIN), |a, x| (a.0.min(x), a.1.max(x)));
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin - 0.1)..(xmax + 0.1).max(xmin + 0.2), 0.0..ymax.max(1e-9))
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("Services (log10)")
        .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
        .y_desc(if ratio {
            format!("{metric} / direct")
        } else {
            metric.to_string()
        })
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (v, p)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(*v)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(p.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(variant: &str, n: usize, value: f64) -> Record {
        Record {
            scenario: "conn_rate".into(),
            variant: variant.into(),
            n,
            placement: Some("last".into()),
            metric: "conn_per_s".into(),
            unit: "1/s".into(),
            value,
            spread: 0.05,
            rounds: 5,
            ratio_to_direct: Some(value / 100.0),
            ratio_to_iptables: None,
            ratio_to_iptables_legacy: None,
        }
    }

    #[test]
    fn markdown_has_a_row_per_record_and_failures() {
        let f = Failure {
            scenario: "program".into(),
            variant: "skiff-tc".into(),
            error: "agent a|b".into(),
        };
        let md = markdown(
            &[rec("direct", 10, 100.0), rec("nftables", 10, 80.0)],
            &[f],
            "run",
        );
        assert!(
            md.contains("| nftables | 10 | last | conn_per_s | 80.00 | 1/s | 5.0% | 0.80 | – | – | 5 |"),
            "{md}"
        );
        assert!(md.contains("| program | skiff-tc | agent a/b |"));
    }

    #[test]
    fn plot_writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("skb-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("x.svg");
        let recs = [
            rec("direct", 10, 100.0),
            rec("direct", 1000, 90.0),
            rec("nftables", 10, 80.0),
        ];
        plot_vs_n(&recs, "conn_rate", "conn_per_s", true, &p, "t").expect("plot");
        let svg = std::fs::read_to_string(&p).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("nftables"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
