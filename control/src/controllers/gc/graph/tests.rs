use super::*;

fn obj(kind: &str, name: &str, uid: &str) -> Node {
    let api_version = match kind {
        "ReplicaSet" | "Deployment" | "DaemonSet" => "apps/v1",
        _ => "v1",
    };
    Node {
        id: ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: (kind != "Node").then(|| "default".into()),
            name: name.into(),
            uid: uid.into(),
        },
        owners: Vec::new(),
        finalizers: Vec::new(),
        deleting: false,
    }
}

fn owned_by(mut node: Node, owner: &Node, block: bool) -> Node {
    node.owners.push(OwnerLink {
        api_version: owner.id.api_version.clone(),
        kind: owner.id.kind.clone(),
        name: owner.id.name.clone(),
        uid: owner.id.uid.clone(),
        block,
    });
    node
}

fn deleting(mut node: Node, finalizer: &str) -> Node {
    node.deleting = true;
    node.finalizers.push(finalizer.into());
    node
}

fn all_known(_: &str, _: &str) -> bool {
    true
}

#[test]
fn dependents_of_live_owners_are_kept() {
    let rs = obj("ReplicaSet", "web", "rs1");
    let pod = owned_by(obj("Pod", "web-a", "p1"), &rs, true);
    assert!(decide(&[rs, pod], all_known).is_empty());
}

#[test]
fn dependents_of_gone_owners_are_deleted_in_the_background() {
    let rs = obj("ReplicaSet", "web", "rs1");
    let pod = owned_by(obj("Pod", "web-a", "p1"), &rs, true);
    let actions = decide(std::slice::from_ref(&pod), all_known);
    assert_eq!(
        actions,
        [Action::Delete {
            object: pod.id.clone(),
            policy: Propagation::Background,
            dangling: pod.owners.clone(),
        }]
    );
}

#[test]
fn an_owner_with_another_uid_is_gone() {
    let old = obj("ReplicaSet", "web", "rs-old");
    let pod = owned_by(obj("Pod", "web-a", "p1"), &old, false);
    let recreated = obj("ReplicaSet", "web", "rs-new");
    let actions = decide(&[recreated, pod], all_known);
    assert!(matches!(
        &actions[..],
        [Action::Delete {
            policy: Propagation::Background,
            ..
        }]
    ));
}

#[test]
fn owners_of_unknown_kinds_are_never_judged_gone() {
    let mut pod = obj("Pod", "x", "p1");
    pod.owners.push(OwnerLink {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        name: "w".into(),
        uid: "w1".into(),
        block: true,
    });
    assert!(decide(&[pod], |group, _| group != "example.com").is_empty());
}

#[test]
fn a_live_owner_keeps_the_dependent_and_gone_references_are_dropped() {
    let live = obj("ReplicaSet", "a", "rs1");
    let gone = obj("ReplicaSet", "b", "rs2");
    let pod = owned_by(owned_by(obj("Pod", "p", "p1"), &live, false), &gone, false);
    let actions = decide(&[live, pod.clone()], all_known);
    assert_eq!(
        actions,
        [Action::RemoveOwners {
            object: pod.id,
            uids: vec!["rs2".into()],
            dangling: vec![pod.owners[1].clone()],
        }]
    );
}

#[test]
fn cluster_scoped_owners_are_found() {
    let node = obj("Node", "n1", "n1-uid");
    let lease = owned_by(obj("Lease", "n1", "l1"), &node, false);
    assert!(decide(&[node, lease.clone()], all_known).is_empty());
    assert!(matches!(
        &decide(&[lease], all_known)[..],
        [Action::Delete { .. }]
    ));
}

#[test]
fn orphaning_strips_references_then_the_finalizer() {
    let rs = deleting(obj("ReplicaSet", "web", "rs1"), ORPHAN);
    let pod = owned_by(obj("Pod", "web-a", "p1"), &rs, true);
    let actions = decide(&[rs.clone(), pod.clone()], all_known);
    assert_eq!(
        actions,
        [Action::RemoveOwners {
            object: pod.id.clone(),
            uids: vec!["rs1".into()],
            dangling: vec![],
        }]
    );
    let mut released = pod;
    released.owners.clear();
    assert_eq!(
        decide(&[rs.clone(), released], all_known),
        [Action::RemoveFinalizer {
            object: rs.id,
            finalizer: ORPHAN
        }]
    );
}

#[test]
fn foreground_deletes_dependents_and_waits_for_blocking_ones() {
    let rs = deleting(obj("ReplicaSet", "web", "rs1"), FOREGROUND);
    let blocking = owned_by(obj("Pod", "a", "p1"), &rs, true);
    let loose = owned_by(obj("Pod", "b", "p2"), &rs, false);
    let actions = decide(&[rs.clone(), blocking.clone(), loose.clone()], all_known);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::Delete { dangling, .. } if dangling.is_empty()))
    );
    // A terminating blocking pod still holds the owner; once it is gone the finalizer goes.
    let mut terminating = blocking;
    terminating.deleting = true;
    assert!(decide(&[rs.clone(), terminating], all_known).is_empty());
    assert_eq!(
        decide(&[rs.clone(), loose], all_known),
        [
            Action::RemoveFinalizer {
                object: rs.id.clone(),
                finalizer: FOREGROUND
            },
            Action::Delete {
                object: ObjectRef {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: Some("default".into()),
                    name: "b".into(),
                    uid: "p2".into()
                },
                policy: Propagation::Background,
                dangling: vec![]
            }
        ]
    );
}

#[test]
fn foreground_cascades_through_dependents_that_own_others() {
    let deploy = deleting(obj("Deployment", "web", "d1"), FOREGROUND);
    let rs = owned_by(obj("ReplicaSet", "web-1", "rs1"), &deploy, true);
    let pod = owned_by(obj("Pod", "web-1-a", "p1"), &rs, true);
    let actions = decide(&[deploy, rs.clone(), pod], all_known);
    assert_eq!(
        actions,
        [Action::Delete {
            object: rs.id,
            policy: Propagation::Foreground,
            dangling: vec![]
        }]
    );
}

#[test]
fn a_second_live_owner_keeps_a_dependent_of_a_foreground_owner() {
    let rs = deleting(obj("ReplicaSet", "web", "rs1"), FOREGROUND);
    let other = obj("ReplicaSet", "other", "rs2");
    let pod = owned_by(owned_by(obj("Pod", "a", "p1"), &rs, true), &other, false);
    let actions = decide(&[rs, other, pod.clone()], all_known);
    assert_eq!(
        actions,
        [Action::RemoveOwners {
            object: pod.id,
            uids: vec!["rs1".into()],
            dangling: vec![]
        }]
    );
}

#[test]
fn dependents_keep_their_own_policy_finalizers() {
    let mut rs = obj("ReplicaSet", "web", "rs1");
    rs.finalizers.push(ORPHAN.into());
    let deploy = obj("Deployment", "web", "d1");
    let rs = owned_by(rs, &deploy, true);
    assert!(matches!(
        &decide(&[rs], all_known)[..],
        [Action::Delete {
            policy: Propagation::Orphan,
            ..
        }]
    ));
}

#[test]
fn group_of_splits_api_versions() {
    assert_eq!(group_of("apps/v1"), "apps");
    assert_eq!(group_of("v1"), "");
    assert_eq!(group_of("discovery.k8s.io/v1"), "discovery.k8s.io");
}
