//! The dataplanes under test and how each is programmed into its own testbed.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::agent::{Agent, AgentSpec};
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
    SkiffXdp,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Variant::Direct,
        Variant::IptablesNft,
        Variant::IptablesLegacy,
        Variant::Nftables,
        Variant::SkiffSocket,
        Variant::SkiffTc,
        Variant::SkiffXdp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::IptablesNft => "iptables-nft",
            Variant::IptablesLegacy => "iptables-legacy",
            Variant::Nftables => "nftables",
            Variant::SkiffSocket => "skiff-socket",
            Variant::SkiffTc => "skiff-tc",
            Variant::SkiffXdp => "skiff-xdp",
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
            Variant::SkiffXdp => "skx",
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
        matches!(self, Variant::SkiffSocket | Variant::SkiffTc | Variant::SkiffXdp)
    }

    /// Whether the variant serves ClusterIP traffic from the client namespace (every scenario but UDP NodePort).
    /// `skiff-xdp` is Skiff's NodePort path only: its ClusterIP path is `skiff-tc`'s.
    pub fn serves_cluster_ip(self) -> bool {
        self != Variant::SkiffXdp
    }

    /// Whether the variant takes part in the UDP NodePort scenario. Skiff's NodePort path is the uplink XDP
    /// program whatever the ClusterIP mode, so it is measured once, as `skiff-xdp`.
    pub fn serves_node_port(self) -> bool {
        !matches!(self, Variant::SkiffSocket | Variant::SkiffTc)
    }

    /// Metrics port of the variant's agent (unique, off the agent's default so a lab agent cannot collide).
    fn metrics_port(self) -> u16 {
        19_980 + self as u16
    }
}

/// Control-plane figures of one programming step.
#[derive(Clone, Debug, Default)]
pub struct Programmed {
    /// Wall time of the full programming: iptables-restore / nft -f, or for Skiff from the manifest write to the
    /// agent's log line reporting the sync.
    pub full: Duration,
    /// Skiff only: the agent's own duration of that sync (desired state, plan, map writes).
    pub maps: Option<Duration>,
    /// Rules (iptables), rules+elements (nftables), frontends (Skiff) after programming.
    pub objects: usize,
}

/// Timing of one endpoint change.
#[derive(Clone, Debug, Default)]
pub struct Changed {
    /// Wall time (restore / nft -f; Skiff: the rename of the Service's manifest file to the sync's log line,
    /// including the agent's 100 ms debounce).
    pub wall: Duration,
    /// Skiff only: the agent's own duration of the sync (desired state, plan, map writes).
    pub maps: Option<Duration>,
    /// The services after the change.
    pub after: Vec<ServicePort>,
}

/// A variant installed in its testbed, with what it needs to run and to clean up.
pub struct Installed {
    pub variant: Variant,
    pub cgroup: Option<PathBuf>,
    pub agent: Option<Agent>,
    /// N of the rule set it holds (None while programming or after a failure).
    pub programmed_n: Option<usize>,
    // Dropped after the agent (fields drop in order): its links live in these namespaces.
    pub tb: Testbed,
}

/// How to reach Skiff's agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub bin: Option<PathBuf>,
    pub workdir: PathBuf,
}

