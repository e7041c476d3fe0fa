//! The table of served resource kinds: names, scope, verbs and the typed (k8s-openapi) schema of each.

use k8s_openapi::api::{apps, authentication, authorization, coordination, core, discovery, events, rbac};
use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use super::event_conversion;

/// Decodes a JSON object into the kind's k8s-openapi type and encodes it back (prunes unknown fields).
pub type Normalize = fn(Value) -> Result<Value, serde_json::Error>;

/// Adds the kind's OpenAPI schema (and everything it references) to a generator; returns the reference.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One served resource (a plural name inside a group-version).
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [&'static str],
    pub normalize: Normalize,
    pub schema: SchemaFn,
    /// The schema's definition name (`io.k8s.api.core.v1.Pod`).
    pub schema_name: fn() -> std::borrow::Cow<'static, str>,
    /// Set when this kind is a view of another kind's storage (events.k8s.io Events are core Events).
    pub storage: Option<StorageView>,
}

/// Where a view kind's objects live and how they are converted at the API boundary.
#[derive(Debug, Clone, Copy)]
pub struct StorageView {
    /// Group of the kind that owns the storage; empty for core.
    pub group: &'static str,
    /// Plural of the kind that owns the storage.
    pub plural: &'static str,
    /// Stored object -> the view's shape.
    pub to_view: fn(Value) -> Value,
    /// The view's shape -> the stored object.
    pub to_storage: fn(Value) -> Value,
}

impl Kind {
    /// `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of all objects of this kind (a view shares the prefix of the kind it views).
    pub fn key_prefix(&self) -> String {
        let (group, plural) = match &self.storage {
            Some(view) => (view.group, view.plural),
            None => (self.group, self.plural),
        };
        let group = if group.is_empty() { "core" } else { group };
        format!("/{group}/{plural}/")
    }

    /// Whether this kind is a view of another kind's storage (skipped by storage sweeps).
    pub fn is_view(&self) -> bool {
        self.storage.is_some()
    }

    /// A stored object in this kind's shape.
    pub fn to_view(&self, stored: Value) -> Value {
        match &self.storage {
            Some(view) => (view.to_view)(stored),
            None => stored,
        }
    }

    /// An object of this kind in its stored shape.
    pub fn to_storage(&self, object: Value) -> Value {
        match &self.storage {
            Some(view) => (view.to_storage)(object),
            None => object,
        }
    }

    /// The store key prefix for one namespace, or for everything when `namespace` is `None`.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const ALL: &[&str] = &["all"];
const CREATE: &[&str] = &["create"];

macro_rules! kind {
    ($group:expr, $version:expr, $ty:ty, $kind:expr, $plural:expr, $singular:expr, $ns:expr,
     short: $short:expr, cat: $cat:expr, verbs: $verbs:expr, sub: $sub:expr) => {
        Kind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            verbs: $verbs,
            subresources: $sub,
            normalize: roundtrip::<$ty>,
            schema: |generator| generator.subschema_for::<$ty>(),
            schema_name: <$ty as JsonSchema>::schema_name,
            storage: None,
        }
    };
}

