//! Every Skiff eBPF program passes the verifier on this kernel, maps are pinned by name and reused, and the socket
//! hooks translate a real connect()/sendmsg() to a loopback VIP and restore it for getpeername()/recvmsg().
use std::{
    fs,
    io::Write,
    net::{Ipv4Addr, TcpListener, UdpSocket},
    path::PathBuf,
    process::Command,
    thread,
    time::Duration,
};

use aya::{
    EbpfLoader,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use skiff_common::{
    PROTO_TCP, PROTO_UDP, SCOPE_INTERNAL, ServiceKey, ServiceValue, SockRevNatKey, SockRevNatValue, maps,
};
use tests::fixture::{self, Fixture, PREFIX, SOCK_PROGRAMS, TC_PROGRAMS, XDP_PROGRAMS, svc_key};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";

fn load_sock_programs(fx: &mut Fixture) {
    for name in SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = fx.bpf.program_mut(name).expect(name).try_into().expect(name);
        prog.load()
            .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:?}"));
    }
}

#[test]
fn every_program_passes_the_verifier() {
    let mut fx = Fixture::new();
    for name in TC_PROGRAMS {
        fx.tc(name);
    }
    for name in XDP_PROGRAMS {
        fx.xdp(name);
    }
    load_sock_programs(&mut fx);
    let mut expected: Vec<&str> = TC_PROGRAMS
        .iter()
        .chain(&XDP_PROGRAMS)
        .chain(&SOCK_PROGRAMS)
        .copied()
        .collect();
    let mut found = fx.program_names();
    expected.sort_unstable();
    found.sort_unstable();
    assert_eq!(
        found, expected,
        "the object holds exactly the programs skiff-common names"
    );
    for name in maps::ALL {
        assert!(fx.pin_dir().join(name).exists(), "map {name} is pinned by name");
    }
}

#[test]
fn pinned_maps_are_reused_by_the_next_load() {
    let mut fx = Fixture::new();
    let key = svc_key(Ipv4Addr::new(10, 96, 0, 1), 443, PROTO_TCP, SCOPE_INTERNAL);
    let value = ServiceValue {
        ready_count: 2,
        table_id: 7,
        rev_nat_id: 3,
        ..Default::default()
    };
    fx.put_service(key, value);
    let mut again = EbpfLoader::new()
        .default_map_pin_directory(fx.pin_dir())
        .load(skiff_agent::bpf::object_bytes())
        .expect("second load");
    let services: HashMap<&mut MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(again.map_mut(maps::SERVICES).expect("services")).expect("hash map");
    assert_eq!(services.get(&key, 0).expect("service survives a reload"), value);
}

/// A cgroup under the cgroup2 mount, removed on drop.
struct CgroupGuard(PathBuf);

impl CgroupGuard {
    fn new() -> Self {
        let path = PathBuf::from(CGROUP_ROOT).join(format!("{PREFIX}-{}", std::process::id()));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e} (run as root)", path.display()));
        Self(path)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // The child has exited by now; retry briefly while the kernel reaps it.
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

const CLIENT: &str = r#"
import socket
s = socket.create_connection(("127.77.0.1", 80), timeout=5)
print("tcp_peer=%s:%d" % s.getpeername())
print("tcp_data=" + s.recv(64).decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping", ("127.77.0.2", 53))
d, a = u.recvfrom(64)
print("udp_from=%s:%d" % a)
print("udp_data=" + d.decode())
try:
    socket.create_connection(("127.77.0.3", 80), timeout=5)
    print("reject=none")
except OSError as e:
    print("reject=%d" % e.errno)
"#;

#[test]
fn socket_hooks_translate_connect_and_restore_the_peer() {
    let mut fx = Fixture::new();
    load_sock_programs(&mut fx);
    let cgroup = CgroupGuard::new();
    let cg = fs::File::open(&cgroup.0).expect("open cgroup");
    for name in SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = fx.bpf.program_mut(name).expect(name).try_into().expect(name);
        prog.attach(&cg, CgroupAttachMode::Single)
            .unwrap_or_else(|e| panic!("attach {name}: {e:?}"));
    }

    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp listener");
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let loopback = Ipv4Addr::LOCALHOST;

    let be = fixture::backend;
    fx.put_backend(1, be(loopback, tcp_port, PROTO_TCP, 0));
    fx.put_backend(2, be(loopback, udp_port, PROTO_UDP, 0));
    fx.put_slot(1, 0, 1);
    fx.put_slot(2, 0, 2);
    let svc = |table_id, rev_nat_id, ready_count| ServiceValue {
        ready_count,
        table_id,
        rev_nat_id,
        ..Default::default()
    };
    fx.put_service(
        svc_key(Ipv4Addr::new(127, 77, 0, 1), 80, PROTO_TCP, SCOPE_INTERNAL),
        svc(1, 1, 1),
    );
    fx.put_service(
        svc_key(Ipv4Addr::new(127, 77, 0, 2), 53, PROTO_UDP, SCOPE_INTERNAL),
        svc(2, 2, 1),
    );
    fx.put_service(
        svc_key(Ipv4Addr::new(127, 77, 0, 3), 80, PROTO_TCP, SCOPE_INTERNAL),
        svc(3, 3, 0),
    );

    let server = thread::spawn(move || {
        tcp.set_nonblocking(false).unwrap();
        let (mut conn, _) = tcp.accept().expect("accept");
        conn.write_all(b"backend").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = udp.recv_from(&mut buf).expect("udp request");
        assert_eq!(&buf[..n], b"ping");
        udp.send_to(b"pong", from).unwrap();
    });

    let script = format!(
        "echo $$ > {}/cgroup.procs && exec timeout 20 python3 -c '{}'",
        cgroup.0.display(),
        CLIENT.replace('\'', "\"")
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.join().expect("server thread");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "tcp_peer=127.77.0.1:80",
            "tcp_data=backend",
            "udp_from=127.77.0.2:53",
            "udp_data=pong",
            "reject=1",
        ],
        "connect() reached the backend, getpeername()/recvmsg() show the VIP, no endpoints -> EPERM"
    );

    let rev: HashMap<&mut MapData, SockRevNatKey, SockRevNatValue> =
        HashMap::try_from(fx.bpf.map_mut(maps::SOCK_REV_NAT).unwrap()).unwrap();
    let entries: Vec<SockRevNatValue> = rev.iter().map(|r| r.unwrap().1).collect();
    assert!(
        entries
            .iter()
            .any(|v| v.addr_be == fixture::be_addr(Ipv4Addr::new(127, 77, 0, 1)) && v.rev_nat_id == 1)
    );
    assert!(
        entries
            .iter()
            .any(|v| v.addr_be == fixture::be_addr(Ipv4Addr::new(127, 77, 0, 2)) && v.rev_nat_id == 2)
    );
    assert_eq!(fx.svc_packets(1), 1, "one connect counted for the TCP service");
    assert_eq!(
        fx.drops(skiff_common::DropReason::NoBackend),
        1,
        "the rejected connect is counted"
    );
}
