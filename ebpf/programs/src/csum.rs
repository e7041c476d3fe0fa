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
    let sum = (!check) as u32
        + ((!old) >> 16)
        + ((!old) & 0xffff)
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// New checksum after a 16-bit field changed from `old` to `new` (raw memory words).
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// One's-complement sum of big-endian 16-bit words of `buf[start..start + len]` (len even), added to `acc`.
#[inline(always)]
pub fn sum_be(buf: &[u8], start: usize, len: usize, mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < len {
        let a = start + i;
        if a + 1 < buf.len() {
            acc += u16::from_be_bytes([buf[a], buf[a + 1]]) as u32;
        }
        i += 2;
    }
    acc
}
