//! `skiff-agent inspect ...`: readable tables of a node's pinned maps (no programs loaded, no agent needed).
use std::collections::{BTreeMap, BTreeSet};

use skiff_common::{
    AffinityKey, AffinityValue, CtKey, CtValue, SCOPE_EXTERNAL, ct_flags, ct_kind, svc_flags,
};

use super::{
    explain::{FlowQuery, explain, service_flags},
    maps::{Fill, FlowMaps, MapsError, ServiceMaps, fill_levels, fmt_service_key},
    names::Names,
    pins::PinDir,
    sys::monotonic_ns,
    table::{Table, addr_port, human_ns, proto_name},
};
use crate::proxy::model::MapContents;

/// What to show.
#[derive(Clone, Debug)]
pub enum What {
    Services,
    Backends,
    Conntrack,
    Affinity,
    /// Fill level of every map (pressure).
    Maps,
    Flow(FlowQuery),
}

/// Reads the pinned maps of `pin` and renders `what`.
pub fn inspect(pin: &PinDir, what: &What) -> Result<String, MapsError> {
    let svc = ServiceMaps::open(pin)?;
    let contents = svc.read_contents()?;
    let names = Names::load(&pin.names_file());
    let now = monotonic_ns();
    Ok(match what {
        What::Services => render_services(&contents, &names),
        What::Backends => render_backends(&contents, &names),
        What::Conntrack => render_conntrack(&FlowMaps::open(pin)?.conntrack_entries(), &contents, now),
        What::Affinity => render_affinity(&FlowMaps::open(pin)?.affinity_entries(), &contents, &names, now),
        What::Maps => render_maps(&fill_levels(pin)?, possible_cpus()),
        What::Flow(q) => {
            let flows = FlowMaps::open(pin)?;
            explain(
                q,
                &contents,
                &names,
                |k| flows.conntrack.get(k, 0).ok(),
                |k| flows.affinity.get(k, 0).ok(),
                now,
            )
            .join("\n")
                + "\n"
        }
    })
}

/// Distinct backends of a service's table (ready + terminating slots), in slot order.
fn service_backends(c: &MapContents, table_id: u32, slots: u32) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let range = c.slots.range(
        skiff_common::SlotKey { table_id, slot: 0 }..=skiff_common::SlotKey {
            table_id,
            slot: slots.saturating_sub(1),
        },
    );
    for (_, &id) in range.take_while(|_| slots > 0) {
        if seen.insert(id) {
            out.push(id);
        }
    }
    out
}

/// Backend id -> service names (or frontends) whose tables use it.
fn users_of_backends(c: &MapContents, names: &Names) -> BTreeMap<u32, BTreeSet<String>> {
    let mut users: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for (k, v) in &c.services {
        let label = names
            .get(k)
            .map(str::to_string)
            .unwrap_or_else(|| fmt_service_key(k));
        for id in service_backends(c, v.table_id, v.ready_count + v.terminating_count) {
            users.entry(id).or_default().insert(label.clone());
        }
    }
    users
}

fn backend_addr(c: &MapContents, id: u32) -> String {
    c.backends
        .get(&id)
        .map(|b| addr_port(b.addr_be, b.port_be))
        .unwrap_or_else(|| format!("#{id}?"))
}

/// The services table.
pub fn render_services(c: &MapContents, names: &Names) -> String {
    let mut t = Table::new(&[
        "FRONTEND", "SCOPE", "FLAGS", "READY", "TERM", "AFFINITY", "REVNAT", "BACKENDS", "SERVICE",
    ]);
    for (k, v) in &c.services {
        let slots = v.ready_count + v.terminating_count;
        let ids = service_backends(c, v.table_id, slots);
        let mut backends: Vec<String> = ids.iter().take(4).map(|&id| backend_addr(c, id)).collect();
        if ids.len() > 4 {
            backends.push(format!("+{} more", ids.len() - 4));
        }
        let (ready, term) = if v.flags & svc_flags::MAGLEV != 0 {
            (format!("{} (maglev)", ids.len()), "-".to_string())
        } else {
            (v.ready_count.to_string(), v.terminating_count.to_string())
        };
        t.row(vec![
            format!(
                "{}:{}/{}",
                std::net::Ipv4Addr::from(u32::from_be(k.addr_be)),
                u16::from_be(k.port_be),
                proto_name(k.proto)
            ),
            if k.scope == SCOPE_EXTERNAL {
                "external".into()
            } else {
                "internal".into()
            },
            service_flags(v.flags),
            ready,
            term,
            if v.affinity_timeout_s > 0 {
                format!("{}s", v.affinity_timeout_s)
            } else {
                "-".into()
            },
            v.rev_nat_id.to_string(),
            if backends.is_empty() {
                "(none: rejected)".into()
            } else {
                backends.join(",")
            },
            names.get(k).unwrap_or("-").to_string(),
        ]);
    }
    format!("{}{} service entries\n", t.render(), t.len())
}

