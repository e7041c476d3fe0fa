//! Node IPAM: gives every Node a pod CIDR (`spec.podCIDR`/`podCIDRs`) carved from the cluster CIDR.
//!
//! Like kube-controller-manager's range allocator, the allocator keeps no state of its own: every pass
//! rebuilds the used set from the Nodes (so allocations survive restarts and a deleted Node frees its range),
//! plus the ranges this process assigned that the cache does not show yet.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::cache::{self, Caches};
use super::events;
use crate::registry::alloc::Ipv4Cidr;

const DEBOUNCE: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_secs(1);
/// More subnets than this per cluster CIDR are refused (kube-controller-manager's limit is 2^16 as well).
const MAX_SUBNET_BITS: u8 = 16;

/// The cluster CIDR and the size of each Node's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamConfig {
    pub cluster_cidr: Ipv4Cidr,
    pub node_mask: u8,
}

impl IpamConfig {
    /// 10.244.0.0/16 in /24s.
    pub const DEFAULT: Self = Self {
        cluster_cidr: Ipv4Cidr {
            network: Ipv4Addr::new(10, 244, 0, 0),
            prefix: 16,
        },
        node_mask: 24,
    };
}

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix /{prefix} and /30")]
    Mask { mask: u8, prefix: u8 },
    #[error("--node-cidr-mask-size {mask} splits /{prefix} into more than 2^{MAX_SUBNET_BITS} ranges")]
    TooMany { mask: u8, prefix: u8 },
}

/// Hands out the node-sized subnets of the cluster CIDR, lowest free first.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: IpamConfig,
    used: BTreeSet<u32>,
}

impl Allocator {
    pub fn new(config: IpamConfig) -> Result<Self, ConfigError> {
        let (mask, prefix) = (config.node_mask, config.cluster_cidr.prefix);
        if mask < prefix || mask > 30 {
            return Err(ConfigError::Mask { mask, prefix });
        }
        if mask - prefix > MAX_SUBNET_BITS {
            return Err(ConfigError::TooMany { mask, prefix });
        }
        Ok(Self {
            config,
            used: BTreeSet::new(),
        })
    }

    fn count(&self) -> u32 {
        1 << (self.config.node_mask - self.config.cluster_cidr.prefix)
    }

    fn subnet(&self, index: u32) -> Ipv4Cidr {
        let base = u32::from(self.config.cluster_cidr.network);
        Ipv4Cidr {
            network: Ipv4Addr::from(base + (index << (32 - self.config.node_mask))),
            prefix: self.config.node_mask,
        }
    }

    /// The index of `cidr` if it is exactly one of this allocator's subnets.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let parsed: Ipv4Cidr = cidr.parse().ok()?;
        if parsed.prefix != self.config.node_mask || parsed.to_string() != cidr {
            return None;
        }
        let offset = u32::from(parsed.network).checked_sub(u32::from(self.config.cluster_cidr.network))?;
        let index = offset >> (32 - self.config.node_mask);
        (index < self.count()).then_some(index)
    }

    /// Marks a range a Node already holds as used; false when it is not one of ours (it is left alone).
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    /// Frees a range.
    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    /// The lowest free range, now marked used; None when the cluster CIDR is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Cidr> {
        let index = (0..self.count()).find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        Some(self.subnet(index))
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

/// Which Nodes get which range this pass (pure): `pending` holds ranges assigned earlier that the Nodes do not
/// show yet; the result lists (node, range) assignments and the Nodes left without one because the CIDR is full.
pub fn assign(
    allocator: &mut Allocator,
    nodes: &[&Node],
    pending: &HashMap<String, String>,
) -> (Vec<(String, Ipv4Cidr)>, Vec<String>) {
    for node in nodes {
        if let Some(cidr) = pod_cidr(node) {
            allocator.occupy(cidr);
        } else if let Some(cidr) = pending.get(&node.name_any()) {
            allocator.occupy(cidr);
        }
    }
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| pod_cidr(n).is_none() && n.metadata.deletion_timestamp.is_none())
        .map(|n| n.name_any())
        .filter(|n| !pending.contains_key(n))
        .collect();
    names.sort();
    let mut assigned = Vec::new();
    let mut exhausted = Vec::new();
    for name in names {
        match allocator.allocate() {
            Some(cidr) => assigned.push((name, cidr)),
            None => exhausted.push(name),
        }
    }
    (assigned, exhausted)
}

