//! `lab up`: binaries, kubectl, the network, skiff-control and one agent per node (each with its own
//! `system:node:<name>` kubeconfig), then the export lines.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use super::{
    kube::{self, wait_for},
    layout::Lab,
    net,
    plan::{NodePlan, StoreKind},
    procs,
};
use crate::{
    cmd,
    progress::{Outcome, Progress},
};

/// Where the binaries come from.
pub enum Binaries {
    /// `cargo build --release -p agent -p control`.
    Release,
    /// Prebuilt `skiff-agent` and `skiff-control` in this directory (tests use the debug build).
    Prebuilt(PathBuf),
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Brings the lab up (idempotent for a lab that is already running).
pub fn up(lab: &Lab, binaries: &Binaries) -> Result<()> {
    preflight()?;
    let stale = stale_parts(lab);
    let running = running_parts(lab);
    if !stale.is_empty() && running.is_empty() {
        bail!(
            "a stale lab is in the way (left by a crash?): {}\nremove it with `cargo xtask lab down --data-dir {}`",
            stale.join(", "),
            lab.dir.display()
        );
    }
    let nodes = lab.plan.all_nodes();
    // Ports first, so a busy port stops `up` before it changes anything.
    if lab.control().pid().is_none() {
        port_free(lab.plan.api_port)?;
    }
    for n in nodes.iter().filter(|n| lab.agent(n).pid().is_none()) {
        port_free(n.kubelet_port)?;
    }
    lab.save()?;
    let mut p = Progress::new(6 + nodes.len());
    p.run("binaries", |step| install_binaries(lab, binaries, step))?;
    p.run("kubectl", |_| {
        let (cached, fetched) = kube::fetch_kubectl()?;
        copy(&cached, &lab.bin_dir().join("kubectl"))?;
        Ok(if fetched {
            Outcome::Done
        } else {
            Outcome::Ready("cached".into())
        })
    })?;
    p.run("lab network", |_| {
        net::add_guards(&lab.plan)?;
        net::create_base(&lab.plan)?;
        for n in &nodes {
            net::create_node(&lab.plan, n)?;
        }
        Ok(Outcome::Ready(format!(
            "bridge in {}, {} node namespaces, client namespace {}; {} routed unreachable from the host",
            lab.plan.wire_netns(),
            nodes.len(),
            lab.plan.client_netns(),
            lab.plan.guarded_ranges().join(", ")
        )))
    })?;
    p.run("skiff-control", |_| start_control(lab))?;
    for n in &nodes {
        p.run(&format!("agent {}", n.name), |_| start_agent(lab, n))?;
    }
    p.run("nodes Ready", |_| wait_ready(lab, &nodes))?;
    p.run("kubeconfig", |_| {
        Ok(Outcome::Ready(lab.kubeconfig().display().to_string()))
    })?;
    println!(
        "\nThe lab is up. Paste these lines to use it with kubectl:\n\n{}\n",
        lab.env_lines()
    );
    Ok(())
}

/// Root, BTF, bpffs and cgroup2: what every lab node needs from the kernel.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    ensure!(
        uid == 0,
        "the lab needs root (network namespaces, eBPF): run it with sudo or as root"
    );
    ensure!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this kernel has no BTF (/sys/kernel/btf/vmlinux): the eBPF dataplane needs CONFIG_DEBUG_INFO_BTF"
    );
    ensure!(
        Path::new(super::teardown::CGROUP2).join("cgroup.procs").exists(),
        "no cgroup2 mount at {}: run `cargo xtask setup`",
        super::teardown::CGROUP2
    );
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if !mounts.lines().any(|l| l.contains(" /sys/fs/bpf bpf ")) {
        cmd::output(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
            .context("mounting bpffs on /sys/fs/bpf (needed to pin maps)")?;
    }
    Ok(())
}

/// Parts of a lab that exist on the machine (namespaces, routes, pins).
pub fn stale_parts(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = lab
        .plan
        .namespaces()
        .into_iter()
        .filter(|n| net::netns_exists(n))
        .map(|n| format!("namespace {n}"))
        .collect();
    v.extend(
        net::guards_present(&lab.plan)
            .into_iter()
            .map(|r| format!("route unreachable {r}")),
    );
    v.extend(
        lab.plan
            .all_nodes()
            .into_iter()
            .filter(|n| super::teardown::pin_dir(&n.name).exists())
            .map(|n| format!("pins of {}", n.name)),
    );
    v
}

/// Lab processes that are running.
pub fn running_parts(lab: &Lab) -> Vec<String> {
    let mut v = Vec::new();
    if lab.control().pid().is_some() {
        v.push("skiff-control".to_string());
    }
    for n in lab.plan.all_nodes() {
        if lab.agent(&n).pid().is_some() {
            v.push(n.name);
        }
    }
    v
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    // Copy to a temporary name and rename, so a running binary is replaced rather than overwritten.
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

fn install_binaries(lab: &Lab, binaries: &Binaries, step: &crate::progress::Step<'_>) -> Result<Outcome> {
    let from = match binaries {
        Binaries::Release => {
            step.say("cargo build --release -p agent -p control (a few minutes the first time)");
            cmd::run(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .args(["build", "--release", "-p", "agent", "-p", "control"])
                    .current_dir(workspace()),
            )?;
            workspace().join("target/release")
        }
        Binaries::Prebuilt(dir) => dir.clone(),
    };
    for b in ["skiff-agent", "skiff-control"] {
        let src = from.join(b);
        ensure!(src.is_file(), "{} is missing (build it first)", src.display());
        copy(&src, &lab.bin_dir().join(b))?;
    }
    Ok(Outcome::Ready(format!("from {}", from.display())))
}

fn port_free(port: u16) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port)).map(drop).with_context(|| {
        format!(
            "port 127.0.0.1:{port} is in use (another lab or apiserver?); stop it or pick other lab ports"
        )
    })
}

