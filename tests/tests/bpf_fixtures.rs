//! Datapath fixtures: (map state, input frame) -> (verdict, output frame) for the TC and XDP programs, run with
//! BPF_PROG_TEST_RUN. Every rewritten frame's IPv4 and L4 checksums are verified independently.
use std::{collections::BTreeSet, net::Ipv4Addr};

use skiff_common::{
    Config, CtValue, DropReason, MAGLEV_TABLE_SIZE, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL,
    ServiceValue, backend_flags, ct_flags, ct_kind, programs, svc_flags,
};
use tests::{
    fixture::{Fixture, backend, ct_key, svc_key},
    fixture_netns::{in_private_netns, mac_of, sh},
    fixture_packet::{
        CLIENT_MAC, ETH_HLEN, FrameSpec, HOST_MAC, Seen, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
        read_frame, udp_csum_field,
    },
};

const TC_ACT_OK: i32 = 0;
const TC_ACT_REDIRECT: i32 = 7;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 2, 10),
    Ipv4Addr::new(10, 244, 2, 11),
    Ipv4Addr::new(10, 244, 2, 12),
];
const BE_PORT: u16 = 8080;
const REV: u16 = 1;
const TABLE: u32 = 10;

/// Backend `id` (1-based) is `BACKENDS[id - 1]:8080`.
fn be_addr(id: u32) -> Ipv4Addr {
    BACKENDS[id as usize - 1]
}

/// A ClusterIP service VIP:80 with `ready` then `terminating` backend ids in its slot table.
fn cluster_ip(fx: &mut Fixture, proto: u8, ready: &[u32], terminating: &[u32], affinity_s: u32) {
    for id in 1..=3 {
        fx.put_backend(id, backend(be_addr(id), BE_PORT, proto, 0));
    }
    for (slot, id) in ready.iter().chain(terminating).enumerate() {
        fx.put_slot(TABLE, slot as u32, *id);
    }
    fx.put_rev_nat(REV, VIP, 80);
    fx.put_service(
        svc_key(VIP, 80, proto, SCOPE_INTERNAL),
        ServiceValue {
            ready_count: ready.len() as u32,
            terminating_count: terminating.len() as u32,
            table_id: TABLE,
            affinity_timeout_s: affinity_s,
            rev_nat_id: REV,
            flags: 0,
        },
    );
}

fn syn(sport: u16) -> Vec<u8> {
    FrameSpec::tcp(CLIENT, sport, VIP, 80, TCP_SYN).build()
}

fn seen(frame: &[u8]) -> Seen {
    read_frame(frame).unwrap_or_else(|e| panic!("invalid output frame: {e}"))
}

/// Which backend id a DNATed frame went to.
fn backend_of(out: &[u8]) -> u32 {
    let s = seen(out);
    assert_eq!(s.dport, BE_PORT);
    BACKENDS
        .iter()
        .position(|a| *a == s.daddr)
        .unwrap_or_else(|| panic!("not a backend: {}", s.daddr)) as u32
        + 1
}

fn from_pod(fx: &mut Fixture, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = fx.run_tc(programs::TC_FROM_POD, frame);
    assert_eq!(verdict, TC_ACT_OK);
    out
}

#[test]
fn tc_dnat_rewrites_destination_and_records_both_directions() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[], 0);
    let input = FrameSpec::tcp(CLIENT, 40000, VIP, 80, TCP_SYN)
        .with_payload(b"hello")
        .build();
    let out = from_pod(&mut fx, &input);
    let s = seen(&out);
    assert_eq!((s.src(), s.dst()), ((CLIENT, 40000), (be_addr(1), BE_PORT)));
    assert_eq!(s.payload, b"hello");
    assert_eq!(out.len(), input.len());

    let svc = fx
        .ct_get(&ct_key(CLIENT, 40000, VIP, 80, PROTO_TCP, ct_kind::SERVICE))
        .expect("SERVICE entry");
    assert_eq!((svc.backend_id, svc.rev_nat_id, svc.flags), (1, REV, 0));
    assert!(svc.last_seen_ns > 0);
    let reply = fx
        .ct_get(&ct_key(
            be_addr(1),
            BE_PORT,
            CLIENT,
            40000,
            PROTO_TCP,
            ct_kind::REPLY,
        ))
        .expect("REPLY");
    assert_eq!((reply.backend_id, reply.rev_nat_id), (1, REV));
    assert_eq!((fx.svc_packets(REV), fx.backend_packets(1)), (1, 1));
}

