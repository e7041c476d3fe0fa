//! Conntrack garbage collection: which entries are idle too long (pure), and one bounded GC pass over the map; the
//! passes also count the entries the LRU evicted under pressure.
use std::{collections::HashSet, time::Duration};

use skiff_common::{CtKey, CtValue, PROTO_TCP, ct_flags};

use super::maps::{FlowMaps, MapsError};

/// Idle timeouts per kind of flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp_established: Duration,
    pub tcp_closing: Duration,
    /// UDP and every other protocol.
    pub udp: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
        }
    }
}

impl CtTimeouts {
    /// The idle timeout that applies to an entry.
    pub fn for_entry(&self, k: &CtKey, v: &CtValue) -> Duration {
        if k.proto != PROTO_TCP {
            self.udp
        } else if v.flags & ct_flags::CLOSING != 0 {
            self.tcp_closing
        } else {
            self.tcp_established
        }
    }

    /// Whether the entry has been idle longer than its timeout at `now_ns` (same clock as `bpf_ktime_get_ns`).
    /// An entry stamped in the future (a packet raced the scan) is never expired.
    pub fn expired(&self, k: &CtKey, v: &CtValue, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(v.last_seen_ns);
        u128::from(idle) > self.for_entry(k, v).as_nanos()
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub scanned: usize,
    pub deleted: usize,
    /// Entries left after the pass.
    pub remaining: usize,
    /// Entries the LRU evicted since the previous pass (see `Evictions`).
    pub evicted: usize,
}

/// Counts LRU evictions between GC passes: an entry present at one pass that is gone at the next without the GC
/// having deleted it was evicted (or purged with its UDP backend). A lower bound: an entry created and evicted
/// between two passes is never seen. Every eviction counted here is a flow that had lived through a pass, so a
/// rising count means established flows lose their conntrack state (see `tests/tests/map_pressure.rs` for what the
/// datapath does then).
#[derive(Debug, Default)]
pub struct Evictions {
    previous: HashSet<CtKey>,
}

impl Evictions {
    /// Takes the keys present now and those this pass deletes; returns how many vanished since the last pass.
    pub fn observe(&mut self, present: impl IntoIterator<Item = CtKey>, deleted: &[CtKey]) -> usize {
        let mut current: HashSet<CtKey> = present.into_iter().collect();
        let evicted = self.previous.iter().filter(|k| !current.contains(k)).count();
        for k in deleted {
            current.remove(k);
        }
        self.previous = current;
        evicted
    }
}

/// Picks up to `max_deletes` expired entries from `entries` (pure; the rest wait for the next tick).
pub fn select_expired(
    entries: &[(CtKey, CtValue)],
    t: &CtTimeouts,
    now_ns: u64,
    max_deletes: usize,
) -> Vec<CtKey> {
    entries
        .iter()
        .filter(|(k, v)| t.expired(k, v, now_ns))
        .map(|(k, _)| *k)
        .take(max_deletes)
        .collect()
}

/// One GC pass: scans conntrack, deletes at most `max_deletes` expired entries.
pub fn gc_pass(
    maps: &mut FlowMaps,
    t: &CtTimeouts,
    now_ns: u64,
    max_deletes: usize,
) -> Result<GcStats, MapsError> {
    gc_pass_counting(maps, t, now_ns, max_deletes, &mut Evictions::default())
}

/// `gc_pass`, also counting the evictions since the previous pass that used `evictions`.
pub fn gc_pass_counting(
    maps: &mut FlowMaps,
    t: &CtTimeouts,
    now_ns: u64,
    max_deletes: usize,
    evictions: &mut Evictions,
) -> Result<GcStats, MapsError> {
    let entries = maps.conntrack_entries();
    let victims = select_expired(&entries, t, now_ns, max_deletes);
    for k in &victims {
        maps.delete_ct(k)?;
    }
    let evicted = evictions.observe(entries.iter().map(|(k, _)| *k), &victims);
    Ok(GcStats {
        scanned: entries.len(),
        deleted: victims.len(),
        remaining: entries.len() - victims.len(),
        evicted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_common::PROTO_UDP;

    const S: u64 = 1_000_000_000;

    fn entry(proto: u8, flags: u16, last_seen_s: u64) -> (CtKey, CtValue) {
        (
            CtKey {
                proto,
                sport_be: (last_seen_s as u16).to_be(),
                ..Default::default()
            },
            CtValue {
                last_seen_ns: last_seen_s * S,
                flags,
                ..Default::default()
            },
        )
    }

    #[test]
    fn timeouts_depend_on_protocol_and_state() {
        let t = CtTimeouts::default();
        let now = 100_000 * S;
        let (k, v) = entry(PROTO_UDP, 0, 100_000 - 61);
        assert!(t.expired(&k, &v, now));
        let (k, v) = entry(PROTO_UDP, 0, 100_000 - 59);
        assert!(!t.expired(&k, &v, now));
        let (k, v) = entry(PROTO_TCP, ct_flags::CLOSING, 100_000 - 11);
        assert!(t.expired(&k, &v, now));
        let (k, v) = entry(PROTO_TCP, 0, 100_000 - 3600);
        assert!(
            !t.expired(&k, &v, now),
            "an hour idle is fine for an established TCP flow"
        );
        let (k, v) = entry(PROTO_TCP, 0, 100_000 - 6 * 3600 - 1);
        assert!(t.expired(&k, &v, now));
    }

    #[test]
    fn future_timestamps_never_expire() {
        let t = CtTimeouts::default();
        let (k, v) = entry(PROTO_UDP, 0, 200);
        assert!(!t.expired(&k, &v, 100 * S));
    }

    #[test]
    fn entries_gone_without_a_gc_delete_count_as_evicted() {
        let key = |p: u16| CtKey {
            sport_be: p,
            ..Default::default()
        };
        let mut e = Evictions::default();
        assert_eq!(e.observe([key(1), key(2), key(3)], &[key(3)]), 0);
        // 3 was deleted by the GC, 2 vanished: one eviction; 4 and 5 are new.
        assert_eq!(e.observe([key(1), key(4), key(5)], &[]), 1);
        assert_eq!(e.observe([key(1)], &[]), 2);
        assert_eq!(e.observe([key(1)], &[]), 0);
    }

    #[test]
    fn deletes_are_bounded_per_pass() {
        let t = CtTimeouts::default();
        let entries: Vec<_> = (0..10).map(|i| entry(PROTO_UDP, 0, i)).collect();
        let now = 1000 * S;
        assert_eq!(select_expired(&entries, &t, now, 3).len(), 3);
        assert_eq!(select_expired(&entries, &t, now, 100).len(), 10);
        assert!(select_expired(&entries, &t, 30 * S, 100).is_empty());
    }
}
