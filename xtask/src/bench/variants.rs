//! The dataplanes under test and how each is programmed into its own testbed.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::model::{ClusterConfig, Endpoint, ServicePort};
use super::netns::{Testbed, addr, ifname};
use super::{iptables, nftables, sh};

/// One dataplane variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Direct,
    IptablesNft,
    IptablesLegacy,
    Nftables,
    SkiffSocket,
    SkiffTc,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Direct,
        Variant::IptablesNft,
        Variant::IptablesLegacy,
        Variant::Nftables,
        Variant::SkiffSocket,
        Variant::SkiffTc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::IptablesNft => "iptables-nft",
            Variant::IptablesLegacy => "iptables-legacy",
            Variant::Nftables => "nftables",
            Variant::SkiffSocket => "skiff-socket",
            Variant::SkiffTc => "skiff-tc",
        }
    }

    /// Short tag used in namespace names.
    pub fn tag(self) -> &'static str {
        match self {
            Variant::Direct => "dir",
            Variant::IptablesNft => "ipn",
            Variant::IptablesLegacy => "ipl",
            Variant::Nftables => "nft",
            Variant::SkiffSocket => "sks",
            Variant::SkiffTc => "skt",
        }
    }

    fn restore_cmd(self) -> &'static str {
        if self == Variant::IptablesLegacy {
            "iptables-legacy-restore"
        } else {
            "iptables-nft-restore"
        }
    }

    pub fn is_skiff(self) -> bool {
        matches!(self, Variant::SkiffSocket | Variant::SkiffTc)
    }
}

/// Control-plane figures of one programming step.
#[derive(Clone, Debug, Default)]
pub struct Programmed {
    /// Wall time of the full programming (restore / nft -f / agent until the target answers).
    pub full: Duration,
    /// Rules (iptables), rules+elements (nftables) after programming.
    pub objects: usize,
}

/// A variant installed in its testbed, with what it needs to run and to clean up.
pub struct Installed {
    pub variant: Variant,
    pub tb: Testbed,
    pub cgroup: Option<PathBuf>,
    agent: Option<Child>,
    agent_bin: Option<PathBuf>,
    xdp_helpers: Vec<Child>,
}

/// How to reach Skiff's agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub bin: Option<PathBuf>,
    pub workdir: PathBuf,
}

impl Installed {
    pub fn new(variant: Variant, backends: usize) -> Result<Self> {
        let tb = Testbed::create(variant.tag(), backends)?;
        let cgroup = if variant == Variant::SkiffSocket {
            let p = PathBuf::from(format!("/sys/fs/cgroup/unified/skb-{}", variant.tag()));
            if !p.exists() {
                std::fs::create_dir(&p).with_context(|| format!("creating cgroup {}", p.display()))?;
            }
            Some(p)
        } else {
            None
        };
        let inst = Installed {
            variant,
            tb,
            cgroup,
            agent: None,
            agent_bin: None,
            xdp_helpers: Vec::new(),
        };
        match variant {
            Variant::IptablesNft | Variant::IptablesLegacy => inst.iptables_reset()?,
            Variant::Nftables | Variant::Direct | Variant::SkiffSocket | Variant::SkiffTc => {}
        }
        Ok(inst)
    }