#[test]
fn tc_udp_dnat_keeps_checksums_valid_and_zero_checksums_zero() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_UDP, &[2], &[], 0);
    let out = from_pod(&mut fx, &FrameSpec::udp(CLIENT, 5353, VIP, 80).build());
    let s = seen(&out);
    assert_eq!(
        (s.dst(), s.payload.as_slice()),
        ((be_addr(2), BE_PORT), b"ping".as_slice())
    );
    assert_ne!(udp_csum_field(&out), 0);

    let mut spec = FrameSpec::udp(CLIENT, 5354, VIP, 80);
    spec.udp_no_csum = true;
    let out = from_pod(&mut fx, &spec.build());
    assert_eq!(seen(&out).dst(), (be_addr(2), BE_PORT));
    assert_eq!(
        udp_csum_field(&out),
        0,
        "a UDP datagram without checksum stays without one"
    );
}

#[test]
fn tc_replies_get_the_frontend_back_on_every_reply_hook() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[], 0);
    from_pod(&mut fx, &syn(40001));
    let reply = FrameSpec::tcp(be_addr(1), BE_PORT, CLIENT, 40001, TCP_SYN | TCP_ACK).build();
    for prog in [
        programs::TC_TO_POD,
        programs::TC_FROM_POD,
        programs::TC_UPLINK_EGRESS,
    ] {
        let (verdict, out) = fx.run_tc(prog, &reply);
        assert_eq!(verdict, TC_ACT_OK, "{prog}");
        let s = seen(&out);
        assert_eq!((s.src(), s.dst()), ((VIP, 80), (CLIENT, 40001)), "{prog}");
        assert_eq!(s.tcp_flags, TCP_SYN | TCP_ACK);
    }
    assert_eq!(fx.svc_packets(REV), 4, "both directions are counted");
}

#[test]
fn tc_no_endpoints_tcp_gets_a_rst_back() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[], &[], 0);
    let mut spec = FrameSpec::tcp(CLIENT, 40002, VIP, 80, TCP_SYN).with_payload(b"early data");
    if let tests::fixture_packet::L4::Tcp { seq, .. } = &mut spec.l4 {
        *seq = 7000;
    }
    let (verdict, out) = fx.run_tc(programs::TC_FROM_POD, &spec.build());
    assert_eq!(verdict, TC_ACT_REDIRECT, "the RST is redirected back to the pod");
    assert_eq!(out.len(), ETH_HLEN + 40);
    let s = seen(&out);
    assert_eq!((s.src(), s.dst()), ((VIP, 80), (CLIENT, 40002)));
    assert_eq!((s.src_mac, s.dst_mac), (HOST_MAC, CLIENT_MAC));
    assert_eq!(s.tcp_flags, TCP_RST | TCP_ACK);
    assert_eq!((s.seq, s.ack), (0, 7000 + 10 + 1), "acks the SYN and its payload");
    assert_eq!(fx.drops(DropReason::NoBackend), 1);
    assert!(fx.conntrack().is_empty(), "a rejected flow leaves no state");

    // A segment carrying an ACK is answered with seq = its ack.
    let (_, out) = fx.run_tc(
        programs::TC_FROM_POD,
        &FrameSpec::tcp(CLIENT, 40003, VIP, 80, TCP_ACK).build(),
    );
    let s = seen(&out);
    assert_eq!((s.tcp_flags, s.seq), (TCP_RST, 5000));
    // A RST is never answered.
    let (verdict, _) = fx.run_tc(
        programs::TC_FROM_POD,
        &FrameSpec::tcp(CLIENT, 40004, VIP, 80, TCP_RST).build(),
    );
    assert_eq!(verdict, 2, "TC_ACT_SHOT");
}

