//! The agent's eBPF I/O against the real kernel (root): load with pinned maps, attach every hook as a pinned link
//! inside a throwaway network namespace, apply a plan, restart without losing state, inspect, cleanup.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use skiff_agent::{
    bpf::{
        attach::{AttachConfig, Attacher, Mode, XdpAttachMode, attach_xdp_pass},
        cleanup::cleanup_node,
        ct_gc::{CtTimeouts, gc_pass},
        inspect::{What, inspect},
        loader::{MapSizes, load, load_standalone},
        maps::{FlowMaps, NodeConfig, ServiceMaps, read_config, write_config},
        names::Names,
        netns, object_bytes,
        pins::PinDir,
        sys::monotonic_ns,
    },
    proxy::model::{MapContents, MapOp},
};
use skiff_common::{
    Backend, CtKey, CtValue, PROTO_TCP, PROTO_UDP, RevNat, SCOPE_INTERNAL, ServiceKey, ServiceValue, SlotKey,
    ct_kind,
};

const PREFIX: &str = "skiff-agentio";

/// Everything the test creates, removed on drop (also when an assertion fails).
struct Guard {
    name: String,
    cgroup: PathBuf,
    pin: PinDir,
}

impl Guard {
    fn new() -> Self {
        assert!(
            nix_is_root(),
            "agent_io needs root (BPF, netns, cgroups): run it with sudo"
        );
        let name = format!("{PREFIX}-{}", std::process::id());
        let g = Guard {
            cgroup: Path::new("/sys/fs/cgroup/unified").join(&name),
            pin: PinDir::for_node(&name).unwrap(),
            name,
        };
        g.drop_leftovers();
        sh(&["ip", "netns", "add", &g.name]);
        let ip = |args: &[&str]| {
            let mut v = vec!["ip", "-n", g.name.as_str()];
            v.extend_from_slice(args);
            sh(&v);
        };
        ip(&["link", "add", "up0", "type", "veth", "peer", "name", "pod0"]);
        ip(&["addr", "add", "10.231.0.1/24", "dev", "up0"]);
        ip(&["link", "set", "up0", "up"]);
        ip(&["link", "set", "pod0", "up"]);
        ip(&["link", "set", "lo", "up"]);
        std::fs::create_dir(&g.cgroup).expect("creating the test cgroup");
        g
    }

    fn drop_leftovers(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = cleanup_node(&self.pin);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.drop_leftovers();
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running a command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn be(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a)).to_be()
}

fn service_key() -> ServiceKey {
    ServiceKey {
        addr_be: be([10, 96, 0, 10]),
        port_be: 80u16.to_be(),
        proto: PROTO_TCP,
        scope: SCOPE_INTERNAL,
    }
}

/// A hand-built plan: two backends, one service with two ready slots.
fn plan() -> Vec<MapOp> {
    let backend = |last: u8| Backend {
        addr_be: be([10, 244, 0, last]),
        port_be: 8080u16.to_be(),
        proto: PROTO_TCP,
        flags: 0,
    };
    vec![
        MapOp::PutBackend(1, backend(5)),
        MapOp::PutBackend(2, backend(6)),
        MapOp::PutRevNat(
            1,
            RevNat {
                addr_be: be([10, 96, 0, 10]),
                port_be: 80u16.to_be(),
                _pad: 0,
            },
        ),
        MapOp::PutSlot(SlotKey { table_id: 1, slot: 0 }, 1),
        MapOp::PutSlot(SlotKey { table_id: 1, slot: 1 }, 2),
        MapOp::PutService(
            service_key(),
            ServiceValue {
                ready_count: 2,
                terminating_count: 0,
                table_id: 1,
                affinity_timeout_s: 0,
                rev_nat_id: 1,
                flags: 0,
            },
        ),
    ]
}

fn attach_cfg(g: &Guard) -> AttachConfig {
    AttachConfig {
        mode: Mode::Both,
        cgroup: g.cgroup.clone(),
        pod_ifaces: vec!["pod*".into()],
        uplink: Some("up0".into()),
        xdp_mode: XdpAttachMode::Native,
        netns: Some(g.name.clone()),
        rescan: Duration::from_millis(200),
    }
}

