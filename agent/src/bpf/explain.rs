//! `inspect flow`: which service entry a flow matches, and which backend it has or would get, and why (pure).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use skiff_common::{
    AffinityKey, AffinityValue, CtKey, CtValue, MAGLEV_TABLE_SIZE, SCOPE_EXTERNAL, SCOPE_INTERNAL,
    ServiceKey, ServiceValue, SlotKey, ct_kind, svc_flags,
};

use super::{
    maps::fmt_service_key,
    names::Names,
    table::{addr_port, human_ns, proto_name},
};
use crate::proxy::model::MapContents;

/// The flow to explain, as the client sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
}

pub use skiff_common::flow_hash;

fn be(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

fn backend_str(c: &MapContents, id: u32) -> String {
    match c.backends.get(&id) {
        Some(b) => format!("#{id} {}", addr_port(b.addr_be, b.port_be)),
        None => format!("#{id} (missing from the backends map!)"),
    }
}

fn flags_str(flags: u16) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (svc_flags::MAGLEV, "maglev"),
        (svc_flags::NODEPORT, "nodeport"),
        (svc_flags::EXTERNAL_IP, "external-ip"),
        (svc_flags::LOCAL_ONLY, "local-only"),
    ] {
        if flags & bit != 0 {
            v.push(name);
        }
    }
    if v.is_empty() { "-".into() } else { v.join(",") }
}

/// Service flags as a short comma list (`-` when none).
pub fn service_flags(flags: u16) -> String {
    flags_str(flags)
}

/// Backend ids in slots `[from, to)` of a table, with how many slots each has.
fn slot_shares(c: &MapContents, table_id: u32, from: u32, to: u32) -> BTreeMap<u32, u32> {
    let mut shares = BTreeMap::new();
    for slot in from..to {
        if let Some(&id) = c.slots.get(&SlotKey { table_id, slot }) {
            *shares.entry(id).or_insert(0) += 1;
        }
    }
    shares
}

/// Explains `q` against the map contents, conntrack and affinity lookups, at `now_ns` (BPF clock).
pub fn explain(
    q: &FlowQuery,
    c: &MapContents,
    names: &Names,
    ct: impl Fn(&CtKey) -> Option<CtValue>,
    affinity: impl Fn(&AffinityKey) -> Option<AffinityValue>,
    now_ns: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let proto = proto_name(q.proto);
    let matches: Vec<(ServiceKey, ServiceValue)> = [SCOPE_INTERNAL, SCOPE_EXTERNAL]
        .iter()
        .filter_map(|&scope| {
            let k = ServiceKey {
                addr_be: be(*q.dst.ip()),
                port_be: q.dst.port().to_be(),
                proto: q.proto,
                scope,
            };
            c.services.get(&k).map(|v| (k, *v))
        })
        .collect();
    if matches.is_empty() {
        out.push(format!(
            "no service entry for {}/{proto}: Skiff does not load-balance this flow (it is routed as is)",
            q.dst
        ));
        return out;
    }
    for (k, v) in &matches {
        let scope = if k.scope == SCOPE_EXTERNAL {
            "external (seen by XDP on the uplink: traffic from outside the cluster)"
        } else {
            "internal (seen by the socket and TC hooks: traffic from pods and the host)"
        };
        out.push(format!(
            "service entry {} [{}] scope {scope}",
            fmt_service_key(k),
            names.get(k).unwrap_or("unknown service")
        ));
        out.push(format!(
            "  ready {} terminating {} table {} rev-nat {} flags {} affinity {}",
            v.ready_count,
            v.terminating_count,
            v.table_id,
            v.rev_nat_id,
            flags_str(v.flags),
            if v.affinity_timeout_s > 0 {
                format!("ClientIP {}s", v.affinity_timeout_s)
            } else {
                "none".into()
            }
        ));
        explain_entry(q, c, v, &ct, &affinity, now_ns, &mut out);
    }
    out
}