#[test]
fn tc_no_endpoints_udp_gets_icmp_port_unreachable() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_UDP, &[], &[], 0);
    let input = FrameSpec::udp(CLIENT, 5353, VIP, 80)
        .with_payload(&[7u8; 100])
        .build();
    let (verdict, out) = fx.run_tc(programs::TC_FROM_POD, &input);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let s = seen(&out);
    assert_eq!((s.saddr, s.daddr, s.icmp), (VIP, CLIENT, Some((3, 3))));
    assert_eq!(
        s.payload,
        input[ETH_HLEN..ETH_HLEN + 28],
        "quotes the IPv4 header and 8 bytes of UDP"
    );
    assert_eq!(fx.drops(DropReason::NoBackend), 1);
}

#[test]
fn session_affinity_pins_a_client_to_one_backend() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1, 2], &[], 60);
    let chosen: BTreeSet<u32> = (0..40)
        .map(|i| backend_of(&from_pod(&mut fx, &syn(41000 + i))))
        .collect();
    assert_eq!(
        chosen.len(),
        1,
        "40 connections of one client, one backend: {chosen:?}"
    );
    let aff = fx.affinity();
    assert_eq!(aff.len(), 1);
    assert_eq!(aff[0].1.backend_id, *chosen.iter().next().unwrap());

    // Without affinity the same client spreads over both backends (all 60 on one: p = 2^-59).
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1, 2], &[], 0);
    let chosen: BTreeSet<u32> = (0..60)
        .map(|i| backend_of(&from_pod(&mut fx, &syn(42000 + i))))
        .collect();
    assert_eq!(chosen, BTreeSet::from([1, 2]));
}

#[test]
fn terminating_backends_serve_only_when_none_is_ready() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[3], 0);
    for i in 0..40 {
        assert_eq!(backend_of(&from_pod(&mut fx, &syn(43000 + i))), 1);
    }
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[], &[3], 0);
    for i in 0..10 {
        assert_eq!(backend_of(&from_pod(&mut fx, &syn(43100 + i))), 3);
    }
}

#[test]
fn existing_flows_keep_a_terminating_backend_until_they_close() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[2], &[], 0);
    assert_eq!(backend_of(&from_pod(&mut fx, &syn(44000))), 2);
    // Backend 2 starts terminating; backend 1 is the only ready one.
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[2], 0);
    let data = FrameSpec::tcp(CLIENT, 44000, VIP, 80, TCP_ACK | TCP_PSH)
        .with_payload(b"GET /")
        .build();
    assert_eq!(
        backend_of(&from_pod(&mut fx, &data)),
        2,
        "the established flow stays"
    );
    assert_eq!(
        backend_of(&from_pod(&mut fx, &syn(44001))),
        1,
        "a new flow avoids the terminating backend"
    );
    // FIN marks the entry closing; a new SYN on the same tuple is a new connection and selects anew.
    let fin = FrameSpec::tcp(CLIENT, 44000, VIP, 80, TCP_FIN | TCP_ACK).build();
    assert_eq!(backend_of(&from_pod(&mut fx, &fin)), 2);
    let entry = fx
        .ct_get(&ct_key(CLIENT, 44000, VIP, 80, PROTO_TCP, ct_kind::SERVICE))
        .unwrap();
    assert_ne!(entry.flags & ct_flags::CLOSING, 0);
    assert_eq!(backend_of(&from_pod(&mut fx, &syn(44000))), 1);
    // A backend that disappeared entirely is replaced for its flows.
    cluster_ip(&mut fx, PROTO_TCP, &[3], &[], 0);
    fx.delete_backend(1);
    assert_eq!(backend_of(&from_pod(&mut fx, &data)), 3);
}

