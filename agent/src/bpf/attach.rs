//! Attaching Skiff's programs (socket hooks on a cgroup, TC on pod interfaces, XDP + TC egress on the uplink) as
//! pinned links, and keeping pod interfaces covered as they come and go (a rescan thread).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode, links::FdLink, tc::TcAttachOptions,
    },
};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use skiff_common::programs as progs;

use super::{
    glob,
    links::{LinkOutcome, LinkPinError, ensure_pinned, remove_pin},
    netns::{self, NetnsError},
    pins::PinDir,
};

/// Which hooks serve ClusterIP traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// cgroup socket hooks only (translation at connect()/sendmsg() time).
    Socket,
    /// per-packet TC on pod interfaces only.
    Tc,
    /// both.
    Both,
}

impl Mode {
    pub fn socket(self) -> bool {
        matches!(self, Mode::Socket | Mode::Both)
    }
    pub fn tc(self) -> bool {
        matches!(self, Mode::Tc | Mode::Both)
    }
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttachMode {
    /// Driver mode; falls back to generic (SKB) mode with a warning when the driver lacks XDP.
    Native,
    /// Generic (SKB) mode.
    Generic,
}

/// Errors attaching.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {0} is not in the eBPF object (is the agent built from a matching tree?)")]
    MissingProgram(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("{path} is not a cgroup2 mount (pass --cgroup with a cgroup v2 directory)")]
    NotCgroup2 { path: PathBuf },
    #[error("opening cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("interface {0} does not exist (in the agent's network namespace)")]
    NoInterface(String),
    #[error("listing interfaces: {0}")]
    ListInterfaces(nix::Error),
    #[error("reading link pins in {path}: {source}")]
    ReadPins { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Link(#[from] LinkPinError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("the attach thread stopped unexpectedly")]
    ThreadDied,
}

type Result<T, E = AttachError> = std::result::Result<T, E>;

/// What to attach where.
#[derive(Clone, Debug)]
pub struct AttachConfig {
    pub mode: Mode,
    pub cgroup: PathBuf,
    /// Globs of pod-facing interface names (TC hooks).
    pub pod_ifaces: Vec<String>,
    /// Node uplink (XDP + TC egress).
    pub uplink: Option<String>,
    pub xdp_mode: XdpAttachMode,
    /// Network namespace of the interfaces (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// How often pod interfaces are rescanned.
    pub rescan: Duration,
}

/// The default cgroup2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub fn default_cgroup() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup/unified"))
}

fn is_cgroup2(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// Where a program is attached.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Cgroup,
    TcIngress(String),
    TcEgress(String),
    Xdp(String),
}

/// One link Skiff wants: a program on a hook, pinned as `links/<prog>-<target>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkSpec {
    pub prog: &'static str,
    pub hook: Hook,
}

impl LinkSpec {
    pub fn pin_name(&self) -> String {
        let target = match &self.hook {
            Hook::Cgroup => "cgroup",
            Hook::TcIngress(i) | Hook::TcEgress(i) | Hook::Xdp(i) => i,
        };
        format!("{}-{target}", self.prog)
    }

    fn iface(&self) -> Option<&str> {
        match &self.hook {
            Hook::Cgroup => None,
            Hook::TcIngress(i) | Hook::TcEgress(i) | Hook::Xdp(i) => Some(i),
        }
    }
}

/// Prefix of links created by `skiff-agent xdp-pass` (not managed by the proxy's attacher).
pub const XDP_PASS_PIN_PREFIX: &str = "xdp-pass-";

/// The links wanted for `cfg`, given the interfaces that exist now (pure).
pub fn desired_links(cfg: &AttachConfig, ifaces: &[String]) -> Vec<LinkSpec> {
    let mut out = Vec::new();
    if cfg.mode.socket() {
        for prog in [
            progs::CONNECT4,
            progs::SENDMSG4,
            progs::RECVMSG4,
            progs::GETPEERNAME4,
        ] {
            out.push(LinkSpec {
                prog,
                hook: Hook::Cgroup,
            });
        }
    }
    if let Some(up) = &cfg.uplink {
        out.push(LinkSpec {
            prog: progs::XDP_UPLINK,
            hook: Hook::Xdp(up.clone()),
        });
        out.push(LinkSpec {
            prog: progs::TC_UPLINK_EGRESS,
            hook: Hook::TcEgress(up.clone()),
        });
    }
    if cfg.mode.tc() {
        for i in ifaces {
            if Some(i) == cfg.uplink.as_ref() || !glob::matches_any(&cfg.pod_ifaces, i) {
                continue;
            }
            out.push(LinkSpec {
                prog: progs::TC_FROM_POD,
                hook: Hook::TcIngress(i.clone()),
            });
            out.push(LinkSpec {
                prog: progs::TC_TO_POD,
                hook: Hook::TcEgress(i.clone()),
            });
        }
    }
    out
}