fn explain_entry(
    q: &FlowQuery,
    c: &MapContents,
    v: &ServiceValue,
    ct: &impl Fn(&CtKey) -> Option<CtValue>,
    affinity: &impl Fn(&AffinityKey) -> Option<AffinityValue>,
    now_ns: u64,
    out: &mut Vec<String>,
) {
    let (saddr, daddr) = (be(*q.src.ip()), be(*q.dst.ip()));
    let (sport, dport) = (q.src.port().to_be(), q.dst.port().to_be());
    let ct_key = CtKey {
        saddr_be: saddr,
        daddr_be: daddr,
        sport_be: sport,
        dport_be: dport,
        proto: q.proto,
        kind: ct_kind::SERVICE,
        _pad: 0,
    };
    if let Some(e) = ct(&ct_key) {
        out.push(format!(
            "  existing conntrack entry -> backend {} (idle {}): every packet of this flow goes there, even if the \
             backend is now terminating",
            backend_str(c, e.backend_id),
            human_ns(now_ns.saturating_sub(e.last_seen_ns))
        ));
        return;
    }
    out.push("  no conntrack entry: this is a new flow".into());
    if v.ready_count == 0 && v.terminating_count == 0 {
        out.push(
            "  no endpoints: a new flow is rejected (TCP RST / ICMP port unreachable), like kube-proxy"
                .into(),
        );
        return;
    }
    if v.affinity_timeout_s > 0 {
        let ak = AffinityKey {
            client_addr_be: saddr,
            rev_nat_id: v.rev_nat_id,
            _pad: 0,
        };
        match affinity(&ak) {
            Some(a)
                if now_ns.saturating_sub(a.last_used_ns)
                    < u64::from(v.affinity_timeout_s) * 1_000_000_000 =>
            {
                out.push(format!(
                    "  session affinity: client {} used backend {} {} ago (timeout {}s) -> same backend",
                    q.src.ip(),
                    backend_str(c, a.backend_id),
                    human_ns(now_ns.saturating_sub(a.last_used_ns)),
                    v.affinity_timeout_s
                ));
                return;
            }
            Some(_) => {
                out.push("  session affinity entry expired: a fresh pick is made and remembered".into())
            }
            None => out.push("  no session affinity entry yet: a fresh pick is made and remembered".into()),
        }
    }
    if v.flags & svc_flags::MAGLEV != 0 {
        let h = flow_hash(saddr, daddr, sport, dport, q.proto);
        let slot = h % MAGLEV_TABLE_SIZE;
        let pick = c.slots.get(&SlotKey {
            table_id: v.table_id,
            slot,
        });
        out.push(format!(
            "  maglev: flow hash {h:#010x} -> slot {slot} of {MAGLEV_TABLE_SIZE} in table {} -> backend {}",
            v.table_id,
            pick.map(|&id| backend_str(c, id))
                .unwrap_or_else(|| "none (slot missing: dropped)".into())
        ));
        return;
    }
    let (from, to, why) = if v.ready_count > 0 {
        (0, v.ready_count, "ready backends")
    } else {
        (
            v.ready_count,
            v.ready_count + v.terminating_count,
            "terminating but still serving backends (no ready one left, KEP-1669)",
        )
    };
    out.push(format!(
        "  random pick among slots [{from}, {to}) of table {}: {why}",
        v.table_id
    ));
    let shares = slot_shares(c, v.table_id, from, to);
    let total = to - from;
    for (id, n) in shares {
        out.push(format!(
            "    backend {}: {n}/{total} slots ({:.0}%)",
            backend_str(c, id),
            f64::from(n) * 100.0 / f64::from(total)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_common::{Backend, PROTO_TCP};

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn contents(ready: u32, term: u32, flags: u16, affinity_s: u32) -> (MapContents, ServiceKey) {
        let mut c = MapContents::default();
        let k = ServiceKey {
            addr_be: be(Ipv4Addr::new(10, 96, 0, 10)),
            port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            scope: SCOPE_INTERNAL,
        };
        c.services.insert(
            k,
            ServiceValue {
                ready_count: ready,
                terminating_count: term,
                table_id: 7,
                affinity_timeout_s: affinity_s,
                rev_nat_id: 3,
                flags,
            },
        );
        for (i, id) in [11u32, 12, 13].iter().enumerate() {
            c.backends.insert(
                *id,
                Backend {
                    addr_be: be(Ipv4Addr::new(10, 244, 0, 10 + i as u8)),
                    port_be: 8080u16.to_be(),
                    proto: PROTO_TCP,
                    flags: 0,
                },
            );
            c.slots.insert(
                SlotKey {
                    table_id: 7,
                    slot: i as u32,
                },
                *id,
            );
        }
        (c, k)
    }

    fn q() -> FlowQuery {
        FlowQuery {
            src: sa("10.244.1.5:40000"),
            dst: sa("10.96.0.10:80"),
            proto: PROTO_TCP,
        }
    }

    fn no_ct(_: &CtKey) -> Option<CtValue> {
        None
    }
    fn no_aff(_: &AffinityKey) -> Option<AffinityValue> {
        None
    }

    #[test]
    fn unknown_destination_is_not_load_balanced() {
        let (c, _) = contents(2, 0, 0, 0);
        let mut query = q();
        query.dst = sa("10.96.0.99:80");
        let out = explain(&query, &c, &Names::default(), no_ct, no_aff, 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("no service entry"));
    }

    #[test]
    fn existing_conntrack_wins() {
        let (c, k) = contents(2, 0, 0, 0);
        let mut names = Names::default();
        names.insert(&k, "default/web:http".into());
        let ct = |key: &CtKey| {
            (key.kind == ct_kind::SERVICE && key.sport_be == 40000u16.to_be()).then_some(CtValue {
                backend_id: 12,
                last_seen_ns: 1_000_000_000,
                ..Default::default()
            })
        };
        let out = explain(&q(), &c, &names, ct, no_aff, 6_000_000_000).join("\n");
        assert!(out.contains("default/web:http"), "{out}");
        assert!(
            out.contains("existing conntrack entry -> backend #12 10.244.0.11:8080 (idle 5s)"),
            "{out}"
        );
    }

    #[test]
    fn new_flow_picks_among_ready_slots() {
        let (c, _) = contents(2, 1, 0, 0);
        let out = explain(&q(), &c, &Names::default(), no_ct, no_aff, 0).join("\n");
        assert!(
            out.contains("random pick among slots [0, 2) of table 7: ready backends"),
            "{out}"
        );
        assert!(out.contains("#11 10.244.0.10:8080: 1/2 slots (50%)"), "{out}");
        assert!(
            !out.contains("#13"),
            "terminating backend offered while ready ones exist: {out}"
        );
    }

    #[test]
    fn terminating_backends_serve_only_when_none_is_ready() {
        let (c, _) = contents(0, 1, 0, 0);
        let mut c = c;
        c.slots.insert(SlotKey { table_id: 7, slot: 0 }, 13);
        let out = explain(&q(), &c, &Names::default(), no_ct, no_aff, 0).join("\n");
        assert!(out.contains("slots [0, 1)"), "{out}");
        assert!(out.contains("KEP-1669"), "{out}");
        assert!(out.contains("#13"), "{out}");
    }

    #[test]
    fn no_endpoints_means_reject() {
        let (c, _) = contents(0, 0, 0, 0);
        let out = explain(&q(), &c, &Names::default(), no_ct, no_aff, 0).join("\n");
        assert!(out.contains("rejected"), "{out}");
    }

    #[test]
    fn fresh_affinity_sticks_and_stale_does_not() {
        let (c, _) = contents(3, 0, 0, 30);
        let aff = |k: &AffinityKey| {
            (k.rev_nat_id == 3).then_some(AffinityValue {
                last_used_ns: 100_000_000_000,
                backend_id: 13,
                _pad: 0,
            })
        };
        let fresh = explain(&q(), &c, &Names::default(), no_ct, aff, 110_000_000_000).join("\n");
        assert!(
            fresh.contains("session affinity: client 10.244.1.5 used backend #13"),
            "{fresh}"
        );
        let stale = explain(&q(), &c, &Names::default(), no_ct, aff, 131_000_000_000).join("\n");
        assert!(stale.contains("expired"), "{stale}");
        assert!(stale.contains("random pick"), "{stale}");
    }

    #[test]
    fn maglev_names_the_slot_of_the_flow_hash() {
        let (mut c, _) = contents(MAGLEV_TABLE_SIZE, 0, svc_flags::MAGLEV, 0);
        let q = q();
        let h = flow_hash(
            be(*q.src.ip()),
            be(*q.dst.ip()),
            q.src.port().to_be(),
            q.dst.port().to_be(),
            PROTO_TCP,
        );
        let slot = h % MAGLEV_TABLE_SIZE;
        c.slots.insert(SlotKey { table_id: 7, slot }, 12);
        let out = explain(&q, &c, &Names::default(), no_ct, no_aff, 0).join("\n");
        assert!(
            out.contains(&format!("slot {slot} of {MAGLEV_TABLE_SIZE}")),
            "{out}"
        );
        assert!(out.contains("backend #12"), "{out}");
    }

    #[test]
    fn flow_hash_is_stable_and_spreads() {
        assert_eq!(flow_hash(1, 2, 3, 4, 6), flow_hash(1, 2, 3, 4, 6));
        assert_ne!(flow_hash(1, 2, 3, 4, 6), flow_hash(1, 2, 5, 4, 6));
    }
}