#[test]
fn hairpin_flows_are_snated_and_their_replies_restored() {
    let mut fx = Fixture::new();
    let hairpin = Ipv4Addr::new(169, 254, 7, 1);
    fx.set_config(Config {
        hairpin_addr_be: u32::from_ne_bytes(hairpin.octets()),
        ..Config::default()
    });
    fx.put_backend(1, backend(CLIENT, BE_PORT, PROTO_TCP, 0));
    fx.put_slot(TABLE, 0, 1);
    fx.put_rev_nat(REV, VIP, 80);
    fx.put_service(
        svc_key(VIP, 80, PROTO_TCP, SCOPE_INTERNAL),
        ServiceValue {
            ready_count: 1,
            table_id: TABLE,
            rev_nat_id: REV,
            ..Default::default()
        },
    );
    let s = seen(&from_pod(&mut fx, &syn(45000)));
    assert_eq!((s.src(), s.dst()), ((hairpin, 45000), (CLIENT, BE_PORT)));
    let reply = FrameSpec::tcp(CLIENT, BE_PORT, hairpin, 45000, TCP_SYN | TCP_ACK).build();
    let s = seen(&from_pod(&mut fx, &reply));
    assert_eq!((s.src(), s.dst()), ((VIP, 80), (CLIENT, 45000)));
    // The next packet of the flow is translated the same way.
    let ack = FrameSpec::tcp(CLIENT, 45000, VIP, 80, TCP_ACK).build();
    let s = seen(&from_pod(&mut fx, &ack));
    assert_eq!((s.src(), s.dst()), ((hairpin, 45000), (CLIENT, BE_PORT)));
}

#[test]
fn maglev_picks_by_flow_hash() {
    let mut fx = Fixture::new();
    for id in 1..=2 {
        fx.put_backend(id, backend(be_addr(id), BE_PORT, PROTO_UDP, 0));
    }
    for slot in 0..MAGLEV_TABLE_SIZE {
        fx.put_slot(TABLE, slot, 1 + slot % 2);
    }
    fx.put_rev_nat(REV, VIP, 80);
    fx.put_service(
        svc_key(VIP, 80, PROTO_UDP, SCOPE_INTERNAL),
        ServiceValue {
            ready_count: MAGLEV_TABLE_SIZE,
            table_id: TABLE,
            rev_nat_id: REV,
            flags: svc_flags::MAGLEV,
            ..Default::default()
        },
    );
    let frame = |sport| FrameSpec::udp(CLIENT, sport, VIP, 80).build();
    for sport in [6000u16, 6001, 6002, 6003] {
        let first = backend_of(&from_pod(&mut fx, &frame(sport)));
        for _ in 0..20 {
            fx.ct_clear();
            assert_eq!(
                backend_of(&from_pod(&mut fx, &frame(sport))),
                first,
                "same tuple, same backend"
            );
        }
    }
    let spread: BTreeSet<u32> = (0..40)
        .map(|i| backend_of(&from_pod(&mut fx, &frame(7000 + i))))
        .collect();
    assert_eq!(spread, BTreeSet::from([1, 2]));
}

#[test]
fn traffic_that_is_not_ours_passes_byte_for_byte() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[], 0);
    let mut ipv6 = FrameSpec::tcp(CLIENT, 1, VIP, 80, TCP_SYN).build();
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut icmp = FrameSpec::udp(CLIENT, 1, VIP, 80).build();
    icmp[ETH_HLEN + 9] = 1;
    let frames = [
        FrameSpec::tcp(CLIENT, 40000, Ipv4Addr::new(10, 96, 0, 11), 80, TCP_SYN).build(),
        FrameSpec::tcp(CLIENT, 40000, VIP, 81, TCP_SYN).build(),
        FrameSpec::udp(CLIENT, 40000, VIP, 80).build(),
        ipv6,
        icmp,
    ];
    for frame in &frames {
        for prog in [
            programs::TC_FROM_POD,
            programs::TC_TO_POD,
            programs::TC_UPLINK_EGRESS,
        ] {
            assert_eq!(fx.run_tc(prog, frame), (TC_ACT_OK, frame.clone()), "{prog}");
        }
        assert_eq!(fx.run_xdp(programs::XDP_UPLINK, frame), (XDP_PASS, frame.clone()));
    }
    assert!(fx.conntrack().is_empty());
}

