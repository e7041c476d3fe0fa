//! BPF fixture harness: loads Skiff's object with maps pinned in a throwaway bpffs directory, fills maps with
//! typed values and runs TC/XDP programs on hand-built frames with BPF_PROG_TEST_RUN.
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use skiff_common::{
    AffinityKey, AffinityValue, Backend, Config, CtKey, CtValue, DropReason, PROTO_TCP, RevNat, ServiceKey,
    ServiceValue, SlotKey, SlotValue, maps, programs,
};

/// Name prefix of everything the fixtures create (pin dirs, cgroups, namespaces).
pub const PREFIX: &str = "skiff-fixture";
const BPFFS: &str = "/sys/fs/bpf";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Mounts bpffs at /sys/fs/bpf unless it is mounted already; panics if it cannot.
pub fn ensure_bpffs() {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf"))
    {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mounting bpffs at {BPFFS} failed (BPF fixtures must run as root)"
    );
}

/// A unique pin directory `/sys/fs/bpf/skiff-fixture-<pid>-<n>`, removed with everything in it on drop.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new() -> Self {
        ensure_bpffs();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(BPFFS).join(format!("{PREFIX}-{}-{n}", std::process::id()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e} (run as root)", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// Skiff's object loaded with its maps pinned in a private directory. Programs are loaded on demand.
pub struct Fixture {
    pub bpf: Ebpf,
    // Dropped after `bpf` (field order), so the pins go once nothing uses them.
    pins: PinDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let pins = PinDir::new();
        let object = skiff_agent::bpf::object_bytes();
        assert!(
            !object.is_empty(),
            "the eBPF object is empty: build without AYA_BUILD_SKIP"
        );
        let bpf = EbpfLoader::new()
            .default_map_pin_directory(pins.path())
            .load(object)
            .unwrap_or_else(|e| panic!("loading the eBPF object: {e:?}"));
        Self { bpf, pins }
    }

    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    /// Loads (once) and returns a TC program.
    pub fn tc(&mut self, name: &str) -> &mut SchedClassifier {
        let prog: &mut SchedClassifier = self
            .bpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not a TC program: {e}"));
        if prog.fd().is_err() {
            prog.load()
                .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:?}"));
        }
        prog
    }

    /// Loads (once) and returns an XDP program.
    pub fn xdp(&mut self, name: &str) -> &mut Xdp {
        let prog: &mut Xdp = self
            .bpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"));
        if prog.fd().is_err() {
            prog.load()
                .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:?}"));
        }
        prog
    }

    /// Runs a TC program on `frame`: (verdict, output frame).
    pub fn run_tc(&mut self, name: &str, frame: &[u8]) -> (i32, Vec<u8>) {
        let prog = self.tc(name);
        run(|o| prog.test_run(o), frame)
    }

    /// Runs an XDP program on `frame`: (action, output frame).
    pub fn run_xdp(&mut self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.xdp(name);
        let (v, out) = run(|o| prog.test_run(o), frame);
        (v as u32, out)
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.bpf.map_mut(name).unwrap_or_else(|| panic!("no map {name}")))
            .unwrap_or_else(|e| panic!("map {name}: {e}"))
    }

    pub fn put_service(&mut self, key: ServiceKey, value: ServiceValue) {
        self.hash::<ServiceKey, ServiceValue>(maps::SERVICES)
            .insert(key, value, 0)
            .expect("insert service");
    }

    pub fn put_backend(&mut self, id: u32, backend: Backend) {
        self.hash::<u32, Backend>(maps::BACKENDS)
            .insert(id, backend, 0)
            .expect("insert backend");
    }

    pub fn delete_backend(&mut self, id: u32) {
        self.hash::<u32, Backend>(maps::BACKENDS)
            .remove(&id)
            .expect("remove backend");
    }

    pub fn put_slot(&mut self, table_id: u32, slot: u32, backend_id: u32) {
        self.hash::<SlotKey, SlotValue>(maps::SLOTS)
            .insert(SlotKey { table_id, slot }, SlotValue { backend_id }, 0)
            .expect("insert slot");
    }

    pub fn put_rev_nat(&mut self, id: u16, addr: Ipv4Addr, port: u16) {
        self.hash::<u32, RevNat>(maps::REV_NAT)
            .insert(
                id as u32,
                RevNat {
                    addr_be: be_addr(addr),
                    port_be: port.to_be(),
                    _pad: 0,
                },
                0,
            )
            .expect("insert rev nat");
    }

    pub fn set_config(&mut self, config: Config) {
        let mut a: Array<&mut MapData, Config> =
            Array::try_from(self.bpf.map_mut(maps::CONFIG).expect("config map")).expect("config array");
        a.set(0, config, 0).expect("write config");
    }

    pub fn conntrack(&mut self) -> Vec<(CtKey, CtValue)> {
        self.hash::<CtKey, CtValue>(maps::CONNTRACK)
            .iter()
            .map(|r| r.expect("iterate conntrack"))
            .collect()
    }

    pub fn ct_get(&mut self, key: &CtKey) -> Option<CtValue> {
        self.hash::<CtKey, CtValue>(maps::CONNTRACK).get(key, 0).ok()
    }

    pub fn ct_remove(&mut self, key: &CtKey) {
        self.hash::<CtKey, CtValue>(maps::CONNTRACK)
            .remove(key)
            .expect("remove conntrack entry");
    }

    /// Removes every conntrack entry (a fresh start for selection tests).
    pub fn ct_clear(&mut self) {
        let mut ct = self.hash::<CtKey, CtValue>(maps::CONNTRACK);
        let keys: Vec<CtKey> = ct.keys().map(|k| k.expect("iterate conntrack")).collect();
        for k in keys {
            ct.remove(&k).expect("remove conntrack entry");
        }
    }

    pub fn ct_put(&mut self, key: CtKey, value: CtValue) {
        self.hash::<CtKey, CtValue>(maps::CONNTRACK)
            .insert(key, value, 0)
            .expect("insert conntrack");
    }

    pub fn affinity(&mut self) -> Vec<(AffinityKey, AffinityValue)> {
        self.hash::<AffinityKey, AffinityValue>(maps::AFFINITY)
            .iter()
            .map(|r| r.expect("iterate affinity"))
            .collect()
    }

    fn per_cpu_sum(&mut self, name: &str, index: u32) -> (u64, u64) {
        let a: PerCpuArray<&mut MapData, skiff_common::Counters> =
            PerCpuArray::try_from(self.bpf.map_mut(name).expect("stats map")).expect("per-cpu array");
        let v = a.get(&index, 0).expect("read counters");
        v.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
    }

    /// Packets counted for a drop reason (all CPUs).
    pub fn drops(&mut self, reason: DropReason) -> u64 {
        self.per_cpu_sum(maps::DROPS, reason as u32).0
    }

    /// Packets counted for a service (by rev-NAT id).
    pub fn svc_packets(&mut self, rev_nat_id: u16) -> u64 {
        self.per_cpu_sum(maps::SVC_STATS, rev_nat_id as u32).0
    }

    /// Packets counted for a backend.
    pub fn backend_packets(&mut self, backend_id: u32) -> u64 {
        self.per_cpu_sum(maps::BACKEND_STATS, backend_id).0
    }

    /// Every program of the object, by name.
    pub fn program_names(&self) -> Vec<String> {
        self.bpf.programs().map(|(n, _)| n.to_string()).collect()
    }
}

