//! The objects the bench creates (ConfigMaps, Pods, fake Nodes) and the API paths it uses.
use serde_json::{Value, json};

/// Pods carry `app=bench-<i % LABEL_GROUPS>`, so a label selector matches a tenth of them.
pub const LABEL_GROUPS: usize = 10;
/// The annotation that numbers the updates of the watch fan-out.
pub const SEQ_ANNOTATION: &str = "bench.skiff.dev/seq";

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

pub fn config_map(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i:05}"), "labels": {"app": group(i)}},
        "data": {
            "index": i.to_string(),
            "app.properties": format!("listen=0.0.0.0:8080\nworkers=4\nshard={i}\nlog.level=info\n"),
        },
    })
}

/// The label value of object `i`.
pub fn group(i: usize) -> String {
    format!("bench-{}", i % LABEL_GROUPS)
}

/// A pod shaped like a small Deployment replica (one container, requests, a port, probes, env).
pub fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(i),
            "labels": {"app": group(i), "tier": "web"},
            "annotations": {SEQ_ANNOTATION: "0"},
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "SHARD", "value": i.to_string()}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
            }],
        },
    })
}

pub fn pod_name(i: usize) -> String {
    format!("pod-{i:05}")
}

/// A fake node: created like a kubelet would register it; its status comes from [`node_status`].
pub fn node(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(i), "labels": {"kubernetes.io/hostname": node_name(i)}},
    })
}

pub fn node_name(i: usize) -> String {
    format!("bench-node-{i:03}")
}

/// Ready, with room for 110 pods of [`pod`]'s requests.
pub fn node_status() -> Value {
    let room = json!({"cpu": "32", "memory": "64Gi", "pods": "110"});
    json!({"status": {
        "capacity": room, "allocatable": room,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
    }})
}

/// The merge patch of update `seq` of the watch fan-out.
pub fn seq_patch(seq: usize) -> Value {
    json!({"metadata": {"annotations": {SEQ_ANNOTATION: seq.to_string()}}})
}

/// The sequence number in a watch event line, found without parsing the (large) object.
pub fn seq_of(line: &[u8]) -> Option<usize> {
    let key = format!("\"{SEQ_ANNOTATION}\":\"");
    let start = find(line, key.as_bytes())? + key.len();
    let len = line[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&line[start..start + len]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The pod's name in a watch event line, when that pod is bound to a node.
pub fn bound_pod(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        object: Obj,
    }
    #[derive(serde::Deserialize)]
    struct Obj {
        metadata: Meta,
        spec: Option<Spec>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        node_name: Option<String>,
    }
    let ev: Event = serde_json::from_slice(line).ok()?;
    ev.object.spec?.node_name.filter(|n| !n.is_empty())?;
    Some(ev.object.metadata.name)
}

/// Item count of a list response (`items`) or a Table (`rows`).
pub fn count_items(body: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct List {
        items: Option<Vec<serde::de::IgnoredAny>>,
        rows: Option<Vec<serde::de::IgnoredAny>>,
    }
    let l: List = serde_json::from_slice(body).ok()?;
    l.items.or(l.rows).map(|v| v.len())
}

/// The `metadata.continue` token of a list page (`None` on the last page).
pub fn continue_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct List {
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "continue")]
        token: Option<String>,
    }
    let l: List = serde_json::from_slice(body).ok()?;
    l.metadata.token.filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_found_in_an_event_line() {
        let ev = json!({"type": "MODIFIED", "object": pod(7)});
        let mut obj = ev.clone();
        obj["object"]["metadata"]["annotations"][SEQ_ANNOTATION] = json!("42");
        assert_eq!(seq_of(&serde_json::to_vec(&ev).unwrap()), Some(0));
        assert_eq!(seq_of(&serde_json::to_vec(&obj).unwrap()), Some(42));
        assert_eq!(seq_of(b"{\"type\":\"BOOKMARK\"}"), None);
    }

    #[test]
    fn bound_pods_are_recognised() {
        let mut ev = json!({"type": "MODIFIED", "object": pod(3)});
        assert_eq!(bound_pod(&serde_json::to_vec(&ev).unwrap()), None);
        ev["object"]["spec"]["nodeName"] = json!("bench-node-001");
        assert_eq!(
            bound_pod(&serde_json::to_vec(&ev).unwrap()).as_deref(),
            Some("pod-00003")
        );
    }

    #[test]
    fn lists_tables_and_continue_tokens() {
        let list = json!({"kind": "PodList", "metadata": {"continue": "abc"}, "items": [pod(1), pod(2)]});
        let body = serde_json::to_vec(&list).unwrap();
        assert_eq!(count_items(&body), Some(2));
        assert_eq!(continue_token(&body).as_deref(), Some("abc"));
        let table = json!({"kind": "Table", "metadata": {}, "rows": [{}, {}, {}]});
        let body = serde_json::to_vec(&table).unwrap();
        assert_eq!(count_items(&body), Some(3));
        assert_eq!(continue_token(&body), None);
    }

    #[test]
    fn labels_split_objects_into_ten_groups() {
        assert_eq!(pod(13)["metadata"]["labels"]["app"], "bench-3");
        assert_eq!(config_map(20)["metadata"]["labels"]["app"], "bench-0");
    }
}
