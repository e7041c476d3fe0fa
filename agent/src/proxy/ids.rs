//! Id allocation: ids in `1..=max` handed out round-robin (0 is never handed out, so a zeroed map value cannot look
//! valid). A freed id is reused as late as possible: conntrack entries of established flows still name the backend
//! or rev-NAT id they were given, and an id reused at once would send such a flow to a stranger.
use std::collections::BTreeSet;

/// Hands out the next free id after the last one handed out, wrapping around within `1..=max`.
#[derive(Clone, Debug)]
pub struct IdPool {
    used: BTreeSet<u32>,
    /// The id handed out (or restored) last; the search for a free id starts after it.
    cursor: u32,
    max: u32,
}

impl IdPool {
    pub fn new(max: u32) -> IdPool {
        IdPool {
            used: BTreeSet::new(),
            cursor: 0,
            max,
        }
    }

    /// The next free id after the cursor, now marked used; `None` when all of `1..=max` are in use.
    pub fn alloc(&mut self) -> Option<u32> {
        if self.used.len() as u64 >= u64::from(self.max) {
            return None;
        }
        let id = Self::first_gap(&self.used, self.cursor + 1, self.max)
            .or_else(|| Self::first_gap(&self.used, 1, self.cursor))?;
        self.used.insert(id);
        self.cursor = id;
        Some(id)
    }

    /// The lowest id in `from..=to` not in `used` (walks only the used ids in that range).
    fn first_gap(used: &BTreeSet<u32>, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        for &id in used.range(from..=to) {
            if id != candidate {
                break;
            }
            candidate = id + 1;
        }
        (candidate <= to).then_some(candidate)
    }

    /// Marks `id` used (restoring from pinned maps). Ids outside `1..=max` are ignored: they are never handed out.
    pub fn mark_used(&mut self, id: u32) {
        if id == 0 || id > self.max {
            return;
        }
        self.used.insert(id);
        // After a restart, continue after the highest restored id, so ids freed before it are not reused first.
        self.cursor = self.cursor.max(id);
    }

    /// Returns `id` to the pool.
    pub fn release(&mut self, id: u32) {
        self.used.remove(&id);
    }

    pub fn is_used(&self, id: u32) -> bool {
        self.used.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_ids_from_one_and_reuses_freed_ones_last() {
        let mut p = IdPool::new(5);
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(1), Some(2), Some(3)));
        p.release(2);
        assert!(!p.is_used(2));
        // 2 is free, but 4 and 5 have never been used: they go first.
        assert_eq!((p.alloc(), p.alloc()), (Some(4), Some(5)));
        assert_eq!(p.alloc(), Some(2));
        assert_eq!(p.alloc(), None);
        p.release(1);
        p.release(3);
        assert_eq!((p.alloc(), p.alloc()), (Some(3), Some(1)));
    }

    #[test]
    fn restored_ids_are_skipped_and_allocation_continues_after_them() {
        let mut p = IdPool::new(100);
        for id in [5, 2, 9, 0, 1000] {
            p.mark_used(id);
        }
        let got: Vec<u32> = (0..3).filter_map(|_| p.alloc()).collect();
        assert_eq!(got, vec![10, 11, 12]);
        assert!(p.is_used(5) && p.is_used(9) && !p.is_used(0) && !p.is_used(1000));
    }

    #[test]
    fn wraps_around_past_used_ids() {
        let mut p = IdPool::new(6);
        for id in [1, 2, 5, 6] {
            p.mark_used(id);
        }
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(3), Some(4), None));
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut p = IdPool::new(2);
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(1), Some(2), None));
        p.release(1);
        assert_eq!(p.alloc(), Some(1));
    }
}