#[test]
fn malformed_truncated_and_fragmented_frames_are_safe() {
    let mut fx = Fixture::new();
    cluster_ip(&mut fx, PROTO_TCP, &[1], &[], 0);
    external(&mut fx, &[1], 0, backend_flags::LOCAL);
    let full = syn(46000);
    let node_syn = FrameSpec::tcp(CLIENT, 46000, NODE, NODE_PORT, TCP_SYN).build();
    for len in ETH_HLEN..full.len() {
        assert_eq!(
            fx.run_xdp(programs::XDP_UPLINK, &node_syn[..len]),
            (XDP_PASS, node_syn[..len].to_vec())
        );
        // BPF_PROG_TEST_RUN refuses to build an IPv4 skb shorter than an IPv4 header, so TC starts there.
        if len >= ETH_HLEN + 20 {
            assert_eq!(
                fx.run_tc(programs::TC_FROM_POD, &full[..len]),
                (TC_ACT_OK, full[..len].to_vec()),
                "len {len}"
            );
        }
    }
    // IHL below 5 and a header that claims options the frame does not have.
    for bad_vihl in [0x44u8, 0x4f] {
        let mut f = full.clone();
        f[ETH_HLEN] = bad_vihl;
        assert_eq!(fx.run_tc(programs::TC_FROM_POD, &f), (TC_ACT_OK, f.clone()));
        assert_eq!(fx.run_xdp(programs::XDP_UPLINK, &f), (XDP_PASS, f.clone()));
    }
    // Fragments are never translated (no ports in later fragments), only counted.
    let mut frag = FrameSpec::udp(CLIENT, 5353, VIP, 80);
    frag.frag = 0x2000;
    let frag = frag.build();
    assert_eq!(fx.run_tc(programs::TC_FROM_POD, &frag), (TC_ACT_OK, frag.clone()));
    assert_eq!(fx.run_xdp(programs::XDP_UPLINK, &frag), (XDP_PASS, frag.clone()));
    assert_eq!(fx.drops(DropReason::Fragment), 2);
    assert!(fx.conntrack().is_empty());

    // IP options: the L4 header is found through IHL and translated correctly.
    let mut opts = FrameSpec::tcp(CLIENT, 46001, VIP, 80, TCP_SYN).with_payload(b"x");
    opts.ip_options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0];
    let out = from_pod(&mut fx, &opts.build());
    let s = seen(&out);
    assert_eq!(
        (s.src(), s.dst(), s.payload.as_slice()),
        ((CLIENT, 46001), (be_addr(1), BE_PORT), b"x".as_slice())
    );
}

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const NODE_PORT: u16 = 30080;
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const SNAT_MIN: u16 = 40000;
const SNAT_MAX: u16 = 40099;

/// A NodePort NODE:30080 (external scope) over backend ids with the given backend flags.
fn external(fx: &mut Fixture, ids: &[u32], svc_flag: u16, be_flags: u8) {
    fx.set_config(Config {
        node_addr_be: u32::from_ne_bytes(NODE.octets()),
        hairpin_addr_be: 0,
        snat_port_min: SNAT_MIN,
        snat_port_max: SNAT_MAX,
        flags: 0,
    });
    for id in 1..=3 {
        fx.put_backend(100 + id, backend(be_addr(id), BE_PORT, PROTO_TCP, be_flags));
    }
    for (slot, id) in ids.iter().enumerate() {
        fx.put_slot(TABLE + 1, slot as u32, 100 + id);
    }
    fx.put_rev_nat(REV + 1, NODE, NODE_PORT);
    fx.put_service(
        svc_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        ServiceValue {
            ready_count: ids.len() as u32,
            table_id: TABLE + 1,
            rev_nat_id: REV + 1,
            flags: svc_flags::NODEPORT | svc_flag,
            ..Default::default()
        },
    );
}