/// Pins in the links directory that no wanted link explains (pure); `xdp-pass-*` pins are left alone.
pub fn stale_pins(existing: &[String], wanted: &[LinkSpec]) -> Vec<String> {
    let wanted: BTreeSet<String> = wanted.iter().map(LinkSpec::pin_name).collect();
    existing
        .iter()
        .filter(|p| !p.starts_with(XDP_PASS_PIN_PREFIX) && !wanted.contains(*p))
        .cloned()
        .collect()
}

/// Interface names and indexes in the calling thread's network namespace.
pub fn list_interfaces() -> Result<BTreeMap<String, u32>> {
    let list = nix::net::if_::if_nameindex().map_err(AttachError::ListInterfaces)?;
    Ok(list
        .iter()
        .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
        .collect())
}

/// Names of the link pins under `pin`.
pub fn existing_pins(pin: &PinDir) -> Result<Vec<String>> {
    let dir = pin.links();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AttachError::ReadPins { path: dir, source }),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn xdp_prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(AttachError::MissingProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program { name, source })
}

fn tc_prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or(AttachError::MissingProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program { name, source })
}

fn sock_prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr> {
    ebpf.program_mut(name)
        .ok_or(AttachError::MissingProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program { name, source })
}

fn attach_err(what: &str) -> impl FnOnce(ProgramError) -> LinkPinError + '_ {
    move |source| LinkPinError::Attach {
        what: what.to_string(),
        source,
    }
}

fn into_fd_link<L>(what: &str, link: L) -> std::result::Result<FdLink, LinkPinError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|source| LinkPinError::NotALink {
        what: what.to_string(),
        source,
    })
}

/// Attaches `spec` as a pinned link under `pin` (replacing the program of an existing pinned link).
pub fn attach_one(
    ebpf: &mut Ebpf,
    pin: &PinDir,
    spec: &LinkSpec,
    cgroup: &File,
    xdp_mode: XdpAttachMode,
) -> Result<LinkOutcome> {
    let path = pin.link(spec.prog, &spec.pin_name()[spec.prog.len() + 1..]);
    let what = spec.pin_name();
    let name = spec.prog;
    if let Some(i) = spec.iface()
        && nix::net::if_::if_nametoindex(i).is_err()
    {
        return Err(AttachError::NoInterface(i.to_string()));
    }
    let outcome = match &spec.hook {
        Hook::Cgroup => {
            let prog = sock_prog(ebpf, name)?;
            let fd = prog
                .fd()
                .map_err(|source| AttachError::Program { name, source })?
                .try_clone();
            let fd = fd.map_err(|e| AttachError::Program {
                name,
                source: ProgramError::IOError(e),
            })?;
            ensure_pinned(&path, &fd, || {
                // cgroup bpf_links take no flags (the kernel rejects any) and always coexist with other links.
                let id = prog
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(attach_err(&what))?;
                into_fd_link(&what, prog.take_link(id).map_err(attach_err(&what))?)
            })?
        }
        Hook::TcIngress(iface) | Hook::TcEgress(iface) => {
            let kind = if matches!(spec.hook, Hook::TcIngress(_)) {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let prog = tc_prog(ebpf, name)?;
            let fd = prog
                .fd()
                .map_err(|source| AttachError::Program { name, source })?
                .try_clone();
            let fd = fd.map_err(|e| AttachError::Program {
                name,
                source: ProgramError::IOError(e),
            })?;
            ensure_pinned(&path, &fd, || {
                let id = prog
                    .attach_with_options(iface, kind, TcAttachOptions::TcxOrder(LinkOrder::default()))
                    .map_err(attach_err(&what))?;
                into_fd_link(&what, prog.take_link(id).map_err(attach_err(&what))?)
            })?
        }
        Hook::Xdp(iface) => {
            let prog = xdp_prog(ebpf, name)?;
            let fd = prog
                .fd()
                .map_err(|source| AttachError::Program { name, source })?
                .try_clone();
            let fd = fd.map_err(|e| AttachError::Program {
                name,
                source: ProgramError::IOError(e),
            })?;
            ensure_pinned(&path, &fd, || attach_xdp(prog, iface, xdp_mode, &what))?
        }
    };
    Ok(outcome)
}

fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpAttachMode,
    what: &str,
) -> std::result::Result<FdLink, LinkPinError> {
    let id = match mode {
        XdpAttachMode::Generic => prog.attach(iface, XdpMode::Skb).map_err(attach_err(what))?,
        XdpAttachMode::Native => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP not available; falling back to generic (SKB) mode");
                prog.attach(iface, XdpMode::Skb).map_err(attach_err(what))?
            }
        },
    };
    into_fd_link(what, prog.take_link(id).map_err(attach_err(what))?)
}