/// The backends table.
pub fn render_backends(c: &MapContents, names: &Names) -> String {
    let users = users_of_backends(c, names);
    let mut t = Table::new(&["ID", "ADDRESS", "PROTO", "LOCAL", "SERVICES"]);
    for (id, b) in &c.backends {
        let svcs = users
            .get(id)
            .map(|s| s.iter().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            id.to_string(),
            addr_port(b.addr_be, b.port_be),
            proto_name(b.proto),
            if b.flags & skiff_common::backend_flags::LOCAL != 0 {
                "yes".into()
            } else {
                "no".into()
            },
            svcs,
        ]);
    }
    format!("{}{} backends\n", t.render(), t.len())
}

/// Fill at or above which a map is reported as under pressure.
const PRESSURE_PERCENT: f64 = 90.0;

/// What a full map means for traffic, for the pressure lines.
fn full_means(map: &str) -> &'static str {
    match map {
        "conntrack" => {
            "LRU: new flows evict the least recently used entries; an idle flow that lost them is selected anew"
        }
        "affinity" | "sock_rev_nat" => "LRU: the least recently used entries are evicted",
        _ => "Services that do not fit are refused (skiff_services_refused, Events)",
    }
}

/// The kernel's CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-1` or `0-3,8`); 1 if it cannot be read.
fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or(1)
}

/// Counts the CPUs of a kernel CPU list.
fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Entries at which an LRU map is as full as it gets: the kernel keeps up to `clamp(max / cpus / 2, 1, 128)` free
/// entries per CPU and evicts a batch when a CPU runs out, so a thrashing LRU map holds between this and `max`.
pub fn lru_full_at(max: u64, cpus: u32) -> u64 {
    let cpus = u64::from(cpus.max(1));
    let per_cpu = (max / cpus / 2).clamp(1, 128);
    max.saturating_sub(per_cpu * cpus)
}

/// The fill level of every map, and a pressure line for each one at or above `PRESSURE_PERCENT` (an LRU map: at
/// `lru_full_at`).
pub fn render_maps(fills: &[Fill], cpus: u32) -> String {
    let mut t = Table::new(&["MAP", "ENTRIES", "MAX", "FILL"]);
    let mut pressure = Vec::new();
    for f in fills {
        let pct = if f.max_entries == 0 {
            0.0
        } else {
            f.entries as f64 * 100.0 / f.max_entries as f64
        };
        t.row(vec![
            f.map.to_string(),
            f.entries.to_string(),
            f.max_entries.to_string(),
            format!("{pct:.1}%"),
        ]);
        let line = if f.lru {
            let full_at = lru_full_at(f.max_entries, cpus);
            (f.max_entries > 0 && f.entries >= full_at).then(|| {
                format!(
                    "full ({}/{}; an LRU map keeps up to {} entries free)",
                    f.entries,
                    f.max_entries,
                    f.max_entries - full_at
                )
            })
        } else {
            (pct >= PRESSURE_PERCENT).then(|| {
                let state = if f.entries >= f.max_entries {
                    "full"
                } else {
                    "nearly full"
                };
                format!("{state} ({}/{})", f.entries, f.max_entries)
            })
        };
        if let Some(line) = line {
            pressure.push(format!("pressure: {} {line}: {}\n", f.map, full_means(f.map)));
        }
    }
    let mut out = t.render();
    if pressure.is_empty() {
        out.push_str("pressure: none\n");
    } else {
        out.extend(pressure);
    }
    out
}

