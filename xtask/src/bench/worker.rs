//! Load generators and servers, run as child processes of xtask inside a namespace (`bench --worker JSON`).
use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::stats;

/// What a worker process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Job {
    /// Accept, read the request, answer, close (server side of the connection-rate test).
    TcpServer { port: u16, threads: usize },
    /// Many concurrent clients: connect, small request, read answer, close; for `millis`.
    Crr {
        dst: Ipv4Addr,
        port: u16,
        clients: usize,
        millis: u64,
    },
    /// Count UDP datagrams on `port` until told to stop on stdin.
    UdpSink { port: u16 },
    /// Raw UDP packets from random source ports to `dst:port` for `millis`.
    UdpFlood {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        port: u16,
        millis: u64,
    },
}

/// Result of a connection-rate run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CrrResult {
    pub completed: u64,
    pub errors: u64,
    pub secs: f64,
    /// connect() latency (SYN to established: the first packet's path) p50/p99/p99.9, microseconds.
    pub connect_us: [f64; 3],
    /// Whole transaction latency p50/p99/p99.9, microseconds.
    pub txn_us: [f64; 3],
}

const REQUEST: &[u8; 16] = b"GET /skiff-bench";
const RESPONSE: &[u8; 16] = b"HTTP/1.0 200 OK\n";

/// Entry point of `bench --worker JSON` (prints its result as one JSON line).
pub fn main(job_json: &str) -> Result<()> {
    let job: Job = serde_json::from_str(job_json).context("bad --worker job")?;
    match job {
        Job::TcpServer { port, threads } => tcp_server(port, threads),
        Job::Crr {
            dst,
            port,
            clients,
            millis,
        } => {
            wait_for_go()?;
            let r = crr(
                SocketAddr::from((dst, port)),
                clients,
                Duration::from_millis(millis),
            );
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Job::UdpSink { port } => udp_sink(port),
        Job::UdpFlood {
            src,
            dst,
            port,
            millis,
        } => {
            wait_for_go()?;
            let sent = udp_flood(src, dst, port, Duration::from_millis(millis))?;
            println!("{sent}");
            Ok(())
        }
    }
}

fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("worker expected `go` on stdin, got {line:?}");
    }
    Ok(())
}

fn tcp_server(port: u16, threads: usize) -> Result<()> {
    let listener = Arc::new(TcpListener::bind(("0.0.0.0", port)).context("bind tcp server")?);
    println!("ready");
    std::io::stdout().flush()?;
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let l = Arc::clone(&listener);
            std::thread::spawn(move || {
                loop {
                    let Ok((mut s, _)) = l.accept() else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 64];
                    let mut got = 0;
                    while got < REQUEST.len() {
                        match s.read(&mut buf[got..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    let _ = s.write_all(RESPONSE);
                    // Let the client close first: the TIME_WAIT then sits with the client, keyed by the address
                    // it dialled. Server-side TIME_WAITs keyed by backend address would collide (PAWS) with new
                    // connections whose timestamps were derived from another Service IP.
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// One client transaction; returns (connect, total) durations.
fn transaction(dst: SocketAddr) -> std::io::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
    let t1 = t0.elapsed();
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    s.write_all(REQUEST)?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
        if got >= RESPONSE.len() {
            break;
        }
    }
    if got < RESPONSE.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short response",
        ));
    }
    Ok((t1, t0.elapsed()))
}

/// Runs `clients` concurrent client loops for `dur`.
pub fn crr(dst: SocketAddr, clients: usize, dur: Duration) -> CrrResult {
    let deadline = Instant::now() + dur;
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let errors = Arc::clone(&errors);
            std::thread::spawn(move || {
                let (mut conn, mut txn) = (Vec::new(), Vec::new());
                while Instant::now() < deadline {
                    match transaction(dst) {
                        Ok((c, t)) => {
                            conn.push(c.as_secs_f64() * 1e6);
                            txn.push(t.as_secs_f64() * 1e6);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (conn, txn)
            })
        })
        .collect();
    let (mut conn, mut txn) = (Vec::new(), Vec::new());
    for h in handles {
        if let Ok((c, t)) = h.join() {
            conn.extend(c);
            txn.extend(t);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let pct = |v: &[f64]| {
        let s = stats::sorted(v);
        [0.5, 0.99, 0.999].map(|q| stats::quantile(&s, q).unwrap_or(f64::NAN))
    };
    CrrResult {
        completed: conn.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        connect_us: pct(&conn),
        txn_us: pct(&txn),
    }
}

fn udp_sink(port: u16) -> Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", port)).context("bind udp sink")?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        s2.store(true, Ordering::Relaxed);
    });
    println!("ready");
    std::io::stdout().flush()?;
    let mut count = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if sock.recv(&mut buf).is_ok() {
            count += 1;
        }
    }
    println!("{count}");
    Ok(())
}

