//! Pods a controller created or deleted that its cache does not show yet (kube-controller-manager's
//! "expectations"): until they show up the owner is not reconciled again, so it never overshoots.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// Writes the cache has not shown after this long are no longer waited for.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The pod creates and deletes of one owner that the cache has yet to show.
#[derive(Debug, Default)]
pub struct PodExpectations {
    pub creates: HashSet<String>,
    pub deletes: HashSet<String>,
    /// When the last writes were made.
    pub since: Option<Instant>,
}

impl PodExpectations {
    /// Forgets what `pods` (the owner's pods as cached) already show; true when nothing is left to wait for or
    /// the wait timed out.
    pub fn satisfied(&mut self, pods: &[&Pod]) -> bool {
        let present: HashSet<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        self.creates.retain(|n| !present.contains(n.as_str()));
        let live: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        self.deletes.retain(|n| live.contains(n.as_str()));
        let expired = self.since.is_some_and(|t| t.elapsed() > TIMEOUT);
        !self.pending() || expired
    }

    /// True while some write is not in the cache yet.
    pub fn pending(&self) -> bool {
        !(self.creates.is_empty() && self.deletes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, terminating: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        if terminating {
            p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        }
        p
    }

    #[test]
    fn waits_until_creates_appear_and_deletes_start() {
        let mut e = PodExpectations {
            creates: HashSet::from(["a".to_owned()]),
            deletes: HashSet::from(["b".to_owned()]),
            since: Some(Instant::now()),
        };
        let (a, b, b_gone) = (pod("a", false), pod("b", false), pod("b", true));
        assert!(!e.satisfied(&[&b]), "a not created yet, b still live");
        assert!(!e.satisfied(&[&a, &b]), "b still live");
        assert!(e.satisfied(&[&a, &b_gone]), "a present, b terminating");
        assert!(!e.pending());
    }

    #[test]
    fn gives_up_after_the_timeout() {
        let mut e = PodExpectations {
            creates: HashSet::from(["never".to_owned()]),
            since: Some(Instant::now() - TIMEOUT - Duration::from_secs(1)),
            ..PodExpectations::default()
        };
        assert!(e.satisfied(&[]));
        assert!(e.pending());
    }
}
