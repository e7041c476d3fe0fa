//! What a node gives the agent without being told: the uplink behind the default route and the cgroup v2 root.
use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

use crate::bpf::netns;

/// Errors discovering the node's environment.
#[derive(Debug, thiserror::Error)]
pub enum NodeEnvError {
    #[error("reading the routing table {path}: {source}")]
    Routes { path: String, source: std::io::Error },
    #[error(
        "no IPv4 default route, so the uplink cannot be detected: pass --uplink IFACE (or --uplink none to run \
         without XDP)"
    )]
    NoDefaultRoute,
    #[error(
        "no cgroup v2 hierarchy at {0} (nor at {0}/unified): mount cgroup2 there or pass --cgroup with a cgroup v2 \
         directory"
    )]
    NoCgroup2(PathBuf),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("the route lookup thread panicked")]
    ThreadDied,
}

/// One IPv4 default route from `/proc/net/route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRoute {
    pub iface: String,
    pub metric: u32,
}

const RTF_UP: u32 = 0x1;

/// The IPv4 default routes in `/proc/net/route` text (destination and mask 0, route up), lowest metric first.
pub fn default_routes(proc_net_route: &str) -> Vec<DefaultRoute> {
    let mut routes: Vec<DefaultRoute> = proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
            let (iface, dest, flags, metric, mask) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default =
                u32::from_str_radix(dest, 16).ok()? == 0 && u32::from_str_radix(mask, 16).ok()? == 0;
            (is_default && flags & RTF_UP != 0).then(|| DefaultRoute {
                iface: (*iface).to_string(),
                metric: metric.parse().unwrap_or(u32::MAX),
            })
        })
        .collect();
    routes.sort_by_key(|r| r.metric);
    routes
}

/// The interface of the preferred IPv4 default route in `netns` (the agent's own namespace when `None`).
pub fn detect_uplink(netns_name: Option<String>) -> Result<String, NodeEnvError> {
    // /proc/thread-self: the routing table of the namespace this thread is in, not the process's.
    let h = netns::spawn_in(netns_name, "skiff-uplink", || {
        let path = "/proc/thread-self/net/route";
        std::fs::read_to_string(path).map_err(|source| NodeEnvError::Routes {
            path: path.to_string(),
            source,
        })
    })?;
    let text = h.join().map_err(|_| NodeEnvError::ThreadDied)???;
    default_routes(&text)
        .into_iter()
        .next()
        .map(|r| r.iface)
        .ok_or(NodeEnvError::NoDefaultRoute)
}

/// Where the cgroup v2 hierarchy is, given `base` and a test for "is this a cgroup2 mount": `base` itself on
/// unified hosts (and for any directory inside a cgroup2 tree), `base/unified` on hybrid hosts.
pub fn cgroup2_dir(base: &Path, is_cgroup2: impl Fn(&Path) -> bool) -> Result<PathBuf, NodeEnvError> {
    let hybrid = base.join("unified");
    if is_cgroup2(base) {
        Ok(base.to_path_buf())
    } else if is_cgroup2(&hybrid) {
        Ok(hybrid)
    } else {
        Err(NodeEnvError::NoCgroup2(base.to_path_buf()))
    }
}

/// Whether `path` is on a cgroup2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth1\t00000000\t0100A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
        eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
        eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
        down0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let r = default_routes(ROUTES);
        assert_eq!(
            r,
            [
                DefaultRoute {
                    iface: "eth0".into(),
                    metric: 100
                },
                DefaultRoute {
                    iface: "eth1".into(),
                    metric: 200
                },
            ]
        );
    }

    #[test]
    fn no_default_route() {
        let only_subnet = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
            eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert!(default_routes(only_subnet).is_empty());
        assert!(default_routes("").is_empty());
        assert!(default_routes("garbage\nmore garbage here\n").is_empty());
    }

    #[test]
    fn cgroup2_unified_hybrid_and_missing() {
        let base = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup2_dir(base, |p| p == base).unwrap(), base);
        assert_eq!(
            cgroup2_dir(base, |p| p == Path::new("/sys/fs/cgroup/unified")).unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        let err = cgroup2_dir(base, |_| false).unwrap_err();
        assert!(err.to_string().contains("--cgroup"), "{err}");
    }

    #[test]
    fn this_machine_has_a_cgroup2_hierarchy() {
        // Debian 12 hosts are unified, this CI machine is hybrid: either way detection must find one.
        let dir = cgroup2_dir(Path::new("/sys/fs/cgroup"), is_cgroup2).expect("a cgroup2 mount");
        assert!(is_cgroup2(&dir));
    }
}