/// IPv4 header checksum (RFC 791).
pub fn ip_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4+UDP packet with `payload`; the UDP checksum is 0 (optional over IPv4).
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = ip_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn udp_flood(src: Ipv4Addr, dst: Ipv4Addr, port: u16, dur: Duration) -> Result<u64> {
    use rand::Rng;
    // SAFETY: plain socket(2) call; the fd is owned below and closed on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng();
    let deadline = Instant::now() + dur;
    let mut sent = 0u64;
    let mut pkt = udp_packet(src, dst, 1024, port, &[0u8; 18]);
    while Instant::now() < deadline {
        for _ in 0..256 {
            let sport: u16 = rng.random_range(1024..=65535);
            pkt[20..22].copy_from_slice(&sport.to_be_bytes());
            // SAFETY: pkt and sa outlive the call; lengths are theirs.
            let r = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r > 0 {
                sent += 1;
            }
        }
    }
    // SAFETY: fd is ours and still open.
    unsafe { libc::close(fd) };
    Ok(sent)
}

/// A running worker child; killed when dropped.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::io::BufReader<ChildStdout>,
    what: String,
}

impl Worker {
    /// Starts `job` inside netns `ns` (through `ip netns exec`, which keeps the pid, so it can be moved into a
    /// cgroup before it is told to go).
    pub fn spawn(ns: &str, job: &Job) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let json = serde_json::to_string(job)?;
        let mut child = super::sh::command("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(["bench", "--worker", &json])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning bench worker")?;
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().context("worker stdout")?);
        Ok(Worker {
            child,
            stdin,
            stdout,
            what: format!("{json} in {ns}"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one line to the worker.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let s = self.stdin.as_mut().context("worker stdin closed")?;
        writeln!(s, "{line}")?;
        s.flush()?;
        Ok(())
    }

    /// Reads one line of output, failing after `limit`.
    pub fn read_line(&mut self, limit: Duration) -> Result<String> {
        let fd = {
            use std::os::fd::AsRawFd;
            self.stdout.get_ref().as_raw_fd()
        };
        if self.stdout.buffer().is_empty() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
            if n <= 0 {
                bail!("worker {} gave no output within {limit:?}", self.what);
            }
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let status = self.child.wait()?;
            bail!("worker {} exited ({status}) without a result", self.what);
        }
        Ok(line.trim().to_string())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_packet_layout_and_checksum() {
        let p = udp_packet(
            Ipv4Addr::new(192, 168, 77, 2),
            Ipv4Addr::new(192, 168, 77, 1),
            4000,
            30080,
            b"abc",
        );
        assert_eq!(p.len(), 31);
        assert_eq!(
            ip_checksum(&p[..20]),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 30080);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 11);
    }

    #[test]
    fn crr_against_a_loopback_server_completes_transactions() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut b = [0u8; 16];
                let _ = s.read_exact(&mut b);
                let _ = s.write_all(RESPONSE);
            }
        });
        let r = crr(addr, 2, Duration::from_millis(200));
        assert!(r.completed > 10, "{r:?}");
        assert_eq!(r.errors, 0);
        assert!(
            r.connect_us[0] <= r.txn_us[0] && r.txn_us[0] <= r.txn_us[2],
            "{r:?}"
        );
    }
}
