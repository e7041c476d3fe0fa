//! Internet checksums: incremental updates (RFC 1624) and full sums over small fixed buffers.

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// New checksum after a 32-bit field changed from `old` to `new` (all three as raw memory words).
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check) as u32 + ((!old) >> 16) + ((!old) & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// New checksum after a 16-bit field changed from `old` to `new` (raw memory words).
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}