fn run(
    f: impl FnOnce(TestRunOptions<'_>) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
    frame: &[u8],
) -> (i32, Vec<u8>) {
    // Room for frames the program grows (ICMP answers) plus slack.
    let mut out = vec![0u8; frame.len() + 256];
    let r = f(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })
    .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"));
    out.truncate(r.data_size_out as usize);
    (r.return_value as i32, out)
}

/// An address as the raw network-order word the maps hold.
pub fn be_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

pub fn svc_key(addr: Ipv4Addr, port: u16, proto: u8, scope: u8) -> ServiceKey {
    ServiceKey {
        addr_be: be_addr(addr),
        port_be: port.to_be(),
        proto,
        scope,
    }
}

pub fn backend(addr: Ipv4Addr, port: u16, proto: u8, flags: u8) -> Backend {
    Backend {
        addr_be: be_addr(addr),
        port_be: port.to_be(),
        proto,
        flags,
    }
}

/// A conntrack key from host-order values.
pub fn ct_key(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16, proto: u8, kind: u8) -> CtKey {
    CtKey {
        saddr_be: be_addr(saddr),
        daddr_be: be_addr(daddr),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto,
        kind,
        _pad: 0,
    }
}

/// Every TC program and every XDP program of the object (the socket hooks are loaded separately).
pub const TC_PROGRAMS: [&str; 3] = [
    programs::TC_FROM_POD,
    programs::TC_TO_POD,
    programs::TC_UPLINK_EGRESS,
];
pub const XDP_PROGRAMS: [&str; 2] = [programs::XDP_UPLINK, programs::XDP_PASS];
pub const SOCK_PROGRAMS: [&str; 4] = [
    programs::CONNECT4,
    programs::SENDMSG4,
    programs::RECVMSG4,
    programs::GETPEERNAME4,
];

/// TCP, for callers that want the constant without importing skiff-common.
pub const TCP: u8 = PROTO_TCP;
