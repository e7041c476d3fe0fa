//! `skiff-agent cleanup --node NAME`: removes everything a lab node made, by name, also after its agent died —
//! its pods (process groups and sandboxes, so their network namespaces go), their veths, the routes to other
//! nodes, the masquerade table, the node's cgroups, its BPF pins and the state directory's content. Idempotent.
use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    ipam::Ipam,
    names,
    nft::{self, NftError},
    nl::{self, Netns},
    node_routes,
};
use crate::{
    bpf::{
        cleanup::{Removed, cleanup_node},
        pins::PinDir,
    },
    pods::{
        cgroup,
        runtime::{PodRuntime, RuntimeConfig},
    },
};

/// File in the state directory recording where the node lives, so cleanup finds it without flags.
pub const RECORD_FILE: &str = "node.json";

/// Where a node's things are (written by the running agent; cleanup flags override it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's network namespace (`/run/netns/NAME`), `None` for the agent's own.
    pub netns: Option<String>,
    /// The cgroup v2 mount the node's cgroups are under.
    pub cgroup2: Option<PathBuf>,
}

impl NodeRecord {
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        let tmp = state_dir.join(format!("{RECORD_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("a record serialises"),
        )?;
        std::fs::rename(tmp, state_dir.join(RECORD_FILE))
    }

