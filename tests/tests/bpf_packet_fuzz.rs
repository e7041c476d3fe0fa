//! Packet fuzzing through BPF_PROG_TEST_RUN (root): random and mutated frames, related and unrelated to the
//! configured Services, run through every TC and XDP program. Invariants checked in userspace, independently of
//! the code under test:
//! - a frame that names no Service, node or backend address is never rewritten, by any program;
//! - a valid frame that a program rewrites comes out with valid IPv4 and L4 checksums and consistent lengths;
//! - no program fails to run on any input (truncated, oversized, garbage headers, IP options, fragments).
//!
//! The seed is printed; `SKIFF_FUZZ_SEED` replays one, `SKIFF_FUZZ_FRAMES` changes the number of frames.
use std::net::Ipv4Addr;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use skiff_common::{
    Config, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL, ServiceValue, backend_flags, programs,
    svc_flags,
};
use tests::{
    fixture::{Fixture, backend, svc_key},
    fixture_packet::{FrameSpec, read_frame},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const NODE_PORT: u16 = 30080;
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 2, 10),
    Ipv4Addr::new(10, 244, 2, 11),
    Ipv4Addr::new(10, 244, 2, 12),
];
const BE_PORT: u16 = 8080;
/// Addresses a Service rewrite could legitimately touch.
const RELATED: [Ipv4Addr; 5] = [VIP, NODE, BACKENDS[0], BACKENDS[1], BACKENDS[2]];

/// ClusterIP VIP:80 (TCP and UDP) and NodePort NODE:30080 (TCP) over three node-local backends.
fn services(fx: &mut Fixture) {
    fx.set_config(Config {
        node_addr_be: u32::from_ne_bytes(NODE.octets()),
        hairpin_addr_be: 0,
        snat_port_min: 40000,
        snat_port_max: 40099,
        flags: 0,
    });
    for (i, proto) in [PROTO_TCP, PROTO_UDP].into_iter().enumerate() {
        let table = 10 + i as u32;
        let rev = 1 + i as u16;
        for (j, addr) in BACKENDS.iter().enumerate() {
            let id = 1 + (i * 3 + j) as u32;
            fx.put_backend(id, backend(*addr, BE_PORT, proto, backend_flags::LOCAL));
            fx.put_slot(table, j as u32, id);
        }
        fx.put_rev_nat(rev, VIP, 80);
        fx.put_service(
            svc_key(VIP, 80, proto, SCOPE_INTERNAL),
            ServiceValue {
                ready_count: 3,
                table_id: table,
                rev_nat_id: rev,
                ..Default::default()
            },
        );
    }
    fx.put_rev_nat(3, NODE, NODE_PORT);
    fx.put_service(
        svc_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        ServiceValue {
            ready_count: 3,
            table_id: 10,
            rev_nat_id: 3,
            flags: svc_flags::NODEPORT,
            ..Default::default()
        },
    );
}

fn unrelated_addr(rng: &mut SmallRng) -> Ipv4Addr {
    Ipv4Addr::new(
        172,
        16 + rng.random_range(0..16),
        rng.random(),
        rng.random_range(1..255),
    )
}

fn pick(rng: &mut SmallRng, related: bool) -> Ipv4Addr {
    if related && rng.random_bool(0.6) {
        [CLIENT, VIP, NODE, BACKENDS[0], BACKENDS[1], BACKENDS[2]][rng.random_range(0..6)]
    } else {
        unrelated_addr(rng)
    }
}

