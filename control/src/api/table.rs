//! `as=Table` rendering for `kubectl get`: the same columns kube-apiserver prints (priority 1 = `-o wide`).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::query::Query;
use crate::registry::kinds::Kind;

/// Kubernetes' `HumanDuration` (as in the AGE column).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h) = (s / 60, s / 3600);
    let d = h / 24;
    let y = d / 365;
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        () if m < 180 => format!("{m}m"),
        () if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        () if h < 48 => format!("{h}h"),
        () if h < 24 * 8 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        () if d < 365 * 2 => format!("{d}d"),
        () if d < 365 * 8 && d % 365 != 0 => format!("{y}y{}d", d % 365),
        () => format!("{y}y"),
    }
}

fn age(object: &Value) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    match created.and_then(|c| c.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(crate::registry::meta::unix_now() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn arr<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map_selector(object: &Value, pointer: &str) -> String {
    let pairs: Vec<String> = object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(pairs.join(","))
}

/// A `LabelSelector` at `pointer` in kubectl's string form (`app=web,tier in (a,b)`), or `<none>`.
pub fn label_selector(object: &Value, pointer: &str) -> String {
    let Some(sel) = object.pointer(pointer) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for expr in arr(sel, "/matchExpressions") {
        let values: Vec<&str> = arr(expr, "/values").iter().filter_map(Value::as_str).collect();
        let key = s(expr, "/key");
        parts.push(match s(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    or_none(parts.join(","))
}

fn containers(object: &Value, pointer: &str) -> (String, String) {
    let cs = arr(object, pointer);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A column: name, type, priority (1 = only with `-o wide`).
type Column = (&'static str, &'static str, u8);
/// Computes a row's cells.
type Cells = fn(&Value) -> Vec<Value>;

fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let reason = s(pod, "/status/reason");
    let mut status = if reason.is_empty() {
        s(pod, "/status/phase").to_owned()
    } else {
        reason.to_owned()
    };
    for c in arr(pod, "/status/containerStatuses") {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.to_owned();
        } else if !terminated.is_empty() {
            status = terminated.to_owned();
        }
    }
    status
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                None => format!("{}/{proto}", n(p, "/port")),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn service_external(svc: &Value) -> String {
    let mut ips: Vec<String> = arr(svc, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| {
            if s(i, "/ip").is_empty() {
                s(i, "/hostname").to_owned()
            } else {
                s(i, "/ip").to_owned()
            }
        })
        .collect();
    ips.extend(
        arr(svc, "/spec/externalIPs")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned),
    );
    match s(svc, "/spec/type") {
        "ExternalName" => s(svc, "/spec/externalName").to_owned(),
        "LoadBalancer" if ips.is_empty() => "<pending>".into(),
        _ => or_none(ips.join(",")),
    }
}

fn node_status(node: &Value) -> String {
    let ready = arr(node, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready");
    // As kube's printer: any Ready status other than True (False or Unknown) is NotReady; no condition is Unknown.
    let mut status = match ready.map(|c| s(c, "/status")) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_address(node: &Value, ty: &str) -> String {
    let found = arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == ty);
    or_none(found.map(|a| s(a, "/address").to_owned()).unwrap_or_default())
}

fn node_roles(node: &Value) -> String {
    let roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    or_none(roles.join(","))
}

/// Columns and cells for one kind (a view kind prints like the kind whose storage it shares).
fn layout(kind: &Kind) -> (&'static [Column], Cells) {
    let resource = match &kind.storage {
        Some(view) => (view.group, view.plural),
        None => (kind.group, kind.plural),
    };
    match resource {
        ("", "pods") => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
            |o| {
                let statuses = arr(o, "/status/containerStatuses");
                let total = arr(o, "/spec/containers").len();
                let ready = statuses
                    .iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count();
                let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
                let gates = arr(o, "/spec/readinessGates");
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts.to_string()),
                    json!(age(o)),
                    json!(or_none(s(o, "/status/podIP").into())),
                    json!(or_none(s(o, "/spec/nodeName").into())),
                    json!(or_none(s(o, "/status/nominatedNodeName").into())),
                    json!(if gates.is_empty() {
                        "<none>".to_owned()
                    } else {
                        format!("0/{}", gates.len())
                    }),
                ]
            },
        ),
        ("", "services") => (
            &[
                ("Name", "string", 0),
                ("Type", "string", 0),
                ("Cluster-IP", "string", 0),
                ("External-IP", "string", 0),
                ("Port(s)", "string", 0),
                ("Age", "string", 0),
                ("Selector", "string", 1),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/type")),
                    json!(or_none(s(o, "/spec/clusterIP").into())),
                    json!(service_external(o)),
                    json!(service_ports(o)),
                    json!(age(o)),
                    json!(map_selector(o, "/spec/selector")),
                ]
            },
        ),
        ("", "nodes") => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Roles", "string", 0),
                ("Age", "string", 0),
                ("Version", "string", 0),
                ("Internal-IP", "string", 1),
                ("External-IP", "string", 1),
                ("OS-Image", "string", 1),
                ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(node_status(o)),
                    json!(node_roles(o)),
                    json!(age(o)),
                    json!(s(o, "/status/nodeInfo/kubeletVersion")),
                    json!(node_address(o, "InternalIP")),
                    json!(node_address(o, "ExternalIP")),
                    json!(or_none(s(o, "/status/nodeInfo/osImage").into())),
                    json!(or_none(s(o, "/status/nodeInfo/kernelVersion").into())),
                    json!(or_none(s(o, "/status/nodeInfo/containerRuntimeVersion").into())),
                ]
            },
        ),
        ("apps", "deployments") => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (names, images) = containers(o, "/spec/template/spec/containers");
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        n(o, "/status/readyReplicas"),
                        n(o, "/spec/replicas")
                    )),
                    json!(n(o, "/status/updatedReplicas")),
                    json!(n(o, "/status/availableReplicas")),
                    json!(age(o)),
                    json!(names),
                    json!(images),
                    json!(label_selector(o, "/spec/selector")),
                ]
            },
        ),
        ("apps", "replicasets") => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (names, images) = containers(o, "/spec/template/spec/containers");
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(n(o, "/spec/replicas")),
                    json!(n(o, "/status/replicas")),
                    json!(n(o, "/status/readyReplicas")),
                    json!(age(o)),
                    json!(names),
                    json!(images),
                    json!(label_selector(o, "/spec/selector")),
                ]
            },
        ),
        ("apps", "daemonsets") => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Node Selector", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let (names, images) = containers(o, "/spec/template/spec/containers");
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(n(o, "/status/desiredNumberScheduled")),
                    json!(n(o, "/status/currentNumberScheduled")),
                    json!(n(o, "/status/numberReady")),
                    json!(n(o, "/status/updatedNumberScheduled")),
                    json!(n(o, "/status/numberAvailable")),
                    json!(map_selector(o, "/spec/template/spec/nodeSelector")),
                    json!(age(o)),
                    json!(names),
                    json!(images),
                    json!(label_selector(o, "/spec/selector")),
                ]
            },
        ),
        ("", "namespaces") => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(age(o)),
                ]
            },
        ),
        ("", "configmaps") => (
            &[("Name", "string", 0), ("Data", "string", 0), ("Age", "string", 0)],
            |o| {
                let count = ["/data", "/binaryData"]
                    .iter()
                    .map(|p| {
                        o.pointer(p)
                            .and_then(Value::as_object)
                            .map_or(0, serde_json::Map::len)
                    })
                    .sum::<usize>();
                vec![json!(s(o, "/metadata/name")), json!(count), json!(age(o))]
            },
        ),
        ("", "secrets") => (
            &[
                ("Name", "string", 0),
                ("Type", "string", 0),
                ("Data", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let count = o
                    .pointer("/data")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len);
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/type")),
                    json!(count),
                    json!(age(o)),
                ]
            },
        ),
        ("", "serviceaccounts") => (
            &[
                ("Name", "string", 0),
                ("Secrets", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(arr(o, "/secrets").len()),
                    json!(age(o)),
                ]
            },
        ),
        ("", "endpoints") => (
            &[
                ("Name", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let mut eps = Vec::new();
                for subset in arr(o, "/subsets") {
                    for addr in arr(subset, "/addresses") {
                        for port in arr(subset, "/ports") {
                            eps.push(format!("{}:{}", s(addr, "/ip"), n(port, "/port")));
                        }
                    }
                }
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(or_none(eps.join(","))),
                    json!(age(o)),
                ]
            },
        ),
        ("discovery.k8s.io", "endpointslices") => (
            &[
                ("Name", "string", 0),
                ("AddressType", "string", 0),
                ("Ports", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let ports: Vec<String> = arr(o, "/ports")
                    .iter()
                    .map(|p| n(p, "/port").to_string())
                    .collect();
                let addrs: Vec<&str> = arr(o, "/endpoints")
                    .iter()
                    .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
                    .collect();
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/addressType")),
                    json!(or_none(ports.join(","))),
                    json!(or_none(addrs.join(","))),
                    json!(age(o)),
                ]
            },
        ),
        ("coordination.k8s.io", "leases") => (
            &[
                ("Name", "string", 0),
                ("Holder", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/holderIdentity")),
                    json!(age(o)),
                ]
            },
        ),
        ("", "events") => (
            &[
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Message", "string", 0),
            ],
            |o| {
                let object = format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_lowercase(),
                    s(o, "/involvedObject/name")
                );
                let seen = [
                    s(o, "/lastTimestamp"),
                    s(o, "/eventTime"),
                    s(o, "/metadata/creationTimestamp"),
                ]
                .into_iter()
                .find_map(|t| t.parse::<Timestamp>().ok())
                .map_or("<unknown>".into(), |t| {
                    human_duration(crate::registry::meta::unix_now() - t.as_second())
                });
                vec![
                    json!(seen),
                    json!(s(o, "/type")),
                    json!(s(o, "/reason")),
                    json!(object),
                    json!(s(o, "/message")),
                ]
            },
        ),
        _ => (&[("Name", "string", 0), ("Created At", "date", 0)], |o| {
            vec![
                json!(s(o, "/metadata/name")),
                json!(s(o, "/metadata/creationTimestamp")),
            ]
        }),
    }
}

