//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): fills a prime-sized lookup table from backend names.
//!
//! Every backend has a permutation of the table's slots derived from two hashes of its stable name; backends take
//! turns claiming their next preferred free slot. Each backend ends with `floor(M/N)` or `ceil(M/N)` slots, and
//! removing a backend moves few slots that did not belong to it.

/// Builds a lookup table of `size` slots (a prime) over `names`; each slot holds an index into `names`.
/// Returns an empty table when there are no names. Deterministic: the same names in the same order give the same
/// table on every run and every machine.
pub fn populate(names: &[String], size: u32) -> Vec<u32> {
    let m = size as u64;
    if names.is_empty() || m == 0 {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = names
        .iter()
        .map(|n| {
            let offset = hash(n.as_bytes(), SEED_OFFSET) % m;
            let skip = if m > 1 {
                hash(n.as_bytes(), SEED_SKIP) % (m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    // next[i]: how far backend i got in its permutation; the slot is (offset + next * skip) mod M.
    let mut next = vec![0u64; names.len()];
    let mut filled = 0u64;
    'fill: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            // A permutation visits every slot once within M steps, so this loop ends.
            let mut slot = ((offset + next[i] % m * skip) % m) as usize;
            while table[slot] != EMPTY {
                next[i] += 1;
                slot = ((offset + next[i] % m * skip) % m) as usize;
            }
            table[slot] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// FNV-1a over the bytes, seeded, then the splitmix64 finaliser (spreads the low bits used by `% M`).
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use skiff_common::MAGLEV_TABLE_SIZE;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &i in table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_is_filled_and_shares_are_fair() {
        let m = MAGLEV_TABLE_SIZE as f64;
        for n in [1usize, 2, 3, 10, 100, 1000] {
            let table = populate(&names(n), MAGLEV_TABLE_SIZE);
            assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
            let fair = m / n as f64;
            for (i, c) in counts(&table, n).into_iter().enumerate() {
                // Turn-taking gives every backend floor(M/N) or ceil(M/N) slots.
                assert!(
                    (c as f64 - fair).abs() < 1.0,
                    "n={n} backend {i}: {c} slots, fair {fair:.2}"
                );
                if n <= 100 {
                    let share = c as f64 / m;
                    assert!(
                        (share - 1.0 / n as f64).abs() <= 0.01 / n as f64,
                        "n={n}: share {share}"
                    );
                }
            }
        }
    }

    #[test]
    fn tables_are_deterministic_and_depend_on_names() {
        let a = populate(&names(10), MAGLEV_TABLE_SIZE);
        assert_eq!(a, populate(&names(10), MAGLEV_TABLE_SIZE));
        let mut other = names(10);
        other[3] = "10.9.9.9:80".into();
        assert_ne!(a, populate(&other, MAGLEV_TABLE_SIZE));
    }

    #[test]
    fn empty_backend_list_gives_empty_table() {
        assert!(populate(&[], MAGLEV_TABLE_SIZE).is_empty());
    }

    /// Removing one backend must move its own slots and only a small fraction of the others.
    #[test]
    fn removing_a_backend_disrupts_little() {
        for n in [3usize, 10, 100] {
            let all = names(n);
            let before = populate(&all, MAGLEV_TABLE_SIZE);
            for removed in [0, n / 2, n - 1] {
                let mut rest = all.clone();
                rest.remove(removed);
                let after = populate(&rest, MAGLEV_TABLE_SIZE);
                let mut moved_foreign = 0usize;
                for (b, a) in before.iter().zip(&after) {
                    let was = &all[*b as usize];
                    let now = &rest[*a as usize];
                    if *b as usize == removed {
                        continue;
                    }
                    if was != now {
                        moved_foreign += 1;
                    }
                }
                let frac = moved_foreign as f64 / MAGLEV_TABLE_SIZE as f64;
                assert!(
                    frac <= 0.03,
                    "n={n} removed={removed}: {frac:.4} of the table moved needlessly"
                );
            }
        }
    }
}