/// A well-formed frame; with `related`, its addresses and ports are drawn mostly from the configured Services.
fn frame(rng: &mut SmallRng, related: bool) -> Vec<u8> {
    let (saddr, daddr) = (pick(rng, related), pick(rng, related));
    let port = |rng: &mut SmallRng| match rng.random_range(0..4) {
        0 if related => 80,
        1 if related => NODE_PORT,
        2 if related => BE_PORT,
        _ => rng.random_range(1..=u16::MAX),
    };
    let (mut saddr, mut daddr) = (saddr, daddr);
    let (mut sport, mut dport) = (port(rng), port(rng));
    // Most related frames aim exactly at a Service or come back from a backend, so the rewrite paths are reached.
    if related && rng.random_bool(0.6) {
        match rng.random_range(0..3) {
            0 => (saddr, daddr, dport) = (CLIENT, VIP, 80),
            1 => (saddr, daddr, dport) = (unrelated_addr(rng), NODE, NODE_PORT),
            _ => (saddr, sport, daddr) = (BACKENDS[rng.random_range(0..3)], BE_PORT, CLIENT),
        }
    }
    let mut spec = if rng.random_bool(0.5) {
        FrameSpec::tcp(saddr, sport, daddr, dport, rng.random::<u8>() & 0x3f)
    } else {
        let mut spec = FrameSpec::udp(saddr, sport, daddr, dport);
        spec.udp_no_csum = rng.random_bool(0.1);
        spec
    };
    if rng.random_bool(0.1) {
        spec.ip_options = vec![0x01, 0x01, 0x01, 0x00];
    }
    if rng.random_bool(0.05) {
        spec.frag = rng.random_range(1..0x2000) | if rng.random_bool(0.5) { 0x2000 } else { 0 };
    }
    let len = rng.random_range(0..96);
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    spec.with_payload(&payload).build()
}

/// Flips, truncates or extends a frame (checksums then usually no longer match).
fn mutate(rng: &mut SmallRng, mut f: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..f.len());
                f[i] ^= 1 << rng.random_range(0..8);
            }
        }
        // BPF_PROG_TEST_RUN refuses IPv4 frames shorter than Ethernet + a minimal IPv4 header (the stack never hands
        // such a frame to TC either).
        1 => f.truncate(rng.random_range(34..f.len())),
        _ => f.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
    }
    f
}

/// True when no configured address appears anywhere in the frame (headers or payload, e.g. ICMP's inner header).
fn names_nothing_configured(frame: &[u8]) -> bool {
    RELATED.iter().all(|a| !frame.windows(4).any(|w| w == a.octets()))
}

#[test]
fn random_and_mutated_frames_keep_the_invariants() {
    let seed = std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SmallRng::from_os_rng().random::<u64>());
    let frames: usize = std::env::var("SKIFF_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    println!("packet fuzz: seed {seed} (SKIFF_FUZZ_SEED={seed} replays it), {frames} frames");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut fx = Fixture::new();
    services(&mut fx);
    let (mut rewritten, mut unrelated, mut checked) = (0usize, 0usize, 0usize);
    for n in 0..frames {
        if n % 500 == 0 {
            fx.ct_clear();
        }
        let related = rng.random_bool(0.7);
        let mut input = frame(&mut rng, related);
        let mutated = rng.random_bool(0.3);
        if mutated {
            input = mutate(&mut rng, input);
        }
        let valid = read_frame(&input).is_ok();
        let untouchable = names_nothing_configured(&input);
        unrelated += usize::from(untouchable);
        for prog in [
            programs::TC_FROM_POD,
            programs::TC_TO_POD,
            programs::TC_UPLINK_EGRESS,
            programs::XDP_UPLINK,
        ] {
            let out = if prog == programs::XDP_UPLINK {
                fx.run_xdp(prog, &input).1
            } else {
                fx.run_tc(prog, &input).1
            };
            if out == input {
                continue;
            }
            rewritten += 1;
            assert!(
                !untouchable,
                "{prog} rewrote a frame that names no Service, node or backend (seed {seed}, frame {n}):\n\
                 in  {input:02x?}\nout {out:02x?}"
            );
            if valid {
                checked += 1;
                if let Err(e) = read_frame(&out) {
                    panic!(
                        "{prog} turned a valid frame into an invalid one: {e} (seed {seed}, frame {n}):\n\
                         in  {input:02x?}\nout {out:02x?}"
                    );
                }
            }
        }
    }
    println!(
        "packet fuzz: {frames} frames, {unrelated} naming nothing configured (never rewritten), \
         {rewritten} rewrites, {checked} of them from valid frames with their checksums verified"
    );
    assert!(
        unrelated > frames / 10,
        "too few unrelated frames ({unrelated}) to test anything"
    );
    assert!(
        checked > frames / 20,
        "too few rewrites of valid frames ({checked}): the fuzzer misses the Services"
    );
}
