//! Id allocation: the lowest free id >= 1 (0 is never handed out, so a zeroed map value cannot look valid).
use std::collections::BTreeSet;

/// Hands out the lowest free id in `1..=max`.
#[derive(Clone, Debug)]
pub struct IdPool {
    /// Free ids below `next`.
    free: BTreeSet<u32>,
    /// Every id >= `next` is free.
    next: u32,
    max: u32,
}

impl IdPool {
    pub fn new(max: u32) -> IdPool {
        IdPool {
            free: BTreeSet::new(),
            next: 1,
            max,
        }
    }

    /// The lowest free id, now marked used; `None` when all of `1..=max` are in use.
    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        if self.next > self.max {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }

    /// Marks `id` used (restoring from pinned maps). Ids outside `1..=max` are ignored: they are never handed out.
    pub fn mark_used(&mut self, id: u32) {
        if id == 0 || id > self.max {
            return;
        }
        if id >= self.next {
            self.free.extend(self.next..id);
            self.next = id + 1;
        } else {
            self.free.remove(&id);
        }
    }

    /// Returns `id` to the pool.
    pub fn release(&mut self, id: u32) {
        if id == 0 || id >= self.next {
            return;
        }
        self.free.insert(id);
        // Keep `free` small: trailing free ids fold back into `next`.
        while self.next > 1 && self.free.remove(&(self.next - 1)) {
            self.next -= 1;
        }
    }

    pub fn is_used(&self, id: u32) -> bool {
        id != 0 && id < self.next && !self.free.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_lowest_free_id_from_one() {
        let mut p = IdPool::new(10);
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(1), Some(2), Some(3)));
        p.release(2);
        assert!(!p.is_used(2));
        assert_eq!(p.alloc(), Some(2));
        p.release(3);
        p.release(1);
        assert_eq!(p.alloc(), Some(1));
        assert_eq!(p.alloc(), Some(3));
        assert_eq!(p.alloc(), Some(4));
    }

    #[test]
    fn restored_ids_are_skipped_and_gaps_reused() {
        let mut p = IdPool::new(100);
        for id in [5, 2, 9, 0, 1000] {
            p.mark_used(id);
        }
        let got: Vec<u32> = (0..8).filter_map(|_| p.alloc()).collect();
        assert_eq!(got, vec![1, 3, 4, 6, 7, 8, 10, 11]);
        assert!(p.is_used(5) && p.is_used(9) && !p.is_used(0));
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut p = IdPool::new(2);
        assert_eq!((p.alloc(), p.alloc(), p.alloc()), (Some(1), Some(2), None));
        p.release(1);
        assert_eq!(p.alloc(), Some(1));
    }
}
