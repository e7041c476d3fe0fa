//! What the pod manager does next: which pods to start, stop, or finally delete (pure).
use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;

/// What the manager needs to know about a pod bound to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub uid: String,
    /// `Some(grace)` once the pod has a deletionTimestamp.
    pub deleting: Option<Duration>,
    /// The apiserver already shows it Succeeded or Failed (never started again).
    pub terminal: bool,
}

impl Bound {
    pub fn from_pod(p: &Pod) -> Option<Self> {
        let uid = p.metadata.uid.clone()?;
        let deleting = p.metadata.deletion_timestamp.as_ref().map(|_| {
            Duration::from_secs(p.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64)
        });
        let terminal = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        Some(Self {
            uid,
            deleting,
            terminal,
        })
    }
}

/// A pod worker's state as the manager sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Running,
    /// Told to stop; finishing.
    Stopping,
}

/// One step for the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(String),
    /// Stop the pod's containers (`grace` overrides the pod's own), tear it down, and when `delete` is set remove the
    /// pod object for good afterwards.
    Stop {
        uid: String,
        grace: Option<Duration>,
        delete: bool,
    },
    /// The pod is being deleted and nothing runs for it here: remove the object.
    Delete(String),
}

/// The actions that bring `workers` in line with the pods bound to this node.
pub fn decide(bound: &[Bound], workers: &BTreeMap<String, Worker>) -> Vec<Action> {
    let mut out = Vec::new();
    for b in bound {
        match (workers.get(&b.uid), b.deleting) {
            (None, None) if !b.terminal => out.push(Action::Start(b.uid.clone())),
            (None, None) => {}
            (None, Some(_)) => out.push(Action::Delete(b.uid.clone())),
            (Some(Worker::Running), Some(grace)) => out.push(Action::Stop {
                uid: b.uid.clone(),
                grace: Some(grace),
                delete: true,
            }),
            (Some(_), _) => {}
        }
    }
    for (uid, w) in workers {
        if *w == Worker::Running && !bound.iter().any(|b| &b.uid == uid) {
            out.push(Action::Stop {
                uid: uid.clone(),
                grace: None,
                delete: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(uid: &str, deleting: Option<u64>, terminal: bool) -> Bound {
        Bound {
            uid: uid.into(),
            deleting: deleting.map(Duration::from_secs),
            terminal,
        }
    }

    #[test]
    fn starts_new_pods_and_stops_vanished_ones() {
        let workers = BTreeMap::from([
            ("running".to_string(), Worker::Running),
            ("gone".to_string(), Worker::Running),
            ("stopping".to_string(), Worker::Stopping),
        ]);
        let pods = [
            bound("new", None, false),
            bound("running", None, false),
            bound("done", None, true),
        ];
        assert_eq!(
            decide(&pods, &workers),
            vec![
                Action::Start("new".into()),
                Action::Stop {
                    uid: "gone".into(),
                    grace: None,
                    delete: false
                }
            ]
        );
    }

    #[test]
    fn graceful_deletion_stops_then_deletes() {
        let workers = BTreeMap::from([
            ("a".to_string(), Worker::Running),
            ("b".to_string(), Worker::Stopping),
        ]);
        let pods = [
            bound("a", Some(30), false),
            bound("b", Some(30), false),
            bound("c", Some(0), false),
        ];
        assert_eq!(
            decide(&pods, &workers),
            vec![
                Action::Stop {
                    uid: "a".into(),
                    grace: Some(Duration::from_secs(30)),
                    delete: true
                },
                Action::Delete("c".into()),
            ]
        );
    }

    #[test]
    fn reads_deletion_and_phase_from_the_pod() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1", "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "deletionGracePeriodSeconds": 5},
            "status": {"phase": "Failed"}
        }))
        .unwrap();
        assert_eq!(Bound::from_pod(&p), Some(bound("u1", Some(5), true)));
        let no_uid: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(Bound::from_pod(&no_uid), None);
    }
}