/// Attaches `skiff_xdp_pass` to `iface` (in the calling thread's netns), pinned as `links/xdp-pass-<iface>`.
pub fn attach_xdp_pass(ebpf: &mut Ebpf, pin: &PinDir, iface: &str) -> Result<LinkOutcome> {
    if nix::net::if_::if_nametoindex(iface).is_err() {
        return Err(AttachError::NoInterface(iface.to_string()));
    }
    let name = progs::XDP_PASS;
    let path = pin.links().join(format!("{XDP_PASS_PIN_PREFIX}{iface}"));
    let prog = xdp_prog(ebpf, name)?;
    let fd = prog
        .fd()
        .map_err(|source| AttachError::Program { name, source })?
        .try_clone()
        .map_err(|e| AttachError::Program {
            name,
            source: ProgramError::IOError(e),
        })?;
    let what = format!("{name} on {iface}");
    Ok(ensure_pinned(&path, &fd, || {
        attach_xdp(prog, iface, XdpAttachMode::Native, &what)
    })?)
}

/// Keeps the wanted links attached: one pass attaches what is missing and unpins what is stale.
struct Reconciler {
    ebpf: Ebpf,
    pin: PinDir,
    cfg: AttachConfig,
    cgroup: File,
    /// Pin name -> ifindex it was attached to by this process (0 for the cgroup).
    done: BTreeMap<String, u32>,
}

impl Reconciler {
    fn new(ebpf: Ebpf, pin: PinDir, cfg: AttachConfig) -> Result<Self> {
        if cfg.mode.socket() && !is_cgroup2(&cfg.cgroup) {
            return Err(AttachError::NotCgroup2 {
                path: cfg.cgroup.clone(),
            });
        }
        let cgroup = File::open(&cfg.cgroup).map_err(|source| AttachError::Cgroup {
            path: cfg.cgroup.clone(),
            source,
        })?;
        Ok(Self {
            ebpf,
            pin,
            cfg,
            cgroup,
            done: BTreeMap::new(),
        })
    }

    /// One pass. `strict`: fail on the first error (start-up); otherwise log and carry on (rescans).
    fn pass(&mut self, strict: bool) -> Result<()> {
        let ifaces = list_interfaces()?;
        if let Some(up) = &self.cfg.uplink
            && !ifaces.contains_key(up)
        {
            return Err(AttachError::NoInterface(up.clone()));
        }
        let names: Vec<String> = ifaces.keys().cloned().collect();
        let wanted = desired_links(&self.cfg, &names);
        for spec in &wanted {
            let key = spec.pin_name();
            let ifindex = spec.iface().and_then(|i| ifaces.get(i).copied()).unwrap_or(0);
            if self.done.get(&key) == Some(&ifindex) && self.pin.links().join(&key).exists() {
                continue;
            }
            match attach_one(&mut self.ebpf, &self.pin, spec, &self.cgroup, self.cfg.xdp_mode) {
                Ok(outcome) => {
                    tracing::info!(link = %key, ?outcome, "attached");
                    self.done.insert(key, ifindex);
                }
                Err(e) if !strict => tracing::warn!(link = %key, error = %e, "attach failed; will retry"),
                Err(e) => return Err(e),
            }
        }
        for stale in stale_pins(&existing_pins(&self.pin)?, &wanted) {
            tracing::info!(link = %stale, "detaching stale link");
            self.done.remove(&stale);
            remove_pin(&self.pin.links().join(&stale))?;
        }
        Ok(())
    }
}

