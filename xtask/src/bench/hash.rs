//! Chain names hashed the way kube-proxy hashes them (base32 of SHA-256, truncated).
use sha2::{Digest, Sha256};

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 (standard alphabet, no padding needed: callers only take a prefix).
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The first `len` base32 characters of SHA-256(`input`).
pub fn hash_prefix(input: &str, len: usize) -> String {
    let mut s = base32(&Sha256::digest(input.as_bytes()));
    s.truncate(len);
    s
}

/// iptables mode: the 16-character suffix of `KUBE-SVC-`/`KUBE-EXT-` chains
/// (`servicePortName` is `ns/name:port`, protocol lower case).
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    hash_prefix(&format!("{service_port_name}{protocol}"), 16)
}

/// iptables mode: the 16-character suffix of a `KUBE-SEP-` chain (`endpoint` is `ip:port`).
pub fn endpoint_hash(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    hash_prefix(&format!("{service_port_name}{protocol}{endpoint}"), 16)
}

/// nftables mode: `<8 chars>-<name>`, truncated like kube-proxy when it exceeds the chain-name budget.
pub fn nft_chain_base(name: &str) -> String {
    const MAX: usize = 256 - "external-".len();
    let mut out = format!("{}-{name}", hash_prefix(name, 8));
    if out.len() > MAX {
        out.truncate(MAX - 3);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn iptables_hashes_match_kube_proxy_fixtures() {
        // pkg/proxy/iptables/proxier_test.go: ns1/svc1:p80 -> KUBE-SVC-XPGD46QRK7WJZT7O,
        // endpoint 10.180.0.1:80 -> KUBE-SEP-SXIVWICOYRO3J4NJ, ns2/svc2:p80 -> GNZBNJ2PO5MGZ6GT.
        assert_eq!(port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(port_proto_hash("ns2/svc2:p80", "tcp"), "GNZBNJ2PO5MGZ6GT");
        assert_eq!(
            endpoint_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn nftables_chain_names_match_kube_proxy_fixtures() {
        assert_eq!(nft_chain_base("ns1/svc1/tcp/p80"), "ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(
            nft_chain_base("ns1/svc1/tcp/p80__10.180.0.1/80"),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
    }
}
