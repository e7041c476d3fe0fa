//! Pod spec rules (also inside templates) and which pod fields an update may change.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Toleration};
use serde_json::Value;

use super::container;
use super::field::FieldError;
use super::meta;
use super::names::{dns1123_label, dns1123_subdomain, quote};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// The fields a pod update may change, as kube-apiserver lists them.
const UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Volume names: DNS-1123 labels, unique, at most one source each. Returns the names for the mounts' check.
fn volumes(spec: &Value, path: &str, errors: &mut Vec<FieldError>) -> HashSet<String> {
    let mut names = HashSet::new();
    let list = spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, volume) in list.iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        let name = volume.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        } else if let Some(why) = dns1123_label(name) {
            errors.push(FieldError::invalid(format!("{at}.name"), quote(name), why));
        } else if !names.insert(name.to_owned()) {
            errors.push(FieldError::duplicate(format!("{at}.name"), quote(name)));
        }
        // A volume without a source is an emptyDir after kube's defaulting; more than one is an error.
        let sources = volume
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| k.as_str() != "name" && !v.is_null());
        for (source, _) in sources.skip(1) {
            errors.push(FieldError::forbidden(
                format!("{at}.{source}"),
                "may not specify more than 1 volume type",
            ));
        }
    }
    names
}

fn tolerations(list: &[Toleration], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        if !key.is_empty() {
            errors.extend(meta::label_key(key, &format!("{at}.key")));
        }
        let operator = t.operator.as_deref().unwrap_or("Equal");
        if key.is_empty() && operator != "Exists" {
            errors.push(FieldError::invalid(
                format!("{at}.operator"),
                quote(operator),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        match operator {
            "Exists" if !t.value.as_deref().unwrap_or_default().is_empty() => {
                errors.push(FieldError::invalid(
                    format!("{at}.operator"),
                    quote(t.value.as_deref().unwrap_or_default()),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
            o if !TOLERATION_OPERATORS.contains(&o) => errors.push(FieldError::not_supported(
                format!("{at}.operator"),
                quote(o),
                TOLERATION_OPERATORS,
            )),
            _ => {}
        }
        let effect = t.effect.as_deref().unwrap_or_default();
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errors.push(FieldError::not_supported(
                format!("{at}.effect"),
                quote(effect),
                TAINT_EFFECTS,
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errors.push(FieldError::invalid(
                format!("{at}.effect"),
                quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
    }
    errors
}

/// `ValidatePodSpec` for the spec at `path` (`spec` or `spec.template.spec`); `raw` is the same spec as JSON.
pub fn spec(spec: &PodSpec, raw: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let volumes = volumes(raw, path, &mut errors);
    errors.extend(container::all(
        &spec.containers,
        spec.init_containers.as_deref().unwrap_or_default(),
        &volumes,
        path,
    ));
    match spec.restart_policy.as_deref() {
        None => {}
        Some("") => errors.push(FieldError::required(format!("{path}.restartPolicy"), "")),
        Some(p) if !RESTART_POLICIES.contains(&p) => errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            quote(p),
            RESTART_POLICIES,
        )),
        Some(_) => {}
    }
    match spec.dns_policy.as_deref() {
        Some(p) if !DNS_POLICIES.contains(&p) => errors.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            quote(p),
            DNS_POLICIES,
        )),
        Some("None") if spec.dns_config.is_none() => errors.push(FieldError::required(
            format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        )),
        _ => {}
    }
    if let Some(grace) = spec.termination_grace_period_seconds.filter(|g| *g < 0) {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(deadline) = spec
        .active_deadline_seconds
        .filter(|d| !(1..=i64::from(i32::MAX)).contains(d))
    {
        errors.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            deadline,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    errors.extend(meta::labels(
        spec.node_selector.as_ref(),
        &format!("{path}.nodeSelector"),
    ));
    for (value, field) in [
        (&spec.service_account_name, "serviceAccountName"),
        (&spec.node_name, "nodeName"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
            && let Some(why) = dns1123_subdomain(v)
        {
            errors.push(FieldError::invalid(format!("{path}.{field}"), quote(v), why));
        }
    }
    for (value, field) in [(&spec.hostname, "hostname"), (&spec.subdomain, "subdomain")] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
            && let Some(why) = dns1123_label(v)
        {
            errors.push(FieldError::invalid(format!("{path}.{field}"), quote(v), why));
        }
    }
    errors.extend(tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        &format!("{path}.tolerations"),
    ));
    if spec.host_network == Some(true) {
        errors.extend(host_network_ports(spec, path));
    }
    errors
}

/// With `hostNetwork`, a port's hostPort (when given) must equal its containerPort.
fn host_network_ports(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                if let Some(host) = port.host_port.filter(|h| *h != 0 && *h != port.container_port) {
                    errors.push(FieldError::invalid(
                        format!("{path}.{list}[{i}].ports[{j}].hostPort"),
                        host,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errors
}

/// `ValidatePodTemplateSpec` at `path` (`spec.template`): the template's labels and annotations and its spec.
pub fn template(template: Option<&PodTemplateSpec>, raw: Option<&Value>, path: &str) -> Vec<FieldError> {
    let Some(template) = template else {
        return vec![FieldError::required(path, "")];
    };
    let mut errors = Vec::new();
    if let Some(m) = &template.metadata {
        errors.extend(meta::labels(
            m.labels.as_ref(),
            &format!("{path}.metadata.labels"),
        ));
        errors.extend(meta::annotations(
            m.annotations.as_ref(),
            &format!("{path}.metadata.annotations"),
        ));
    }
    match (&template.spec, raw.and_then(|t| t.get("spec"))) {
        (Some(s), Some(raw_spec)) => errors.extend(spec(s, raw_spec, &format!("{path}.spec"))),
        _ => errors.push(FieldError::required(format!("{path}.spec.containers"), "")),
    }
    errors
}

/// A Pod on create (and the new Pod of an update whose spec changed).
pub fn pod(object: &Value) -> Vec<FieldError> {
    let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
        return Vec::new();
    };
    let (Some(s), Some(raw)) = (&pod.spec, object.get("spec")) else {
        return vec![FieldError::required("spec.containers", "")];
    };
    let mut errors = spec(s, raw, "spec");
    for (list, name) in [
        (&s.containers, "containers"),
        (
            s.init_containers.as_ref().unwrap_or(&Vec::new()),
            "initContainers",
        ),
    ] {
        for (i, c) in list.iter().enumerate() {
            let image = c.image.as_deref().unwrap_or_default();
            if image.trim() != image {
                errors.push(FieldError::invalid(
                    format!("spec.{name}[{i}].image"),
                    quote(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errors
}

/// IP lists of a pod status (`podIPs`, `hostIPs`): valid addresses, at most one per family. The single-address
/// fields are the first list entries in kube's internal form, so they are reported as `[0]`.
fn status_ips(object: &Value, single: &str, list: &str, errors: &mut Vec<FieldError>) {
    let mut ips: Vec<String> = object
        .pointer(&format!("/status/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("ip").and_then(Value::as_str).map(str::to_owned))
        .collect();
    if ips.is_empty()
        && let Some(ip) = object
            .pointer(&format!("/status/{single}"))
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
    {
        ips.push(ip.to_owned());
    }
    let mut families = [0, 0];
    for (i, ip) in ips.iter().enumerate() {
        match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => families[usize::from(addr.is_ipv6())] += 1,
            Err(_) => errors.push(FieldError::invalid(
                format!("status.{list}[{i}]"),
                quote(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
        }
    }
    if families.iter().any(|n| *n > 1) {
        errors.push(FieldError::invalid(
            format!("status.{list}"),
            meta::json(&ips),
            "may specify no more than one IP for each IP family",
        ));
    }
}

/// `ValidatePodStatusUpdate`'s address rules: pod and host IPs, the nominated node's name.
pub fn status(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    status_ips(object, "podIP", "podIPs", &mut errors);
    status_ips(object, "hostIP", "hostIPs", &mut errors);
    if let Some(node) = object
        .pointer("/status/nominatedNodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        && let Some(why) = dns1123_subdomain(node)
    {
        errors.push(FieldError::invalid("status.nominatedNodeName", quote(node), why));
    }
    errors
}

fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
}

/// `ValidatePodUpdate`: besides validating the new spec, only images, activeDeadlineSeconds (set or lowered),
/// added tolerations and the scheduler's nodeName binding may change.
pub fn update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errors = pod(new);
    let (Ok(new_pod), Ok(old_pod)) = (
        serde_json::from_value::<Pod>(new.clone()),
        serde_json::from_value::<Pod>(old.clone()),
    ) else {
        return errors;
    };
    let (Some(new_spec), Some(old_spec)) = (new_pod.spec, old_pod.spec) else {
        return errors;
    };
    let init_len = |s: &PodSpec| s.init_containers.as_ref().map_or(0, Vec::len);
    if new_spec.containers.len() != old_spec.containers.len() || init_len(&new_spec) != init_len(&old_spec) {
        errors.push(FieldError::forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return errors;
    }
    match (new_spec.active_deadline_seconds, old_spec.active_deadline_seconds) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            n,
            "must be between 0 and 2147483647, inclusive",
        )),
        (Some(n), Some(o)) if n > o => errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let new_tolerations = new_spec.tolerations.clone().unwrap_or_default();
    for old_t in old_spec.tolerations.iter().flatten() {
        if !new_tolerations.iter().any(|t| same_toleration(t, old_t)) {
            errors.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // Compare with the mutable fields taken from the old spec.
    let mut munged = new_spec.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old_spec.containers) {
        c.image.clone_from(&o.image);
    }
    if let (Some(init), Some(old_init)) = (munged.init_containers.as_mut(), old_spec.init_containers.as_ref())
    {
        for (c, o) in init.iter_mut().zip(old_init) {
            c.image.clone_from(&o.image);
        }
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged.tolerations.clone_from(&old_spec.tolerations);
    munged.scheduling_gates.clone_from(&old_spec.scheduling_gates);
    if old_spec.termination_grace_period_seconds.is_some_and(|g| g < 0)
        && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    // The binding subresource assigns the node once.
    if old_spec.node_name.as_deref().unwrap_or_default().is_empty() {
        munged.node_name.clone_from(&old_spec.node_name);
    }
    if munged != old_spec {
        errors.push(FieldError::forbidden(
            "spec",
            format!("{UPDATABLE}\n{}", changed_fields(&munged, &old_spec)),
        ));
    }
    errors
}

/// A short list of the top-level spec fields that differ (kube prints a full diff here).
fn changed_fields(new: &PodSpec, old: &PodSpec) -> String {
    let (Ok(Value::Object(n)), Ok(Value::Object(o))) = (serde_json::to_value(new), serde_json::to_value(old))
    else {
        return String::new();
    };
    let mut keys: Vec<&String> = n.keys().chain(o.keys()).collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| n.get(*k) != o.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect();
    format!("changed: {}", changed.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::validation::shown;

    fn pod_with(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_plain_pod_is_valid() {
        let p = pod_with(json!({
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}, {"name": "plain"}],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "web", "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}],
                "env": [{"name": "MODE", "value": "x"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 80}}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        }));
        assert_eq!(shown(&pod(&p)), Vec::<String>::new());
    }

    #[test]
    fn containers_names_and_images() {
        assert_eq!(
            shown(&pod(&pod_with(json!({"containers": []})))),
            ["spec.containers: Required value"]
        );
        let p = pod_with(json!({
            "initContainers": [{"name": "web", "image": "a"}],
            "containers": [{"name": "web", "image": "a"}, {"name": "Bad_Name", "image": ""}, {"name": "ok", "image": " a"}],
        }));
        let errors = shown(&pod(&p));
        assert_eq!(errors[0], "spec.containers[0].name: Duplicate value: \"web\"");
        assert!(
            errors[1].starts_with(
                "spec.containers[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
            )
        );
        assert_eq!(errors[2], "spec.containers[1].image: Required value");
        assert_eq!(
            errors[3],
            "spec.containers[2].image: Invalid value: \" a\": must not have leading or trailing whitespace"
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn ports_and_protocols() {
        let p = pod_with(json!({"containers": [{"name": "c", "image": "i", "ports": [
            {"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP", "name": "web"},
            {"containerPort": 81, "name": "web"}, {"containerPort": 82, "hostPort": -1},
        ]}]}));
        assert_eq!(
            shown(&pod(&p)),
            [
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[2].name: Duplicate value: \"web\"",
                "spec.containers[0].ports[3].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
            ]
        );
        let p =
            pod_with(json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]}));
        assert_eq!(
            shown(&pod(&p)),
            ["spec.containers[0].ports[0].containerPort: Required value"]
        );
    }

    #[test]
    fn env_volumes_and_mounts() {
        let p = pod_with(json!({
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}, {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}}],
            "containers": [{"name": "c", "image": "i",
                "env": [{"name": "1BAD"}, {"name": "X", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "missing", "mountPath": "/a"}, {"name": "v", "mountPath": "/a"}]}],
        }));
        let errors = shown(&pod(&p));
        assert_eq!(errors[0], "spec.volumes[1].name: Duplicate value: \"v\"");
        assert_eq!(
            errors[1],
            "spec.volumes[2].hostPath: Forbidden: may not specify more than 1 volume type"
        );
        assert!(errors[2].starts_with(
            "spec.containers[0].env[0].name: Invalid value: \"1BAD\": a valid environment variable name"
        ));
        assert_eq!(
            errors[3],
            "spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"
        );
        assert_eq!(
            errors[4],
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\""
        );
        assert_eq!(
            errors[5],
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique"
        );
        assert_eq!(errors.len(), 6, "{errors:?}");
    }

    #[test]
    fn policies_probes_and_grace() {
        let p = pod_with(json!({
            "restartPolicy": "Sometimes", "terminationGracePeriodSeconds": -1, "dnsPolicy": "Google",
            "containers": [{"name": "c", "image": "i",
                "readinessProbe": {"periodSeconds": -1},
                "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}, "successThreshold": 2},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}],
        }));
        assert_eq!(
            shown(&pod(&p)),
            [
                "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].readinessProbe: Required value: must specify a handler type",
                "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
                "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn templates_need_a_spec_and_valid_labels() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"a b": "c"}}})).unwrap();
        let errors = shown(&template(Some(&t), Some(&json!({})), "spec.template"));
        assert!(errors[0].starts_with("spec.template.metadata.labels: Invalid value: \"a b\""));
        assert_eq!(errors[1], "spec.template.spec.containers: Required value");
        assert_eq!(
            shown(&template(None, None, "spec.template")),
            ["spec.template: Required value"]
        );
    }

    #[test]
    fn updates_change_only_what_kube_allows() {
        let old = pod_with(
            json!({"activeDeadlineSeconds": 100, "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "nginx:1"}]}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        new["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
        new["spec"]["nodeName"] = json!("node-1");
        assert_eq!(shown(&update(&new, &old)), Vec::<String>::new());

        let mut bad = new.clone();
        bad["spec"]["terminationGracePeriodSeconds"] = json!(10);
        bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        let errors = update(&bad, &old);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec");
        assert!(errors[0].detail.starts_with(
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`"
        ));
        assert!(
            errors[0]
                .detail
                .ends_with("changed: spec.containers, spec.terminationGracePeriodSeconds"),
            "{}",
            errors[0].detail
        );

        let mut later = new.clone();
        later["spec"]["activeDeadlineSeconds"] = json!(500);
        later["spec"]["tolerations"] = json!([]);
        assert_eq!(
            shown(&update(&later, &old)),
            [
                "spec.activeDeadlineSeconds: Invalid value: 500: must be less than or equal to previous value",
                "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds",
            ]
        );
        let mut more = old.clone();
        more["spec"]["containers"] = json!([{"name": "c", "image": "x"}, {"name": "d", "image": "x"}]);
        assert_eq!(
            shown(&update(&more, &old)),
            ["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
        let mut moved = new.clone();
        moved["spec"]["nodeName"] = json!("node-2");
        assert!(update(&moved, &new)[0].detail.ends_with("changed: spec.nodeName"));
    }

    #[test]
    fn status_addresses_and_host_network_ports() {
        let ok = json!({"status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}], "hostIP": "10.0.0.1"}});
        assert!(status(&ok).is_empty());
        let bad = json!({"status": {"podIPs": [{"ip": "10.244.1.5"}, {"ip": "10.244.1.6"}, {"ip": "x"}], "nominatedNodeName": "N_1"}});
        let errors = shown(&status(&bad));
        assert_eq!(
            errors[..2],
            [
                "status.podIPs[2]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "status.podIPs: Invalid value: [\"10.244.1.5\",\"10.244.1.6\",\"x\"]: may specify no more than one IP for each IP family",
            ]
        );
        assert!(errors[2].starts_with("status.nominatedNodeName: Invalid value: \"N_1\""));
        assert_eq!(
            shown(&status(&json!({"status": {"hostIP": "300.1.1.1"}}))),
            [
                "status.hostIPs[0]: Invalid value: \"300.1.1.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ]
        );
        let p = pod_with(
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 81}, {"containerPort": 82}]}]}),
        );
        assert_eq!(
            shown(&pod(&p)),
            [
                "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true"
            ]
        );
    }
}
