//! BPF program run-time statistics (kernel.bpf_stats_enabled): enable for a scenario, sample per program.
use anyhow::{Context, Result};

use super::sh;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns bpf_stats on while it lives and restores the previous setting when dropped.
pub struct Enabled {
    before: String,
}

impl Enabled {
    pub fn new() -> Result<Self> {
        let before = std::fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        std::fs::write(SYSCTL, "1").with_context(|| format!("enabling {SYSCTL}"))?;
        Ok(Enabled { before })
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, self.before.trim());
    }
}

/// Cumulative run count and run time of one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// The id of the XDP program attached to `dev` in network namespace `ns`.
pub fn xdp_prog_id(ns: &str, dev: &str) -> Result<u32> {
    let out = sh::run("ip", &["-n", ns, "-j", "link", "show", "dev", dev])?;
    parse_xdp_id(&out).with_context(|| format!("no XDP program on {dev} in {ns}"))
}

fn parse_xdp_id(ip_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(ip_json).ok()?;
    let id = v.get(0)?.get("xdp")?.get("prog")?.get("id")?.as_u64()?;
    u32::try_from(id).ok()
}

/// Reads the run statistics of program `id` (zero when bpf_stats is off).
pub fn sample(id: u32) -> Result<Sample> {
    let out = sh::run("bpftool", &["-j", "prog", "show", "id", &id.to_string()])?;
    parse_sample(&out).with_context(|| format!("bpftool prog show id {id}: {out}"))
}

fn parse_sample(json: &str) -> Option<Sample> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("id")?;
    Some(Sample {
        run_cnt: v.get("run_cnt").and_then(|x| x.as_u64()).unwrap_or(0),
        run_time_ns: v.get("run_time_ns").and_then(|x| x.as_u64()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_link_xdp_and_bpftool_stats() {
        let ip = r#"[{"ifindex":3,"ifname":"up0","xdp":{"mode":1,"prog":{"id":812,"name":"skiff_xdp","tag":"ab"}}}]"#;
        assert_eq!(parse_xdp_id(ip), Some(812));
        assert_eq!(parse_xdp_id(r#"[{"ifindex":3,"ifname":"up0"}]"#), None);
        let prog = r#"{"id":812,"type":"xdp","name":"skiff_xdp","run_time_ns":123456,"run_cnt":1000}"#;
        assert_eq!(
            parse_sample(prog),
            Some(Sample {
                run_cnt: 1000,
                run_time_ns: 123456
            })
        );
        let off = r#"{"id":812,"type":"xdp","name":"skiff_xdp"}"#;
        assert_eq!(parse_sample(off).map(|s| s.run_cnt), Some(0));
    }
}