/// Renders objects as a `meta.k8s.io/v1` Table; `includeObject` picks what each row carries.
pub fn render(
    kind: &Kind,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    query: &Query,
) -> Value {
    let (columns, cells) = layout(kind);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|(name, ty, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let include = query.get("includeObject").unwrap_or("PartialObjectMetadata");
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
            };
            let cells = if kind.is_view() {
                cells(&kind.to_storage(o.clone()))
            } else {
                cells(o)
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86400), "400d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn service_row_shows_ip_ports_and_wide_selector() {
        let svc = find("", "v1", "services").unwrap();
        let o = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let t = render(svc, &[o], "7", None, &Query::default());
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.96.0.10");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        assert_eq!(t["columnDefinitions"][6]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn pod_and_deployment_rows() {
        let pod = find("", "v1", "pods").unwrap();
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let cells = render(pod, &[p], "1", None, &Query::default())["rows"][0]["cells"].clone();
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[5], "10.244.1.5");
        assert_eq!(cells[6], "n1");
        let deploy = find("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}, "status": {"readyReplicas": 2}});
        let cells = render(deploy, &[d], "1", None, &Query::default())["rows"][0]["cells"].clone();
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[5], "web");
        assert_eq!(cells[6], "nginx:1.27");
        assert_eq!(cells[7], "app=web");
    }
}
