//! Interface names derived from pod UIDs (at most 15 bytes, stable across agent restarts).

/// Prefix of every host-side pod veth.
pub const HOST_VETH_PREFIX: &str = "skp";
/// Prefix of the temporary name the pod side has before it moves into the pod and becomes eth0.
pub const PEER_VETH_PREFIX: &str = "skq";

/// FNV-1a, 64 bits: stable and dependency-free.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn suffix(uid: &str) -> String {
    format!("{:012x}", fnv1a(uid) & 0xffff_ffff_ffff)
}

/// The node-side veth of a pod: `skp` + 12 hex digits.
pub fn host_veth(uid: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", suffix(uid))
}

/// The temporary name of the pod-side veth while it is still in the node namespace.
pub fn peer_veth(uid: &str) -> String {
    format!("{PEER_VETH_PREFIX}{}", suffix(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_stable() {
        let uid = "3f1b7a52-8a7e-4f57-a2cd-1b2f5d7e9a10";
        assert_eq!(host_veth(uid).len(), 15);
        assert_eq!(peer_veth(uid).len(), 15);
        assert_eq!(host_veth(uid), host_veth(uid));
        assert!(host_veth(uid).starts_with("skp"));
        assert_ne!(host_veth(uid), host_veth("3f1b7a52-8a7e-4f57-a2cd-1b2f5d7e9a11"));
        assert_ne!(host_veth(uid)[3..], peer_veth(uid)[2..]);
    }
}