    fn iptables_reset(&self) -> Result<()> {
        let cmd = self.variant.restore_cmd();
        // Without --noflush: empties both tables (kube-proxy's chains included), then the jumps kube-proxy installs.
        sh::in_ns_timed(
            &self.tb.node,
            &[cmd],
            "*filter\nCOMMIT\n*nat\nCOMMIT\n",
            Duration::from_secs(60),
        )?;
        sh::in_ns_timed(
            &self.tb.node,
            &[cmd, "--noflush"],
            &iptables::jump_rules(),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Programs `services` from scratch (replacing what an earlier step installed).
    pub fn program(
        &mut self,
        services: &[ServicePort],
        cfg: &ClusterConfig,
        agent: &AgentConfig,
    ) -> Result<Programmed> {
        let limit = Duration::from_secs(600);
        match self.variant {
            Variant::Direct => Ok(Programmed::default()),
            Variant::IptablesNft | Variant::IptablesLegacy => {
                self.iptables_reset()?;
                let rs = iptables::build(services, cfg);
                let input = rs.render();
                let cmd = self.variant.restore_cmd();
                let (_, took) = sh::in_ns_timed(&self.tb.node, &[cmd, "--noflush"], &input, limit)?;
                Ok(Programmed {
                    full: took,
                    objects: rs.rule_count(),
                })
            }
            Variant::Nftables => {
                let _ = sh::in_ns(&self.tb.node, &["nft", "delete", "table", "ip", "kube-proxy"]);
                let tx = nftables::full(services, cfg);
                let (_, took) = sh::in_ns_timed(&self.tb.node, &["nft", "-f", "-"], &tx, limit)?;
                Ok(Programmed {
                    full: took,
                    objects: nftables::object_count(&tx),
                })
            }
            Variant::SkiffSocket | Variant::SkiffTc => self.start_agent(services, agent),
        }
    }

    /// Applies "endpoint `last` of service `idx` moved to a new address" and returns how long it took.
    pub fn endpoint_change(
        &mut self,
        services: &[ServicePort],
        idx: usize,
        cfg: &ClusterConfig,
    ) -> Result<Duration> {
        let old = &services[idx];
        let mut new = old.clone();
        let last = new.endpoints.len() - 1;
        new.endpoints[last] = Endpoint {
            ip: addr::backend(self.tb.backends),
            port: old.target_port,
        };
        let limit = Duration::from_secs(120);
        match self.variant {
            Variant::IptablesNft | Variant::IptablesLegacy => {
                let mut after = services.to_vec();
                after[idx] = new.clone();
                let changed = iptables::service_chains(&new);
                let removed: Vec<String> = iptables::service_chains(old)
                    .difference(&changed)
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let input = iptables::build(&after, cfg).render_partial(&changed, &removed);
                let (_, took) = sh::in_ns_timed(
                    &self.tb.node,
                    &[self.variant.restore_cmd(), "--noflush"],
                    &input,
                    limit,
                )?;
                Ok(took)
            }
            Variant::Nftables => {
                let tx = nftables::endpoint_change(old, &new, cfg);
                let (_, took) = sh::in_ns_timed(&self.tb.node, &["nft", "-f", "-"], &tx, limit)?;
                Ok(took)
            }
            Variant::Direct => bail!("direct has no control plane"),
            Variant::SkiffSocket | Variant::SkiffTc => {
                bail!("skiff-agent standalone mode has no endpoint-change timing interface yet")
            }
        }
    }

    fn start_agent(&mut self, services: &[ServicePort], agent: &AgentConfig) -> Result<Programmed> {
        self.stop_agent();
        let bin = match &agent.bin {
            Some(b) => b.clone(),
            None => bail!(
                "skiff-agent binary not found; build it (`cargo build --release -p agent`) or pass --agent PATH"
            ),
        };
        let dir = agent.workdir.join(format!("manifests-{}", self.variant.tag()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("services.yaml"), manifests(services))?;
        let mode = if self.variant == Variant::SkiffSocket {
            "socket"
        } else {
            "tc"
        };
        let node_name = self.tb.node.clone();
        let cgroup = self
            .cgroup
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup/unified"));
        let log = std::fs::File::create(agent.workdir.join(format!("agent-{}.log", self.variant.tag())))?;
        let start = Instant::now();
        let child = Command::new(&bin)
            .args(["proxy", "--manifests"])
            .arg(&dir)
            .args([
                "--node-name",
                &node_name,
                "--netns",
                &self.tb.node,
                "--uplink",
                ifname::NODE_UPLINK,
            ])
            .args(["--pod-iface", "pod-*", "--cgroup"])
            .arg(&cgroup)
            .args(["--mode", mode])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.agent = Some(child);
        self.agent_bin = Some(bin.clone());
        for ns in [&self.tb.backend, &self.tb.external] {
            let c = Command::new(&bin)
                .args([
                    "xdp-pass",
                    "--iface",
                    ifname::PEER,
                    "--netns",
                    ns,
                    "--node-name",
                    &node_name,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(c) = c {
                self.xdp_helpers.push(c);
            }
        }
        Ok(Programmed {
            full: start.elapsed(),
            objects: 0,
        })
    }

    /// Fails if the agent process has exited (with the tail of its log).
    pub fn check_agent(&mut self, workdir: &Path) -> Result<()> {
        if let Some(a) = self.agent.as_mut()
            && let Some(status) = a.try_wait()?
        {
            let log = std::fs::read_to_string(workdir.join(format!("agent-{}.log", self.variant.tag())))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "skiff-agent exited ({status}); log tail: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    /// Agent RSS in KiB from /proc.
    pub fn agent_rss_kib(&self) -> Option<u64> {
        let pid = self.agent.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn stop_agent(&mut self) {
        for mut c in self.xdp_helpers.drain(..).chain(self.agent.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(bin) = &self.agent_bin {
            let _ = sh::run(
                bin.to_str().unwrap_or_default(),
                &["cleanup", "--node-name", &self.tb.node],
            );
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.stop_agent();
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// Service and EndpointSlice manifests (JSON documents in one YAML stream) for `skiff-agent proxy --manifests`.
pub fn manifests(services: &[ServicePort]) -> String {
    let mut out = String::new();
    for s in services {
        let mut port = serde_json::json!({
            "name": s.port_name, "protocol": s.proto.api(), "port": s.port, "targetPort": s.target_port
        });
        if let Some(np) = s.node_port {
            port["nodePort"] = np.into();
        }
        let svc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": s.namespace, "name": s.name},
            "spec": {
                "type": if s.node_port.is_some() { "NodePort" } else { "ClusterIP" },
                "clusterIP": s.cluster_ip.to_string(), "clusterIPs": [s.cluster_ip.to_string()],
                "ports": [port]
            }
        });
        let eps: Vec<serde_json::Value> = s
            .endpoints
            .iter()
            .map(|e| serde_json::json!({"addresses": [e.ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
            .collect();
        let slice = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "namespace": s.namespace, "name": format!("{}-1", s.name),
                "labels": {"kubernetes.io/service-name": s.name, "endpointslice.kubernetes.io/managed-by": "skiff-bench"}
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": s.port_name, "protocol": s.proto.api(), "port": s.target_port}]
        });
        let _ = writeln!(out, "---\n{svc}\n---\n{slice}");
    }
    out
}

/// Finds a built skiff-agent next to the workspace's target directories.
pub fn find_agent(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    ["target/release/skiff-agent", "target/debug/skiff-agent"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::model::{Placement, SetSpec, synthetic_set};

    #[test]
    fn manifests_hold_a_service_and_a_slice_per_port() {
        let (svcs, _) = synthetic_set(&SetSpec {
            services: 3,
            endpoints_per_service: 2,
            backends: vec![addr::backend(0), addr::backend(1)],
            target_port: 8080,
            placement: Placement::Last,
        });
        let m = manifests(&svcs);
        let docs: Vec<serde_json::Value> = m
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).expect("json doc"))
            .collect();
        assert_eq!(docs.len(), 6);
        assert_eq!(docs[4]["spec"]["clusterIP"], "10.96.0.12");
        assert_eq!(
            docs[5]["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-target"
        );
        assert_eq!(docs[5]["endpoints"][1]["addresses"][0], "10.244.2.11");
        assert_eq!(docs[5]["ports"][0]["port"], 8080);
    }
}
