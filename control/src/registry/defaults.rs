//! Defaults kube-apiserver fills into objects other than Services (which have their own strategy).

use serde_json::{Value, json};

use super::kinds::Kind;

fn set_if_missing(object: &mut Value, pointer: &str, value: Value) {
    if object.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut parts: Vec<&str> = pointer.split('/').skip(1).collect();
    let Some(last) = parts.pop() else { return };
    let mut cursor = object;
    for part in parts {
        if !cursor.get(part).is_some_and(Value::is_object) {
            cursor[part] = json!({});
        }
        cursor = &mut cursor[part];
    }
    cursor[last] = value;
}

fn default_pod_spec(spec: &mut Value) {
    set_if_missing(spec, "/restartPolicy", json!("Always"));
    set_if_missing(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_if_missing(spec, "/schedulerName", json!("default-scheduler"));
    set_if_missing(spec, "/terminationGracePeriodSeconds", json!(30));
    set_if_missing(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                let latest = c
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| !i.contains(':') || i.ends_with(":latest"));
                set_if_missing(
                    c,
                    "/imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_if_missing(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set_if_missing(c, "/terminationMessagePolicy", json!("File"));
                set_if_missing(c, "/resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_if_missing(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Fills defaults for `kind` into `object` (idempotent).
pub fn apply(kind: &Kind, object: &mut Value) {
    match (kind.group, kind.plural) {
        ("", "namespaces") => {
            set_if_missing(object, "/spec/finalizers", json!(["kubernetes"]));
            set_if_missing(object, "/status/phase", json!("Active"));
        }
        ("", "pods") => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
            }
            set_if_missing(object, "/status/phase", json!("Pending"));
            set_if_missing(object, "/status/qosClass", json!("BestEffort"));
        }
        ("apps", "deployments") => {
            set_if_missing(object, "/spec/replicas", json!(1));
            set_if_missing(object, "/spec/revisionHistoryLimit", json!(10));
            set_if_missing(object, "/spec/progressDeadlineSeconds", json!(600));
            set_if_missing(
                object,
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            if let Some(spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        ("apps", "replicasets" | "daemonsets") => {
            if kind.plural == "replicasets" {
                set_if_missing(object, "/spec/replicas", json!(1));
            } else {
                set_if_missing(object, "/spec/revisionHistoryLimit", json!(10));
                set_if_missing(
                    object,
                    "/spec/updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            if let Some(spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        ("", "secrets") => set_if_missing(object, "/type", json!("Opaque")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;

    #[test]
    fn deployment_defaults_keep_given_values() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}});
        apply(d, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(obj["spec"]["strategy"]["type"], "RollingUpdate");
        let c = &obj["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(obj["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn namespace_and_pod_status() {
        let ns = find("", "v1", "namespaces").unwrap();
        let mut obj = json!({"metadata": {"name": "x"}});
        apply(ns, &mut obj);
        assert_eq!(obj["status"]["phase"], "Active");
        let pod = find("", "v1", "pods").unwrap();
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        apply(pod, &mut p);
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }
}