/// Every kind this apiserver serves.
pub static KINDS: &[Kind] = &[
    kind!("", "v1", core::v1::Namespace, "Namespace", "namespaces", "namespace", false,
        short: &["ns"], cat: &[], verbs: NS_VERBS, sub: &["status", "finalize"]),
    kind!("", "v1", core::v1::Node, "Node", "nodes", "node", false,
        short: &["no"], cat: &[], verbs: ALL_VERBS, sub: &["status"]),
    kind!("", "v1", core::v1::Pod, "Pod", "pods", "pod", true,
        short: &["po"], cat: ALL, verbs: ALL_VERBS, sub: &["status", "log", "binding", "exec"]),
    kind!("", "v1", core::v1::Service, "Service", "services", "service", true,
        short: &["svc"], cat: ALL, verbs: ALL_VERBS, sub: &["status"]),
    kind!("", "v1", core::v1::Endpoints, "Endpoints", "endpoints", "endpoints", true,
        short: &["ep"], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("", "v1", core::v1::ConfigMap, "ConfigMap", "configmaps", "configmap", true,
        short: &["cm"], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("", "v1", core::v1::Secret, "Secret", "secrets", "secret", true,
        short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("", "v1", core::v1::Event, "Event", "events", "event", true,
        short: &["ev"], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("", "v1", core::v1::ServiceAccount, "ServiceAccount", "serviceaccounts", "serviceaccount", true,
        short: &["sa"], cat: &[], verbs: ALL_VERBS, sub: &["token"]),
    kind!("apps", "v1", apps::v1::Deployment, "Deployment", "deployments", "deployment", true,
        short: &["deploy"], cat: ALL, verbs: ALL_VERBS, sub: &["status", "scale"]),
    kind!("apps", "v1", apps::v1::ReplicaSet, "ReplicaSet", "replicasets", "replicaset", true,
        short: &["rs"], cat: ALL, verbs: ALL_VERBS, sub: &["status", "scale"]),
    kind!("apps", "v1", apps::v1::DaemonSet, "DaemonSet", "daemonsets", "daemonset", true,
        short: &["ds"], cat: ALL, verbs: ALL_VERBS, sub: &["status"]),
    kind!("discovery.k8s.io", "v1", discovery::v1::EndpointSlice, "EndpointSlice", "endpointslices",
        "endpointslice", true, short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("coordination.k8s.io", "v1", coordination::v1::Lease, "Lease", "leases", "lease", true,
        short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    // A view of the core Events, as in kube-apiserver: one storage, converted field by field.
    Kind {
        storage: Some(StorageView {
            group: "",
            plural: "events",
            to_view: event_conversion::to_events,
            to_storage: event_conversion::to_core,
        }),
        ..kind!("events.k8s.io", "v1", events::v1::Event, "Event", "events", "event", true,
            short: &["ev"], cat: &[], verbs: ALL_VERBS, sub: &[])
    },
    kind!("rbac.authorization.k8s.io", "v1", rbac::v1::ClusterRole, "ClusterRole", "clusterroles",
        "clusterrole", false, short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("rbac.authorization.k8s.io", "v1", rbac::v1::ClusterRoleBinding, "ClusterRoleBinding",
        "clusterrolebindings", "clusterrolebinding", false, short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("rbac.authorization.k8s.io", "v1", rbac::v1::Role, "Role", "roles", "role", true,
        short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    kind!("rbac.authorization.k8s.io", "v1", rbac::v1::RoleBinding, "RoleBinding", "rolebindings",
        "rolebinding", true, short: &[], cat: &[], verbs: ALL_VERBS, sub: &[]),
    // Reviews: create-only, answered by the auth module and never stored.
    kind!("authorization.k8s.io", "v1", authorization::v1::SelfSubjectAccessReview, "SelfSubjectAccessReview",
        "selfsubjectaccessreviews", "selfsubjectaccessreview", false, short: &[], cat: &[], verbs: CREATE, sub: &[]),
    kind!("authorization.k8s.io", "v1", authorization::v1::SelfSubjectRulesReview, "SelfSubjectRulesReview",
        "selfsubjectrulesreviews", "selfsubjectrulesreview", false, short: &[], cat: &[], verbs: CREATE, sub: &[]),
    kind!("authorization.k8s.io", "v1", authorization::v1::SubjectAccessReview, "SubjectAccessReview",
        "subjectaccessreviews", "subjectaccessreview", false, short: &[], cat: &[], verbs: CREATE, sub: &[]),
    kind!("authentication.k8s.io", "v1", authentication::v1::TokenReview, "TokenReview", "tokenreviews",
        "tokenreview", false, short: &[], cat: &[], verbs: CREATE, sub: &[]),
    kind!("authentication.k8s.io", "v1", authentication::v1::SelfSubjectReview, "SelfSubjectReview",
        "selfsubjectreviews", "selfsubjectreview", false, short: &[], cat: &[], verbs: CREATE, sub: &[]),
];

/// The served group-versions in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// Finds a kind by group, version and plural resource name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_namespaces_and_groups() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "p1"), "/core/pods/default/p1");
        assert_eq!(pods.list_prefix(Some("default")), "/core/pods/default/");
        assert_eq!(pods.list_prefix(None), "/core/pods/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/core/nodes/n1");
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().api_version(),
            "apps/v1"
        );
        assert!(find("apps", "v1", "pods").is_none());
    }

    #[test]
    fn event_views_share_the_core_storage() {
        let core = find("", "v1", "events").unwrap();
        let view = find("events.k8s.io", "v1", "events").unwrap();
        assert!(view.is_view() && !core.is_view());
        assert_eq!(view.key(Some("d"), "e1"), core.key(Some("d"), "e1"));
        assert_eq!(view.list_prefix(None), "/core/events/");
        let stored = view.to_storage(serde_json::json!({"regarding": {"name": "p"}, "note": "m"}));
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(view.to_view(stored.clone())["note"], "m");
        assert_eq!(core.to_view(stored.clone()), stored);
    }

    #[test]
    fn normalize_prunes_unknown_fields_and_rejects_bad_types() {
        let cm = find("", "v1", "configmaps").unwrap();
        let out =
            (cm.normalize)(serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}))
                .unwrap();
        assert_eq!(out["data"]["k"], "v");
        assert!(out.get("bogus").is_none());
        assert!((cm.normalize)(serde_json::json!({"data": {"k": 5}})).is_err());
    }

    #[test]
    fn group_versions_start_with_core() {
        let gvs = group_versions();
        assert_eq!(gvs[0], ("", "v1"));
        assert!(gvs.contains(&("apps", "v1")));
        assert_eq!(gvs.len(), 8);
        assert!(gvs.contains(&("rbac.authorization.k8s.io", "v1")));
    }
}