fn from_outside(sport: u16, flags: u8) -> Vec<u8> {
    FrameSpec::tcp(OUTSIDE, sport, NODE, NODE_PORT, flags).build()
}

#[test]
fn xdp_local_backend_is_dnated_and_passed_and_its_reply_restored_on_egress() {
    for (svc_flag, be_flags) in [(0, backend_flags::LOCAL), (svc_flags::LOCAL_ONLY, 0)] {
        let mut fx = Fixture::new();
        external(&mut fx, &[1], svc_flag, be_flags);
        let mut with_options =
            FrameSpec::tcp(OUTSIDE, 5555, NODE, NODE_PORT, TCP_SYN).with_payload(b"syn data");
        with_options.ip_options = vec![0x94, 0x04, 0, 0];
        let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &with_options.build());
        assert_eq!(action, XDP_PASS);
        assert_eq!(seen(&out).payload, b"syn data");
        let s = seen(&out);
        assert_eq!(
            (s.src(), s.dst()),
            ((OUTSIDE, 5555), (be_addr(1), BE_PORT)),
            "no SNAT for local backends"
        );
        let entry = fx
            .ct_get(&ct_key(
                OUTSIDE,
                5555,
                NODE,
                NODE_PORT,
                PROTO_TCP,
                ct_kind::SERVICE,
            ))
            .unwrap();
        assert_eq!((entry.backend_id, entry.flags & ct_flags::SNAT), (101, 0));
        // Existing flow, same translation.
        let (_, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5555, TCP_ACK));
        assert_eq!(seen(&out).dst(), (be_addr(1), BE_PORT));
        let reply = FrameSpec::tcp(be_addr(1), BE_PORT, OUTSIDE, 5555, TCP_SYN | TCP_ACK).build();
        // Leaving the backend pod the reply keeps its addresses: the node address as source before routing would
        // be dropped by the kernel as a martian.
        assert_eq!(
            fx.run_tc(programs::TC_FROM_POD, &reply),
            (TC_ACT_OK, reply.clone())
        );
        let (verdict, out) = fx.run_tc(programs::TC_UPLINK_EGRESS, &reply);
        assert_eq!(verdict, TC_ACT_OK);
        let s = seen(&out);
        assert_eq!((s.src(), s.dst()), ((NODE, NODE_PORT), (OUTSIDE, 5555)));
    }
}

#[test]
fn xdp_no_endpoints_answers_with_rst_or_icmp() {
    let mut fx = Fixture::new();
    external(&mut fx, &[], 0, 0);
    let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5556, TCP_SYN));
    assert_eq!(action, XDP_TX);
    let s = seen(&out);
    assert_eq!(
        (s.src(), s.dst(), s.tcp_flags),
        ((NODE, NODE_PORT), (OUTSIDE, 5556), TCP_RST | TCP_ACK)
    );
    assert_eq!((s.src_mac, s.dst_mac), (HOST_MAC, CLIENT_MAC));

    fx.put_service(
        svc_key(NODE, NODE_PORT, PROTO_UDP, SCOPE_EXTERNAL),
        ServiceValue {
            table_id: TABLE + 1,
            rev_nat_id: REV + 1,
            ..Default::default()
        },
    );
    let udp = FrameSpec::udp(OUTSIDE, 5557, NODE, NODE_PORT).build();
    let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &udp);
    assert_eq!(action, XDP_TX);
    let s = seen(&out);
    assert_eq!((s.saddr, s.daddr, s.icmp), (NODE, OUTSIDE, Some((3, 3))));
    assert_eq!(s.payload, udp[ETH_HLEN..ETH_HLEN + 28]);
    assert_eq!(fx.drops(DropReason::NoBackend), 2);

    // externalTrafficPolicy Local without a local endpoint: dropped (and counted), not answered.
    let mut fx = Fixture::new();
    external(&mut fx, &[], svc_flags::LOCAL_ONLY, 0);
    let (action, _) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5556, TCP_SYN));
    assert_eq!(action, XDP_DROP);
    assert_eq!(fx.drops(DropReason::NoBackend), 1);
}