impl Installed {
    pub fn new(variant: Variant, backends: usize, agent: &AgentConfig) -> Result<Self> {
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
        let mut inst = Installed {
            variant,
            cgroup,
            agent: None,
            programmed_n: None,
            tb,
        };
        match variant {
            Variant::IptablesNft | Variant::IptablesLegacy => inst.iptables_reset()?,
            Variant::SkiffSocket | Variant::SkiffTc | Variant::SkiffXdp => {
                inst.start_agent(agent)?;
            }
            Variant::Nftables | Variant::Direct => {}
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
            Duration::from_secs(600),
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
        limit: Duration,
    ) -> Result<Programmed> {
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
                    maps: None,
                    objects: rs.rule_count(),
                })
            }
            Variant::Nftables => {
                let _ = sh::in_ns(&self.tb.node, &["nft", "delete", "table", "ip", "kube-proxy"]);
                let tx = nftables::full(services, cfg);
                let (_, took) = sh::in_ns_timed(&self.tb.node, &["nft", "-f", "-"], &tx, limit)?;
                Ok(Programmed {
                    full: took,
                    maps: None,
                    objects: nftables::object_count(&tx),
                })
            }
            Variant::SkiffSocket | Variant::SkiffTc | Variant::SkiffXdp => {
                let node = self.tb.node.clone();
                let agent = self.agent.as_mut().context("the agent is not running")?;
                // From scratch: empty the maps first (not timed), then program the whole set.
                if agent.frontends() > 0 {
                    agent
                        .apply(&[], limit, |s| s.frontends == 0)
                        .context("emptying the agent's maps")?;
                }
                let want = services.len() as u64;
                let (wall, sync) = agent
                    .apply(&manifests(services, &node), limit, |s| s.frontends >= want)
                    .context("programming the services")?;
                Ok(Programmed {
                    full: wall,
                    maps: Some(Duration::from_secs_f64(sync.took_ms / 1e3)),
                    objects: sync.frontends as usize,
                })
            }
        }
    }

    /// Applies "the last endpoint of service `idx` moved to a new address" (alternating between two addresses with
    /// `rep`) and returns how long it took.
    pub fn endpoint_change(
        &mut self,
        services: &[ServicePort],
        idx: usize,
        cfg: &ClusterConfig,
        rep: usize,
    ) -> Result<Changed> {
        let old = &services[idx];
        let mut new = old.clone();
        let last = new.endpoints.len() - 1;
        new.endpoints[last] = Endpoint {
            ip: addr::backend(self.tb.backends + rep % 2),
            port: old.target_port,
        };
        let mut after = services.to_vec();
        after[idx] = new.clone();
        let limit = Duration::from_secs(120);
        match self.variant {
            Variant::IptablesNft | Variant::IptablesLegacy => {
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
                Ok(Changed {
                    wall: took,
                    maps: None,
                    after,
                })
            }
            Variant::Nftables => {
                let tx = nftables::endpoint_change(old, &new, cfg);
                let (_, took) = sh::in_ns_timed(&self.tb.node, &["nft", "-f", "-"], &tx, limit)?;
                Ok(Changed {
                    wall: took,
                    maps: None,
                    after,
                })
            }
            Variant::Direct => bail!("direct has no control plane"),
            Variant::SkiffSocket | Variant::SkiffTc | Variant::SkiffXdp => {
                let node = self.tb.node.clone();
                let agent = self.agent.as_mut().context("the agent is not running")?;
                let (wall, sync) = agent
                    .apply(&manifests(&after, &node), limit, |s| s.ops > 0)
                    .context("applying the endpoint change")?;
                Ok(Changed {
                    wall,
                    maps: Some(Duration::from_secs_f64(sync.took_ms / 1e3)),
                    after,
                })
            }
        }
    }

    fn start_agent(&mut self, agent: &AgentConfig) -> Result<()> {
        let bin = agent.bin.clone().context(
            "skiff-agent binary not found; build it (`cargo build --release -p agent`) or pass --agent PATH",
        )?;
        let mode = match self.variant {
            Variant::SkiffSocket => "socket",
            _ => "tc",
        };
        let cgroup = self
            .cgroup
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup/unified"));
        let spec = AgentSpec {
            bin: &bin,
            workdir: &agent.workdir,
            node: &self.tb.node,
            netns: &self.tb.node,
            uplink: ifname::NODE_UPLINK,
            pod_iface: "pod-*",
            cgroup: &cgroup,
            mode,
            metrics_port: self.variant.metrics_port(),
            // Frames XDP sends on (TX back out of the uplink, or redirected to the backends' veth) need an XDP
            // program on the receiving peer. Only the NodePort testbed gets them: XDP on a veth turns off GSO on
            // its peer and moves the veth to its NAPI path, which would skew the ClusterIP variants' figures.
            xdp_pass: if self.variant == Variant::SkiffXdp {
                vec![
                    (self.tb.backend.as_str(), ifname::PEER),
                    (self.tb.external.as_str(), ifname::PEER),
                ]
            } else {
                Vec::new()
            },
            kubeconfig: None,
        };
        self.agent = Some(Agent::start(&spec)?);
        Ok(())
    }

    /// Fails if the variant's agent has exited (with the tail of its log).
    pub fn check_agent(&mut self) -> Result<()> {
        match self.agent.as_mut() {
            Some(a) => a.check(),
            None => Ok(()),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.agent.take();
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// Service and EndpointSlice manifests for `skiff-agent proxy --manifests`: one file per Service (its Service and
/// EndpointSlice as JSON documents in one YAML stream), so that a change to one Service rewrites one small file.
/// Returns (file name, text) sorted by file name. Endpoints sit on `node` (the backends' veth hangs off the node
/// namespace): NodePort traffic to them is DNATed by XDP and passed up the node's stack.
pub fn manifests(services: &[ServicePort], node: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = services
        .iter()
        .map(|s| (format!("{}_{}.yaml", s.namespace, s.name), manifest(s, node)))
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// The Service and EndpointSlice documents of one Service port.
fn manifest(s: &ServicePort, node: &str) -> String {
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
        .map(|e| {
            serde_json::json!({
                "addresses": [e.ip.to_string()], "nodeName": node,
                "conditions": {"ready": true, "serving": true, "terminating": false}
            })
        })
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
    let mut out = String::new();
    let _ = writeln!(out, "---\n{svc}\n---\n{slice}");
    out
}

/// The skiff-agent binary: `--agent`, else `SKIFF_AGENT_BIN` (set by `cargo xtask test`), else the workspace's
/// release or debug build.
pub fn find_agent(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("SKIFF_AGENT_BIN").map(PathBuf::from)) {
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
        let files = manifests(&svcs, "skb-x-n");
        assert_eq!(files.len(), 3, "one file per Service");
        assert!(files[2].1.contains("\"nodeName\":\"skb-x-n\""));
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"bench_svc-target.yaml"), "{names:?}");
        let m: String = files.iter().map(|(_, t)| t.as_str()).collect();
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