    /// The saved record, if there is a readable one.
    pub fn load(state_dir: &Path) -> Option<Self> {
        std::fs::read(state_dir.join(RECORD_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

/// What to clean up.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub state_dir: PathBuf,
    pub netns: Option<String>,
    pub cgroup2: PathBuf,
    /// Whether the node's network namespace holds things of this node (links, routes, the nat table): true when
    /// its agent recorded itself in the state directory or the namespace was named. Without that the namespace may
    /// be shared with other nodes' agents and is left alone.
    pub network: bool,
}

impl Target {
    /// The node's cgroup directory (`<cgroup2>/skiff/<node>`).
    pub fn cgroup_dir(&self) -> PathBuf {
        cgroup::default_root(&self.cgroup2, &self.node)
            .parent()
            .expect("the pods cgroup has a parent")
            .to_path_buf()
    }

    fn ns(&self) -> Netns {
        self.netns.as_deref().map_or(Netns::Current, Netns::named)
    }
}

/// What was removed.
#[derive(Debug, Default)]
pub struct Report {
    /// UIDs of the pods stopped and removed.
    pub pods: Vec<String>,
    pub links: Vec<String>,
    /// `dst via gateway` of the routes to other nodes.
    pub routes: Vec<String>,
    pub nft_table: bool,
    pub cgroups: Vec<PathBuf>,
    pub pins: Removed,
    pub state: Vec<PathBuf>,
    /// Steps that failed (the others still ran).
    pub errors: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.links.is_empty()
            && self.routes.is_empty()
            && !self.nft_table
            && self.cgroups.is_empty()
            && self.pins.is_empty()
            && self.state.is_empty()
    }

    /// One line per removed thing, for the command's output.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.pods.iter().map(|p| format!("stopped and removed pod {p}")));
        out.extend(self.links.iter().map(|l| format!("deleted link {l}")));
        out.extend(self.routes.iter().map(|r| format!("deleted route {r}")));
        if self.nft_table {
            out.push(format!("deleted nftables table ip {}", super::masquerade::TABLE));
        }
        out.extend(
            self.cgroups
                .iter()
                .map(|c| format!("removed cgroup {}", c.display())),
        );
        out.extend(
            self.pins
                .links
                .iter()
                .map(|p| format!("detached link {}", p.display())),
        );
        out.extend(
            self.pins
                .maps
                .iter()
                .chain(&self.pins.other)
                .chain(&self.state)
                .map(|p| format!("removed {}", p.display())),
        );
        out
    }
}

/// Pod UIDs this node knows of: its pod state directories and its IPAM owners.
pub fn known_pods(state_dir: &Path) -> BTreeSet<String> {
    let mut uids: BTreeSet<String> = std::fs::read_dir(state_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(ipam) = std::fs::read(state_dir.join("ipam.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Ipam>(&b).ok())
    {
        uids.extend(ipam.allocations().values().cloned());
    }
    uids
}

/// Link names to delete in the node namespace: the veths of the known pods; in a namespace of the node's own
/// (`own_ns`), every pod veth (`skp*`/`skq*`) in it as well.
pub fn links_to_delete(uids: &BTreeSet<String>, present: &[String], own_ns: bool) -> Vec<String> {
    let mine: BTreeSet<String> = uids
        .iter()
        .flat_map(|u| [names::host_veth(u), names::peer_veth(u)])
        .collect();
    let mut out: Vec<String> = present
        .iter()
        .filter(|n| {
            mine.contains(*n)
                || (own_ns
                    && (n.starts_with(names::HOST_VETH_PREFIX) || n.starts_with(names::PEER_VETH_PREFIX)))
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

fn stop_pods(t: &Target, uids: &BTreeSet<String>, r: &mut Report) {
    let mut cfg = match RuntimeConfig::for_node(&t.node) {
        Ok(c) => c,
        Err(e) => {
            r.errors.push(format!("pod runtime: {e}"));
            return;
        }
    };
    cfg.state_root = t.state_dir.join("pods");
    cfg.cgroup_root = Some(cgroup::default_root(&t.cgroup2, &t.node));
    let rt = PodRuntime::new(cfg);
    for uid in uids {
        let dir = rt.pod_dir(uid);
        if !dir.path().exists() {
            continue;
        }
        match rt.remove_uid(uid) {
            Ok(()) => r.pods.push(uid.clone()),
            Err(e) => r.errors.push(format!("removing pod {uid}: {e}")),
        }
    }
}

fn delete_links(t: &Target, uids: &BTreeSet<String>, r: &mut Report) {
    let own_ns = t.netns.is_some();
    let res = nl::run_in(&t.ns(), |h| async move {
        let present: Vec<String> = nl::links_with_prefix(&h, "sk")
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        Ok(present)
    });
    let present = match res {
        Ok(p) => p,
        Err(e) => {
            r.errors.push(format!("listing links: {e}"));
            return;
        }
    };
    let doomed = links_to_delete(uids, &present, own_ns);
    let res = nl::run_in(&t.ns(), move |h| async move {
        let mut gone = Vec::new();
        for name in doomed {
            if nl::delete_link(&h, &name).await? {
                gone.push(name);
            }
        }
        Ok(gone)
    });
    match res {
        Ok(gone) => r.links.extend(gone),
        Err(e) => r.errors.push(format!("deleting links: {e}")),
    }
}

fn delete_routes(t: &Target, r: &mut Report) {
    match node_routes::sync(&t.ns(), &[]) {
        Ok((_, removed)) => r
            .routes
            .extend(removed.iter().map(|x| format!("{} via {}", x.dst, x.via))),
        Err(e) => r.errors.push(format!("deleting node routes: {e}")),
    }
}

fn delete_table(t: &Target, r: &mut Report) {
    match nft::remove(&t.ns()) {
        Ok(existed) => r.nft_table = existed,
        // Without nft there is no table the agent could have made.
        Err(NftError::Spawn { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => r.errors.push(format!("deleting the nftables table: {e}")),
    }
}

/// Removes a cgroup tree bottom-up, killing what still runs in it; returns the removed directories.
fn remove_cgroup_tree(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path(), out)?;
        }
    }
    for attempt in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => {
                out.push(dir.to_path_buf());
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 49 => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    Ok(())
}

fn remove_state(t: &Target, r: &mut Report) {
    let Ok(entries) = std::fs::read_dir(&t.state_dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let res = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match res {
            Ok(()) => r.state.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => r.errors.push(format!("removing {}: {e}", p.display())),
        }
    }
}

/// Removes everything of node `t` (see the module doc). Every step runs even when an earlier one failed; the
/// failures are in [`Report::errors`].
pub fn teardown(t: &Target) -> Report {
    let mut r = Report::default();
    let uids = known_pods(&t.state_dir);
    stop_pods(t, &uids, &mut r);
    if t.network {
        delete_links(t, &uids, &mut r);
        delete_routes(t, &mut r);
        delete_table(t, &mut r);
    }
    match PinDir::for_node(&t.node) {
        Ok(pin) => {
            // The pins' names file lives in /run/skiff/<node>: empty the state directory first when it is that one.
            if pin.state_dir() == t.state_dir {
                remove_state(t, &mut r);
            }
            match cleanup_node(&pin) {
                Ok(p) => r.pins = p,
                Err(e) => r.errors.push(format!("removing pins: {e}")),
            }
        }
        Err(e) => r.errors.push(e.to_string()),
    }
    if let Err(e) = remove_cgroup_tree(&t.cgroup_dir(), &mut r.cgroups) {
        r.errors.push(format!(
            "removing cgroups under {}: {e}",
            t.cgroup_dir().display()
        ));
    }
    remove_state(t, &mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_known_from_state_dirs_and_ipam_owners() {
        let dir = std::env::temp_dir().join(format!("skiff-teardown-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pods/uid-a")).unwrap();
        std::fs::write(dir.join("pods/stray-file"), "").unwrap();
        let mut ipam = Ipam::new("10.245.3.0/24".parse().unwrap()).unwrap();
        ipam.allocate("uid-b").unwrap();
        std::fs::write(dir.join("ipam.json"), serde_json::to_vec(&ipam).unwrap()).unwrap();
        let uids = known_pods(&dir);
        assert_eq!(uids.into_iter().collect::<Vec<_>>(), ["uid-a", "uid-b"]);
        NodeRecord {
            netns: Some("n1".into()),
            cgroup2: None,
        }
        .save(&dir)
        .unwrap();
        assert_eq!(NodeRecord::load(&dir).unwrap().netns.as_deref(), Some("n1"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(NodeRecord::load(&dir), None);
        assert!(known_pods(&dir).is_empty());
    }

    #[test]
    fn only_this_nodes_links_are_deleted() {
        let uids = BTreeSet::from(["uid-a".to_string()]);
        let present = vec![
            names::host_veth("uid-a"),
            names::host_veth("uid-other"),
            names::peer_veth("uid-other"),
            "skn-w-node1".to_string(),
            "eth0".to_string(),
        ];
        assert_eq!(
            links_to_delete(&uids, &present, false),
            [names::host_veth("uid-a")]
        );
        let mut own = vec![
            names::host_veth("uid-a"),
            names::host_veth("uid-other"),
            names::peer_veth("uid-other"),
        ];
        own.sort();
        assert_eq!(links_to_delete(&uids, &present, true), own);
    }

    #[test]
    fn report_lines_name_every_removed_thing() {
        let r = Report {
            pods: vec!["u1".into()],
            links: vec!["skp0".into()],
            routes: vec!["10.245.2.0/24 via 10.98.0.12".into()],
            nft_table: true,
            cgroups: vec!["/cg/skiff/n".into()],
            state: vec!["/s/ipam.json".into()],
            ..Report::default()
        };
        assert!(!r.is_empty());
        assert_eq!(
            r.lines(),
            [
                "stopped and removed pod u1",
                "deleted link skp0",
                "deleted route 10.245.2.0/24 via 10.98.0.12",
                "deleted nftables table ip skiff-nat",
                "removed cgroup /cg/skiff/n",
                "removed /s/ipam.json"
            ]
        );
        assert!(Report::default().is_empty());
    }
}
