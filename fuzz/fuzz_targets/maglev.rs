//! Fuzz target: the Maglev table builder on any backend names and prime table sizes.
//!
//! The table has the requested size, every slot names a given backend, each backend owns floor(M/N) or ceil(M/N)
//! slots, and the same input always gives the same table.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use skiff_agent::proxy::maglev;
use skiff_common::MAGLEV_TABLE_SIZE;

/// Prime table sizes, from degenerate to the datapath's.
const SIZES: [u32; 8] = [2, 3, 5, 7, 13, 251, 4093, MAGLEV_TABLE_SIZE];
/// Bounds the work of one input (populate is O(M * N) in the worst case).
const MAX_NAMES: usize = 512;

#[derive(Arbitrary, Debug)]
struct Input {
    size: u8,
    names: Vec<String>,
}

fuzz_target!(|input: Input| {
    let size = SIZES[usize::from(input.size) % SIZES.len()];
    let names: Vec<String> = input.names.into_iter().take(MAX_NAMES).collect();
    let table = maglev::populate(&names, size);
    if names.is_empty() {
        assert!(table.is_empty(), "no backends, yet a table");
        return;
    }
    assert_eq!(table.len(), size as usize, "table size");
    let n = names.len();
    let mut counts = vec![0u32; n];
    for &i in &table {
        let i = i as usize;
        assert!(i < n, "slot names backend {i} of {n}");
        counts[i] += 1;
    }
    let (lo, hi) = (size / n as u32, size.div_ceil(n as u32));
    for (i, c) in counts.iter().enumerate() {
        assert!(
            (lo..=hi).contains(c),
            "backend {i} owns {c} slots, expected {lo}..={hi}"
        );
    }
    assert_eq!(maglev::populate(&names, size), table, "not deterministic");
});
