//! Node capacity: the `--capacity cpu=2,memory=4Gi,pods=110` flag, with machine-derived defaults.
use std::collections::BTreeMap;

use crate::pods::quantity;

/// Resources a node advertises, as Kubernetes quantities (`cpu`, `memory`, `pods`, ...).
pub type Capacity = BTreeMap<String, String>;

/// Pods per node unless `--capacity` says otherwise (the kubelet's default).
pub const DEFAULT_MAX_PODS: u32 = 110;

/// A `--capacity` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("{0:?}: expected NAME=QUANTITY (for example cpu=2,memory=4Gi,pods=110)")]
    Syntax(String),
    #[error("{name}={value}: not a valid quantity")]
    Quantity { name: String, value: String },
}

/// Parses `cpu=2,memory=4Gi,pods=110` (every quantity is checked; names are taken as given).
pub fn parse(s: &str) -> Result<Capacity, CapacityError> {
    let mut out = Capacity::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| CapacityError::Syntax(item.to_string()))?;
        if quantity::parse(value).is_none_or(|q| q < 0.0) {
            return Err(CapacityError::Quantity {
                name: name.into(),
                value: value.into(),
            });
        }
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

/// What this machine has: CPUs, memory (from /proc/meminfo's MemTotal in kB) and the default pod count.
pub fn machine(cpus: usize, meminfo: &str) -> Capacity {
    let mut out = Capacity::new();
    out.insert("cpu".into(), cpus.max(1).to_string());
    if let Some(kb) = meminfo_kb(meminfo, "MemTotal") {
        out.insert("memory".into(), format!("{kb}Ki"));
    }
    out.insert("pods".into(), DEFAULT_MAX_PODS.to_string());
    out
}

/// A field of /proc/meminfo in kB.
pub fn meminfo_kb(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The machine's capacity with the flag's entries overriding it.
pub fn effective(machine: Capacity, flag: &Capacity) -> Capacity {
    let mut out = machine;
    out.extend(flag.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        let c = parse("cpu=2, memory=4Gi,pods=110").unwrap();
        assert_eq!(c["cpu"], "2");
        assert_eq!(c["memory"], "4Gi");
        assert_eq!(c["pods"], "110");
        assert_eq!(parse("").unwrap(), Capacity::new());
        assert!(matches!(parse("cpu"), Err(CapacityError::Syntax(_))));
        assert!(matches!(parse("cpu="), Err(CapacityError::Syntax(_))));
        assert!(matches!(
            parse("memory=lots"),
            Err(CapacityError::Quantity { .. })
        ));
    }

    #[test]
    fn machine_defaults_are_overridden_by_the_flag() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:        1000 kB\nMemAvailable:   2000 kB\n";
        let m = machine(2, meminfo);
        assert_eq!(m["memory"], "24000000Ki");
        assert_eq!(m["cpu"], "2");
        assert_eq!(meminfo_kb(meminfo, "MemAvailable"), Some(2000));
        assert_eq!(meminfo_kb(meminfo, "Mem"), None);
        let e = effective(m, &parse("cpu=4,pods=20").unwrap());
        assert_eq!(
            (e["cpu"].as_str(), e["pods"].as_str(), e["memory"].as_str()),
            ("4", "20", "24000000Ki")
        );
    }
}