const LINKS: [&str; 8] = [
    "skiff_connect4-cgroup",
    "skiff_sendmsg4-cgroup",
    "skiff_recvmsg4-cgroup",
    "skiff_getpeername4-cgroup",
    "skiff_xdp_uplink-up0",
    "skiff_tc_uplink_egress-up0",
    "skiff_tc_from_pod-pod0",
    "skiff_tc_to_pod-pod0",
];

/// Kernel link id behind a pinned link.
fn link_id(pin: &PinDir, name: &str) -> u32 {
    let p = pin.links().join(name);
    let l: FdLink = PinnedLink::from_pin(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into();
    l.info().unwrap().id()
}

fn live_link_ids() -> Vec<u32> {
    aya::programs::loaded_links()
        .filter_map(|l| l.ok())
        .map(|l| l.id())
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn load_attach_apply_restart_inspect_cleanup() {
    let g = Guard::new();
    let sizes = MapSizes {
        conntrack: 4096,
        services: 1024,
        backends: 1024,
        slots: 4096,
        rev_nat: 1024,
        sock_rev_nat: 1024,
        affinity: 1024,
    };

    // Load and attach everything.
    let ebpf = load(object_bytes(), &g.pin, &sizes).expect("loading the eBPF object");
    let attacher = Attacher::start(ebpf, g.pin.clone(), attach_cfg(&g)).expect("attaching");
    for l in LINKS {
        assert!(g.pin.links().join(l).exists(), "link pin {l} missing");
    }
    let ids: Vec<u32> = LINKS.iter().map(|l| link_id(&g.pin, l)).collect();
    let live = live_link_ids();
    assert!(
        ids.iter().all(|id| live.contains(id)),
        "links not live: {ids:?} vs {live:?}"
    );

    // Node config.
    let cfg = NodeConfig {
        node_addr: Ipv4Addr::new(10, 231, 0, 1),
        hairpin_addr: Ipv4Addr::new(169, 254, 42, 1),
        snat_ports: (40000, 60999),
    };
    write_config(&g.pin, cfg).unwrap();
    assert_eq!(read_config(&g.pin).unwrap(), cfg.to_map_value());

    // Apply a plan; read it back.
    let mut maps = ServiceMaps::open(&g.pin).unwrap();
    assert_eq!(
        maps.read_contents().unwrap(),
        MapContents::default(),
        "fresh maps are empty"
    );
    let ops = plan();
    assert_eq!(maps.apply(&ops).unwrap().ops, ops.len());
    let mut expected = MapContents::default();
    expected.apply(&ops);
    assert_eq!(maps.read_contents().unwrap(), expected);

    // UDP purge removes UDP flows of that backend only.
    let mut flows = FlowMaps::open(&g.pin).unwrap();
    let ct = |proto: u8, sport: u16| CtKey {
        saddr_be: be([10, 244, 1, 1]),
        daddr_be: be([10, 96, 0, 10]),
        sport_be: sport.to_be(),
        dport_be: 80u16.to_be(),
        proto,
        kind: ct_kind::SERVICE,
        _pad: 0,
    };
    let val = CtValue {
        backend_id: 2,
        rev_nat_id: 1,
        ..Default::default()
    };
    flows.conntrack.insert(ct(PROTO_UDP, 1000), val, 0).unwrap();
    flows.conntrack.insert(ct(PROTO_TCP, 1001), val, 0).unwrap();
    flows
        .conntrack
        .insert(ct(PROTO_UDP, 1002), CtValue { backend_id: 1, ..val }, 0)
        .unwrap();
    let s = maps.apply(&[MapOp::PurgeUdpConntrack(2)]).unwrap();
    assert_eq!(s.udp_flows_purged, 1);
    let left: Vec<u16> = flows
        .conntrack_entries()
        .iter()
        .map(|(k, _)| u16::from_be(k.sport_be))
        .collect();
    assert!(
        left.contains(&1001) && left.contains(&1002) && !left.contains(&1000),
        "{left:?}"
    );

    // Conntrack GC: an idle UDP flow goes, a fresh TCP flow stays.
    let now = monotonic_ns();
    flows
        .conntrack
        .insert(
            ct(PROTO_UDP, 2000),
            CtValue {
                last_seen_ns: now.saturating_sub(120_000_000_000),
                ..val
            },
            0,
        )
        .unwrap();
    flows
        .conntrack
        .insert(
            ct(PROTO_TCP, 2001),
            CtValue {
                last_seen_ns: now,
                ..val
            },
            0,
        )
        .unwrap();
    let gc = gc_pass(&mut flows, &CtTimeouts::default(), now, 1000).unwrap();
    assert!(gc.deleted >= 1, "{gc:?}");
    let left: Vec<u16> = flows
        .conntrack_entries()
        .iter()
        .map(|(k, _)| u16::from_be(k.sport_be))
        .collect();
    assert!(left.contains(&2001) && !left.contains(&2000), "{left:?}");

    // A new pod interface is picked up by the rescan.
    sh(&[
        "ip", "-n", &g.name, "link", "add", "pod1", "type", "veth", "peer", "name", "pod1p",
    ]);
    sh(&["ip", "-n", &g.name, "link", "set", "pod1", "up"]);
    wait_for("pod1 to be attached", || {
        g.pin.links().join("skiff_tc_from_pod-pod1").exists()
    });
    // xdp-pass on the peer side; the proxy's rescan leaves it alone.
    let pass_pin = g.pin.clone();
    netns::spawn_in(Some(g.name.clone()), "xdp-pass", move || {
        let mut e = load_standalone(object_bytes(), &pass_pin, &[skiff_common::programs::XDP_PASS]).unwrap();
        attach_xdp_pass(&mut e, &pass_pin, "pod1p").unwrap();
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap();
    assert!(
        !g.pin.path().join("scratch").exists(),
        "standalone load leaves no scratch pins"
    );
    // Deleting the pod interface unpins its links.
    sh(&["ip", "-n", &g.name, "link", "del", "pod1"]);
    wait_for("pod1's links to go", || {
        !g.pin.links().join("skiff_tc_from_pod-pod1").exists()
    });

    // "Kill" the agent: links and maps stay.
    drop(maps);
    drop(flows);
    drop(attacher);
    let live = live_link_ids();
    assert!(
        ids.iter().all(|id| live.contains(id)),
        "links must survive the agent"
    );

    // Restart: contents restored, links replaced in place (same link ids: no gap).
    let ebpf = load(object_bytes(), &g.pin, &sizes).expect("reloading");
    assert_eq!(
        ServiceMaps::open(&g.pin).unwrap().read_contents().unwrap(),
        expected,
        "contents survive restarts"
    );
    let attacher = Attacher::start(ebpf, g.pin.clone(), attach_cfg(&g)).expect("re-attaching");
    let again: Vec<u32> = LINKS.iter().map(|l| link_id(&g.pin, l)).collect();
    assert_eq!(
        again, ids,
        "restart must update the pinned links, not recreate them"
    );
    assert!(g.pin.links().join("xdp-pass-pod1p").exists());

    // Inspect reads the pinned maps (names from the names file).
    let mut names = Names::default();
    names.insert(&service_key(), "default/web:http".into());
    names.store(&g.pin.names_file()).unwrap();
    let out = inspect(&g.pin, &What::Services).unwrap();
    assert!(
        out.contains("10.96.0.10:80/tcp") && out.contains("default/web:http"),
        "{out}"
    );
    assert!(out.contains("10.244.0.5:8080,10.244.0.6:8080"), "{out}");
    let out = inspect(&g.pin, &What::Backends).unwrap();
    assert!(out.contains("2 backends"), "{out}");
    let out = inspect(&g.pin, &What::Conntrack).unwrap();
    assert!(out.contains("10.244.1.1:2001"), "{out}");

    // Cleanup removes every pin and detaches every link.
    drop(attacher);
    let removed = cleanup_node(&g.pin).unwrap();
    assert_eq!(removed.links.len(), LINKS.len() + 1, "{removed:?}");
    assert_eq!(removed.maps.len(), skiff_common::maps::ALL.len(), "{removed:?}");
    assert!(!g.pin.path().exists());
    assert!(!g.pin.state_dir().exists());
    assert_eq!(removed.other, [g.pin.names_file()]);
    let live = live_link_ids();
    assert!(
        ids.iter().all(|id| !live.contains(id)),
        "links still attached after cleanup: {ids:?}"
    );
    assert!(cleanup_node(&g.pin).unwrap().is_empty(), "cleanup is idempotent");
}