#[test]
fn xdp_udp_nodeport_to_a_local_backend_keeps_checksums_valid() {
    let mut fx = Fixture::new();
    external(&mut fx, &[], 0, 0);
    fx.put_backend(104, backend(be_addr(1), BE_PORT, PROTO_UDP, backend_flags::LOCAL));
    fx.put_slot(TABLE + 2, 0, 104);
    fx.put_service(
        svc_key(NODE, NODE_PORT, PROTO_UDP, SCOPE_EXTERNAL),
        ServiceValue {
            ready_count: 1,
            table_id: TABLE + 2,
            rev_nat_id: REV + 1,
            ..Default::default()
        },
    );
    let (action, out) = fx.run_xdp(
        programs::XDP_UPLINK,
        &FrameSpec::udp(OUTSIDE, 5353, NODE, NODE_PORT).build(),
    );
    assert_eq!(action, XDP_PASS);
    let s = seen(&out);
    assert_eq!(
        (s.src(), s.dst(), s.payload.as_slice()),
        ((OUTSIDE, 5353), (be_addr(1), BE_PORT), b"ping".as_slice())
    );
    assert_ne!(udp_csum_field(&out), 0);
    let mut spec = FrameSpec::udp(OUTSIDE, 5354, NODE, NODE_PORT);
    spec.udp_no_csum = true;
    let (_, out) = fx.run_xdp(programs::XDP_UPLINK, &spec.build());
    assert_eq!(seen(&out).dst(), (be_addr(1), BE_PORT));
    assert_eq!(udp_csum_field(&out), 0);
    let reply = FrameSpec::udp(be_addr(1), BE_PORT, OUTSIDE, 5353).build();
    let (_, out) = fx.run_tc(programs::TC_UPLINK_EGRESS, &reply);
    assert_eq!(seen(&out).src(), (NODE, NODE_PORT));
}

/// In a private namespace: `lo` (where test frames "arrive") and a veth `sfx0` with the node address, a gateway
/// with a known MAC for the backend network and the default route, and one without a neighbour entry.
fn uplink_routes() -> [u8; 6] {
    sh("ip link set lo up \
        && ip link add sfx0 type veth peer name sfx1 \
        && ip link set sfx0 up && ip link set sfx1 up \
        && ip addr add 192.168.50.2/24 dev sfx0 \
        && ip neigh replace 192.168.50.1 lladdr 02:00:00:00:00:aa dev sfx0 nud permanent \
        && ip route add 10.244.2.0/24 via 192.168.50.1 dev sfx0 \
        && ip route add 10.244.3.0/24 via 192.168.50.3 dev sfx0 \
        && ip route add default via 192.168.50.1 dev sfx0 \
        && sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv4.conf.lo.forwarding=1");
    mac_of("sfx0")
}

