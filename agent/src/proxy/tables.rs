//! In-place edits of a random-selection slot region: which slots to write, the new length, which slots to delete.
use std::collections::HashSet;

/// How to turn one region of a slot table into another without the datapath ever seeing a missing slot.
///
/// Apply as: every `writes` entry (positions relative to the region start), then the service update carrying
/// `new_len`, then every `deletes` entry. Before the service update every slot below the old length is valid; after
/// it every slot below `new_len` is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionEdit {
    pub writes: Vec<(u32, u32)>,
    pub new_len: u32,
    pub deletes: Vec<u32>,
}

impl RegionEdit {
    pub fn is_noop(&self, old_len: u32) -> bool {
        self.writes.is_empty() && self.deletes.is_empty() && self.new_len == old_len
    }
}

/// Edits `current` (the backend ids in the region's slots) so it holds each id of `desired` exactly once, keeping
/// every surviving member where it is: removed members' slots take new members first, then extra new members are
/// appended; if the region shrinks, the members past the new end move into the remaining holes.
pub fn edit_region(current: &[u32], desired: &[u32]) -> RegionEdit {
    let wanted: HashSet<u32> = desired.iter().copied().collect();
    let mut seen: HashSet<u32> = HashSet::with_capacity(current.len());
    // A slot is a hole if its member is gone or is a duplicate of an earlier slot.
    let mut holes: Vec<u32> = Vec::new();
    for (pos, id) in current.iter().enumerate() {
        if !wanted.contains(id) || !seen.insert(*id) {
            holes.push(pos as u32);
        }
    }
    let mut added = desired.iter().copied().filter(|id| !seen.contains(id));
    let old_len = current.len() as u32;
    let new_len = wanted.len() as u32;
    let mut edit = RegionEdit {
        new_len,
        ..RegionEdit::default()
    };
    let mut holes = holes.into_iter();
    // Removed members' slots take new members.
    for hole in holes.by_ref() {
        match added.next() {
            Some(id) => edit.writes.push((hole, id)),
            None => {
                // No new member left: this and the remaining holes are compacted below.
                let remaining: Vec<u32> = std::iter::once(hole).chain(holes.by_ref()).collect();
                compact(current, &remaining, new_len, &mut edit);
                break;
            }
        }
    }
    // Extra new members go past the current end.
    for (i, id) in added.enumerate() {
        edit.writes.push((old_len + i as u32, id));
    }
    edit
}

/// Moves members from positions >= `new_len` into the holes below it, then deletes everything from `new_len` on.
fn compact(current: &[u32], holes: &[u32], new_len: u32, edit: &mut RegionEdit) {
    let hole_set: HashSet<u32> = holes.iter().copied().collect();
    let mut tail = (new_len..current.len() as u32)
        .rev()
        .filter(|p| !hole_set.contains(p));
    for &hole in holes.iter().filter(|h| **h < new_len) {
        let from = tail
            .next()
            .expect("as many members past the end as holes before it");
        edit.writes.push((hole, current[from as usize]));
    }
    edit.deletes.extend(new_len..current.len() as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies an edit and checks the result holds exactly `desired`, and that no slot below the live length is
    /// ever empty (old length before the count update, new length after it).
    fn check(current: &[u32], desired: &[u32]) -> RegionEdit {
        let edit = edit_region(current, desired);
        let mut slots: Vec<Option<u32>> = current.iter().copied().map(Some).collect();
        for &(pos, id) in &edit.writes {
            let pos = pos as usize;
            if pos >= slots.len() {
                slots.resize(pos + 1, None);
            }
            slots[pos] = Some(id);
            assert!(slots[..current.len()].iter().all(Option::is_some));
        }
        assert!(
            slots[..edit.new_len as usize].iter().all(Option::is_some),
            "{current:?} -> {desired:?}: {edit:?}"
        );
        for &pos in &edit.deletes {
            assert!(pos >= edit.new_len);
            slots[pos as usize] = None;
        }
        let mut got: Vec<u32> = slots.iter().flatten().copied().collect();
        assert_eq!(got.len(), edit.new_len as usize);
        got.sort();
        let mut want = desired.to_vec();
        want.sort();
        assert_eq!(got, want, "{current:?} -> {desired:?}: {edit:?}");
        edit
    }

    #[test]
    fn unchanged_region_is_a_noop() {
        let edit = check(&[3, 1, 2], &[1, 2, 3]);
        assert!(edit.is_noop(3));
    }

    #[test]
    fn replacing_one_member_writes_one_slot() {
        let edit = check(&[1, 2, 3], &[1, 4, 3]);
        assert_eq!(edit.writes, vec![(1, 4)]);
        assert!(edit.deletes.is_empty());
    }

    #[test]
    fn adding_appends_and_removing_moves_the_last_member() {
        assert_eq!(check(&[1, 2], &[1, 2, 5]).writes, vec![(2, 5)]);
        let edit = check(&[1, 2, 3, 4], &[2, 3, 4]);
        assert_eq!(edit.writes, vec![(0, 4)]);
        assert_eq!(edit.deletes, vec![3]);
        let edit = check(&[1, 2, 3, 4], &[1, 2, 3]);
        assert!(edit.writes.is_empty());
        assert_eq!(edit.deletes, vec![3]);
    }

    #[test]
    fn arbitrary_changes_reach_the_desired_set() {
        let cases: &[(&[u32], &[u32])] = &[
            (&[], &[1, 2]),
            (&[1, 2], &[]),
            (&[1, 2, 3, 4, 5], &[5, 1]),
            (&[1, 2, 3, 4, 5], &[2, 6]),
            (&[1, 1, 2], &[1, 2]),
            (&[7, 8], &[1, 2, 3, 4]),
            (&[1, 2, 3, 4, 5, 6], &[9, 3, 6]),
        ];
        for (cur, want) in cases {
            check(cur, want);
        }
    }
}