fn start_control(lab: &Lab) -> Result<Outcome> {
    let k = lab.kubectl();
    let d = lab.control();
    if d.pid().is_some() {
        return Ok(Outcome::Ready("already running".into()));
    }
    port_free(lab.plan.api_port)?;
    let mut c = Command::new(lab.control_bin());
    c.arg("--data-dir")
        .arg(lab.control_dir())
        .args(["--listen", &format!("127.0.0.1:{}", lab.plan.api_port)])
        .arg("--kubeconfig-out")
        .arg(lab.kubeconfig())
        .args([
            "--service-cidr",
            &lab.plan.service_cidr,
            "--lb-pool",
            &lab.plan.lb_pool,
            "--cluster-cidr",
            &lab.plan.pod_cidr,
        ])
        .args([
            "--node-monitor-grace-period",
            &format!("{}s", lab.plan.node_grace_seconds),
            "--default-unreachable-toleration-seconds",
            &lab.plan.eviction_seconds.to_string(),
            "--default-not-ready-toleration-seconds",
            &lab.plan.eviction_seconds.to_string(),
        ])
        .env("RUST_LOG", "info");
    if lab.plan.store == StoreKind::Etcd {
        let endpoint = super::etcd::start(lab)?;
        c.args(["--store", "etcd", "--etcd-endpoints", &endpoint]);
    }
    d.spawn(&mut c)?;
    let up = wait_for(Duration::from_secs(60), || {
        (lab.kubeconfig().exists() && k.run(&["get", "--raw", "/readyz"]).is_ok()).then_some(())
    });
    if up.is_none() {
        bail!(
            "skiff-control did not become ready in 60 s; its log ({}):\n{}",
            d.log.display(),
            procs::tail(&d.log, 30)
        );
    }
    Ok(Outcome::Done)
}

/// Starts a node's agent (if it is not running).
pub fn start_agent(lab: &Lab, n: &NodePlan) -> Result<Outcome> {
    let d = lab.agent(n);
    if d.pid().is_some() {
        return Ok(Outcome::Ready("already running".into()));
    }
    port_free(n.kubelet_port)?;
    std::fs::create_dir_all(lab.node_state(n))?;
    let kubeconfig = node_kubeconfig(lab, n)?;
    d.spawn(
        Command::new(lab.agent_bin())
            .args(["node", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--node-name", &n.name, "--netns", &n.name, "--uplink", "eth0"])
            .args([
                "--pod-cidr",
                &n.pod_cidr,
                "--capacity",
                "cpu=2,memory=4Gi,pods=110",
            ])
            .args([
                "--kubelet-address",
                "127.0.0.1",
                "--kubelet-port",
                &n.kubelet_port.to_string(),
            ])
            .args(["--mode", lab.plan.dataplane.as_str(), "--xdp-mode", "generic"])
            .args([
                "--node-status-update-frequency",
                &(lab.plan.node_grace_seconds / 4).max(1).to_string(),
            ])
            .arg("--state-dir")
            .arg(lab.node_state(n))
            .env("RUST_LOG", "info"),
    )?;
    Ok(Outcome::Done)
}

/// Writes the node's own kubeconfig (user `system:node:<name>` in `system:nodes`, signed by the control CA).
fn node_kubeconfig(lab: &Lab, n: &NodePlan) -> Result<PathBuf> {
    let out = lab.node_kubeconfig(n);
    cmd::output(
        Command::new(lab.control_bin())
            .arg("kubeconfig")
            .arg("--data-dir")
            .arg(lab.control_dir())
            .args([
                "--server",
                &format!("https://127.0.0.1:{}", lab.plan.api_port),
                "--user",
                &format!("system:node:{}", n.name),
                "--group",
                "system:nodes",
            ])
            .arg("--out")
            .arg(&out),
    )
    .with_context(|| format!("issuing the node credentials of {}", n.name))?;
    Ok(out)
}

/// Waits until every node in `nodes` is Ready.
pub fn wait_ready(lab: &Lab, nodes: &[NodePlan]) -> Result<Outcome> {
    let k = lab.kubectl();
    // A Ready condition stored before the agents (re)started says nothing: require a heartbeat from now on.
    let since = utc_now()?;
    let fresh = |n: &NodePlan| k.node_ready_since(&n.name, &since);
    let ready = wait_for(Duration::from_secs(90), || nodes.iter().all(fresh).then_some(()));
    if ready.is_none() {
        let missing: Vec<_> = nodes.iter().filter(|n| !fresh(n)).collect();
        let mut msg = String::from("nodes not Ready after 90 s:");
        for n in missing {
            let d = lab.agent(n);
            msg += &format!(
                "\n--- {} ({}) ---\n{}",
                n.name,
                d.log.display(),
                procs::tail(&d.log, 20)
            );
        }
        bail!(msg);
    }
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    Ok(Outcome::Ready(names.join(", ")))
}

/// The current time as Kubernetes writes it (RFC 3339, UTC, seconds), which orders as text.
fn utc_now() -> Result<String> {
    Ok(
        cmd::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?
            .trim()
            .to_string(),
    )
}