#[test]
fn xdp_remote_backend_is_snated_forwarded_and_its_reply_restored() {
    let mut fx = Fixture::new();
    external(&mut fx, &[1], 0, 0);
    in_private_netns(|| {
        let node_mac = uplink_routes();
        let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5558, TCP_SYN));
        assert_eq!(action, XDP_REDIRECT, "forwarded out of sfx0");
        let s = seen(&out);
        assert_eq!(s.saddr, NODE);
        assert!(
            (SNAT_MIN..=SNAT_MAX).contains(&s.sport),
            "SNAT port {} in range",
            s.sport
        );
        assert_eq!(s.dst(), (be_addr(1), BE_PORT));
        assert_eq!(
            (s.dst_mac, s.src_mac, s.ttl),
            ([2, 0, 0, 0, 0, 0xaa], node_mac, 63)
        );
        let nat_port = s.sport;

        let svc = fx
            .ct_get(&ct_key(
                OUTSIDE,
                5558,
                NODE,
                NODE_PORT,
                PROTO_TCP,
                ct_kind::SERVICE,
            ))
            .unwrap();
        assert_eq!(svc.flags & ct_flags::SNAT, ct_flags::SNAT);
        assert_eq!(
            (svc.nat_addr_be, u16::from_be(svc.nat_port_be)),
            (u32::from_ne_bytes(NODE.octets()), nat_port)
        );
        let snat = fx
            .ct_get(&ct_key(
                be_addr(1),
                BE_PORT,
                NODE,
                nat_port,
                PROTO_TCP,
                ct_kind::SNAT_REPLY,
            ))
            .unwrap();
        assert_eq!(
            (snat.nat_addr_be, u16::from_be(snat.nat_port_be)),
            (u32::from_ne_bytes(OUTSIDE.octets()), 5558)
        );

        // The same flow keeps its port, and its reply translation comes back if the LRU evicted it.
        let snat_key = ct_key(
            be_addr(1),
            BE_PORT,
            NODE,
            nat_port,
            PROTO_TCP,
            ct_kind::SNAT_REPLY,
        );
        fx.ct_remove(&snat_key);
        let (_, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5558, TCP_ACK));
        assert_eq!(seen(&out).src(), (NODE, nat_port));
        assert!(fx.ct_get(&snat_key).is_some(), "SNAT_REPLY entry recreated");

        // The backend's reply goes back to the client, from the NodePort.
        let reply = FrameSpec::tcp(be_addr(1), BE_PORT, NODE, nat_port, TCP_SYN | TCP_ACK).build();
        let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &reply);
        assert_eq!(action, XDP_REDIRECT);
        let s = seen(&out);
        assert_eq!(
            (s.src(), s.dst(), s.tcp_flags),
            ((NODE, NODE_PORT), (OUTSIDE, 5558), TCP_SYN | TCP_ACK)
        );
    });
}

#[test]
fn xdp_unknown_neighbour_passes_the_rewritten_frame_to_the_kernel() {
    let mut fx = Fixture::new();
    external(&mut fx, &[1], 0, 0);
    fx.put_backend(101, backend(Ipv4Addr::new(10, 244, 3, 9), BE_PORT, PROTO_TCP, 0));
    in_private_netns(|| {
        uplink_routes();
        let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5559, TCP_SYN));
        assert_eq!(action, XDP_PASS);
        let s = seen(&out);
        assert_eq!(
            (s.saddr, s.dst(), s.ttl),
            (NODE, (Ipv4Addr::new(10, 244, 3, 9), BE_PORT), 64)
        );
    });
}

#[test]
fn xdp_snat_port_exhaustion_drops_and_counts() {
    let mut fx = Fixture::new();
    external(&mut fx, &[1], 0, 0);
    let mut cfg = Config {
        node_addr_be: u32::from_ne_bytes(NODE.octets()),
        snat_port_min: SNAT_MIN,
        snat_port_max: SNAT_MIN,
        ..Config::default()
    };
    fx.set_config(cfg);
    // The only port is taken by another flow to the same backend.
    fx.ct_put(
        ct_key(
            be_addr(1),
            BE_PORT,
            NODE,
            SNAT_MIN,
            PROTO_TCP,
            ct_kind::SNAT_REPLY,
        ),
        CtValue::default(),
    );
    let (action, _) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5560, TCP_SYN));
    assert_eq!(action, XDP_DROP);
    assert_eq!(fx.drops(DropReason::SnatPortsExhausted), 1);
    // With a free port the flow goes through.
    cfg.snat_port_max = SNAT_MIN + 1;
    fx.set_config(cfg);
    in_private_netns(|| {
        uplink_routes();
        let (action, out) = fx.run_xdp(programs::XDP_UPLINK, &from_outside(5560, TCP_SYN));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(seen(&out).sport, SNAT_MIN + 1);
    });
}