/// The attach thread: attaches everything on start, then rescans pod interfaces until stopped. Dropping it stops
/// the thread; pinned links stay attached (the datapath keeps working while the agent restarts).
pub struct Attacher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<std::result::Result<(), NetnsError>>>,
}

impl Attacher {
    /// Starts the thread (inside `cfg.netns` if set) and waits for the first full attach pass.
    pub fn start(ebpf: Ebpf, pin: PinDir, cfg: AttachConfig) -> Result<Self> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let rescan = cfg.rescan;
        let netns = cfg.netns.clone();
        let thread = netns::spawn_in(netns, "skiff-attach", move || {
            let mut r = match Reconciler::new(ebpf, pin, cfg) {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let first = r.pass(true);
            let failed = first.is_err();
            let _ = ready_tx.send(first);
            if failed {
                return;
            }
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(rescan) {
                if let Err(e) = r.pass(false) {
                    tracing::warn!(error = %e, "interface rescan failed");
                }
            }
        })?;
        let mut me = Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => Err(e),
            Err(_) => match me.thread.take().map(JoinHandle::join) {
                Some(Ok(Err(e))) => Err(e.into()),
                _ => Err(AttachError::ThreadDied),
            },
        }
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Mode) -> AttachConfig {
        AttachConfig {
            mode,
            cgroup: PathBuf::from("/sys/fs/cgroup/unified"),
            pod_ifaces: vec!["veth*".into()],
            uplink: Some("eth0".into()),
            xdp_mode: XdpAttachMode::Native,
            netns: None,
            rescan: Duration::from_secs(2),
        }
    }

    fn names(v: &[LinkSpec]) -> Vec<String> {
        v.iter().map(LinkSpec::pin_name).collect()
    }

    #[test]
    fn socket_mode_wants_cgroup_hooks_and_the_uplink() {
        let ifs = vec!["eth0".to_string(), "veth1".to_string(), "lo".to_string()];
        assert_eq!(
            names(&desired_links(&cfg(Mode::Socket), &ifs)),
            [
                "skiff_connect4-cgroup",
                "skiff_sendmsg4-cgroup",
                "skiff_recvmsg4-cgroup",
                "skiff_getpeername4-cgroup",
                "skiff_xdp_uplink-eth0",
                "skiff_tc_uplink_egress-eth0",
            ]
        );
    }

    #[test]
    fn tc_mode_covers_matching_pod_interfaces_only() {
        let ifs = vec![
            "eth0".to_string(),
            "veth1".to_string(),
            "veth2".to_string(),
            "lo".to_string(),
        ];
        let got = names(&desired_links(&cfg(Mode::Tc), &ifs));
        assert_eq!(
            got,
            [
                "skiff_xdp_uplink-eth0",
                "skiff_tc_uplink_egress-eth0",
                "skiff_tc_from_pod-veth1",
                "skiff_tc_to_pod-veth1",
                "skiff_tc_from_pod-veth2",
                "skiff_tc_to_pod-veth2",
            ]
        );
        let mut c = cfg(Mode::Both);
        c.uplink = None;
        c.pod_ifaces = vec!["*".into()];
        assert_eq!(
            desired_links(&c, &ifs).len(),
            4 + 4 * 2,
            "with no uplink every interface is a pod interface"
        );
    }

    #[test]
    fn stale_pins_spare_xdp_pass_links() {
        let wanted = desired_links(&cfg(Mode::Tc), &["eth0".to_string(), "veth1".to_string()]);
        let existing: Vec<String> = [
            "skiff_tc_from_pod-veth1",
            "skiff_tc_from_pod-veth9",
            "skiff_connect4-cgroup",
            "xdp-pass-br0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            stale_pins(&existing, &wanted),
            ["skiff_tc_from_pod-veth9", "skiff_connect4-cgroup"]
        );
    }
}