fn ct_kind_name(k: u8) -> &'static str {
    match k {
        ct_kind::SERVICE => "service",
        ct_kind::REPLY => "reply",
        ct_kind::SNAT_REPLY => "snat-reply",
        _ => "?",
    }
}

fn ct_flags_str(f: u16) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (ct_flags::CLOSING, "closing"),
        (ct_flags::SNAT, "snat"),
        (ct_flags::HAIRPIN, "hairpin"),
    ] {
        if f & bit != 0 {
            v.push(name);
        }
    }
    if v.is_empty() { "-".into() } else { v.join(",") }
}

/// The conntrack table, newest first.
pub fn render_conntrack(entries: &[(CtKey, CtValue)], c: &MapContents, now_ns: u64) -> String {
    let mut sorted: Vec<&(CtKey, CtValue)> = entries.iter().collect();
    sorted.sort_by_key(|(k, v)| (std::cmp::Reverse(v.last_seen_ns), *k));
    let mut t = Table::new(&[
        "KIND",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "BACKEND",
        "NAT",
        "FLAGS",
        "IDLE",
    ]);
    for (k, v) in sorted {
        let nat = if v.flags & (ct_flags::SNAT | ct_flags::HAIRPIN) != 0 || k.kind == ct_kind::SNAT_REPLY {
            addr_port(v.nat_addr_be, v.nat_port_be)
        } else {
            "-".into()
        };
        t.row(vec![
            ct_kind_name(k.kind).into(),
            proto_name(k.proto),
            addr_port(k.saddr_be, k.sport_be),
            addr_port(k.daddr_be, k.dport_be),
            format!("#{} {}", v.backend_id, backend_addr(c, v.backend_id)),
            nat,
            ct_flags_str(v.flags),
            human_ns(now_ns.saturating_sub(v.last_seen_ns)),
        ]);
    }
    format!("{}{} conntrack entries\n", t.render(), t.len())
}