/// Runs until the caches stop; an unusable configuration is logged and the controller stays off.
pub async fn run(client: Client, caches: Arc<Caches>, config: IpamConfig) {
    if let Err(e) = Allocator::new(config) {
        tracing::error!(error = %e, "node IPAM is off");
        return;
    }
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut reported_full: BTreeSet<String> = BTreeSet::new();
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished =
            pass(&client, &caches, config, &mut pending, &mut reported_full).await || !pending.is_empty();
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

async fn pass(
    client: &Client,
    caches: &Caches,
    config: IpamConfig,
    pending: &mut HashMap<String, String>,
    reported_full: &mut BTreeSet<String>,
) -> bool {
    let Ok(mut allocator) = Allocator::new(config) else {
        return false;
    };
    let nodes = caches.nodes.state();
    let by_name: HashMap<String, &Node> = nodes.iter().map(|n| (n.name_any(), &**n)).collect();
    // Done once the cache shows the range, or moot once the Node is gone.
    pending.retain(|name, _| by_name.get(name).is_some_and(|n| pod_cidr(n).is_none()));
    reported_full.retain(|name| by_name.get(name).is_some_and(|n| pod_cidr(n).is_none()));
    let refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let (assigned, exhausted) = assign(&mut allocator, &refs, pending);
    let api: Api<Node> = Api::all(client.clone());
    let mut failed = false;
    for (name, cidr) in assigned {
        let cidr = cidr.to_string();
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "allocated pod CIDR");
                pending.insert(name, cidr);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "setting the pod CIDR");
                failed = true;
            }
        }
    }
    for name in exhausted {
        if reported_full.insert(name.clone()) {
            tracing::error!(
                node = %name,
                cluster_cidr = %config.cluster_cidr,
                mask = config.node_mask,
                "no pod CIDR left for the node: the cluster CIDR is exhausted"
            );
            if let Some(node) = by_name.get(&name) {
                let note = format!(
                    "Node {name} status is now: CIDRNotAvailable (no /{} left in {})",
                    config.node_mask, config.cluster_cidr
                );
                events::record(
                    client,
                    *node,
                    "Warning",
                    "CIDRNotAvailable",
                    "AllocateCIDR",
                    &note,
                )
                .await;
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(cidr: &str, mask: u8) -> IpamConfig {
        IpamConfig {
            cluster_cidr: cidr.parse().unwrap(),
            node_mask: mask,
        }
    }

    fn node(name: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}})).unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let mut a = Allocator::new(IpamConfig::DEFAULT).unwrap();
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.1.0/24");
        assert!(a.occupy("10.244.2.0/24"));
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.3.0/24");
        a.release("10.244.1.0/24");
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.1.0/24");
        // Foreign or misaligned ranges are not ours.
        assert!(!a.occupy("10.245.0.0/24"));
        assert!(!a.occupy("10.244.0.0/25"));
        assert!(!a.occupy("10.244.0.5/24"));
    }

    #[test]
    fn exhaustion_and_bad_masks() {
        let mut a = Allocator::new(config("10.0.0.0/24", 26)).unwrap();
        let got: Vec<String> = std::iter::from_fn(|| a.allocate())
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"]
        );
        assert!(a.allocate().is_none());
        assert!(Allocator::new(config("10.0.0.0/16", 8)).is_err());
        assert!(Allocator::new(config("10.0.0.0/8", 30)).is_err());
        assert!(Allocator::new(config("10.0.0.0/16", 31)).is_err());
    }

    #[test]
    fn assignment_rebuilds_from_nodes_and_pending() {
        let nodes = [
            node("c", None),
            node("a", Some("10.0.0.0/26")),
            node("b", None),
            node("d", None),
            node("e", None),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let pending = HashMap::from([("d".to_owned(), "10.0.0.64/26".to_owned())]);
        let mut a = Allocator::new(config("10.0.0.0/24", 26)).unwrap();
        let (assigned, full) = assign(&mut a, &refs, &pending);
        let assigned: Vec<(String, String)> = assigned.into_iter().map(|(n, c)| (n, c.to_string())).collect();
        assert_eq!(
            assigned,
            [
                ("b".to_owned(), "10.0.0.128/26".to_owned()),
                ("c".to_owned(), "10.0.0.192/26".to_owned())
            ]
        );
        assert_eq!(full, ["e"]);
    }
}