/// The session-affinity table.
pub fn render_affinity(
    entries: &[(AffinityKey, AffinityValue)],
    c: &MapContents,
    names: &Names,
    now_ns: u64,
) -> String {
    let by_rev_nat: BTreeMap<u16, String> = c
        .services
        .iter()
        .map(|(k, v)| {
            (
                v.rev_nat_id,
                names
                    .get(k)
                    .map(str::to_string)
                    .unwrap_or_else(|| fmt_service_key(k)),
            )
        })
        .collect();
    let mut t = Table::new(&["CLIENT", "SERVICE", "BACKEND", "IDLE"]);
    for (k, v) in entries {
        t.row(vec![
            std::net::Ipv4Addr::from(u32::from_be(k.client_addr_be)).to_string(),
            by_rev_nat
                .get(&k.rev_nat_id)
                .cloned()
                .unwrap_or_else(|| format!("rev-nat {}", k.rev_nat_id)),
            format!("#{} {}", v.backend_id, backend_addr(c, v.backend_id)),
            human_ns(now_ns.saturating_sub(v.last_used_ns)),
        ]);
    }
    format!("{}{} affinity entries\n", t.render(), t.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_common::{Backend, PROTO_TCP, SCOPE_INTERNAL, ServiceKey, ServiceValue, SlotKey};
    use std::net::Ipv4Addr;

    fn be(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a)).to_be()
    }

    fn sample() -> (MapContents, Names) {
        let mut c = MapContents::default();
        let k = ServiceKey {
            addr_be: be([10, 96, 0, 1]),
            port_be: 443u16.to_be(),
            proto: PROTO_TCP,
            scope: SCOPE_INTERNAL,
        };
        c.services.insert(
            k,
            ServiceValue {
                ready_count: 2,
                terminating_count: 0,
                table_id: 1,
                affinity_timeout_s: 0,
                rev_nat_id: 1,
                flags: 0,
            },
        );
        let empty = ServiceKey {
            addr_be: be([10, 96, 0, 2]),
            ..k
        };
        c.services.insert(
            empty,
            ServiceValue {
                table_id: 2,
                rev_nat_id: 2,
                ..Default::default()
            },
        );
        for (id, last) in [(1u32, 5u8), (2, 6)] {
            c.backends.insert(
                id,
                Backend {
                    addr_be: be([10, 244, 0, last]),
                    port_be: 6443u16.to_be(),
                    proto: PROTO_TCP,
                    flags: 0,
                },
            );
            c.slots.insert(
                SlotKey {
                    table_id: 1,
                    slot: id - 1,
                },
                id,
            );
        }
        let mut n = Names::default();
        n.insert(&k, "default/kubernetes:https".into());
        (c, n)
    }

    #[test]
    fn services_table_shows_backends_and_names() {
        let (c, n) = sample();
        let out = render_services(&c, &n);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("FRONTEND"));
        assert!(lines[1].starts_with("10.96.0.1:443/tcp"), "{out}");
        assert!(lines[1].contains("10.244.0.5:6443,10.244.0.6:6443"), "{out}");
        assert!(lines[1].ends_with("default/kubernetes:https"), "{out}");
        assert!(lines[2].contains("(none: rejected)"), "{out}");
        assert_eq!(lines[3], "2 service entries");
    }

    #[test]
    fn backends_table_names_their_services() {
        let (c, n) = sample();
        let out = render_backends(&c, &n);
        assert!(
            out.lines().nth(1).unwrap().contains("default/kubernetes:https"),
            "{out}"
        );
        assert!(out.ends_with("2 backends\n"));
    }

    #[test]
    fn maps_view_shows_fill_and_pressure() {
        let f = |map, entries, max_entries| Fill {
            map,
            entries,
            max_entries,
            lru: false,
        };
        let lru = |map, entries, max_entries| Fill {
            lru: true,
            ..f(map, entries, max_entries)
        };
        let out = render_maps(
            &[
                f("services", 3, 64),
                f("slots", 256, 256),
                f("affinity", 95, 100),
                lru("conntrack", 130, 256),
            ],
            2,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("MAP"), "{out}");
        assert!(
            lines[1].starts_with("services") && lines[1].ends_with("4.7%"),
            "{out}"
        );
        assert!(lines[2].contains("256") && lines[2].ends_with("100.0%"), "{out}");
        assert!(
            out.contains("pressure: slots full (256/256): Services that do not fit"),
            "{out}"
        );
        assert!(
            out.contains("pressure: conntrack full (130/256; an LRU map keeps up to 128 entries free): LRU"),
            "{out}"
        );
        assert!(out.contains("pressure: affinity nearly full (95/100)"), "{out}");
        assert!(!out.contains("pressure: services"), "{out}");
        assert_eq!(
            render_maps(&[f("services", 1, 64), lru("conntrack", 100, 256)], 2)
                .lines()
                .last(),
            Some("pressure: none")
        );
    }

    #[test]
    fn lru_fullness_follows_the_kernels_per_cpu_free_lists() {
        assert_eq!(lru_full_at(256, 2), 128);
        assert_eq!(lru_full_at(262_144, 2), 262_144 - 256);
        assert_eq!(lru_full_at(4, 8), 0);
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8"), Some(5));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn conntrack_table_is_newest_first() {
        let (c, _) = sample();
        let e = |sport: u16, seen: u64| {
            (
                CtKey {
                    saddr_be: be([10, 244, 1, 1]),
                    daddr_be: be([10, 96, 0, 1]),
                    sport_be: sport.to_be(),
                    dport_be: 443u16.to_be(),
                    proto: PROTO_TCP,
                    kind: ct_kind::SERVICE,
                    _pad: 0,
                },
                CtValue {
                    last_seen_ns: seen,
                    backend_id: 2,
                    ..Default::default()
                },
            )
        };
        let out = render_conntrack(
            &[e(1000, 1_000_000_000), e(2000, 9_000_000_000)],
            &c,
            10_000_000_000,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("10.244.1.1:2000") && lines[1].ends_with("1s"),
            "{out}"
        );
        assert!(
            lines[2].contains("10.244.1.1:1000") && lines[2].ends_with("9s"),
            "{out}"
        );
        assert!(lines[1].contains("#2 10.244.0.6:6443"), "{out}");
    }
}
