//! Container rules: names, image, ports, env, volume mounts, probes and lifecycle handlers, resources.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, GRPCAction, HTTPGetAction, Probe, SleepAction,
    TCPSocketAction, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::FieldError;
use super::names::{dns1123_label, env_var_name, port_name_errors, port_number, quote};
use super::resources;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];

/// Validates `containers` and `initContainers` of one pod spec at `path` (`spec`); names are unique across both.
pub fn all(
    containers: &[Container],
    init: &[Container],
    volumes: &HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    for (i, c) in init.iter().enumerate() {
        let at = format!("{path}.initContainers[{i}]");
        errors.extend(common(c, volumes, &mut names, &at));
        if c.restart_policy.as_deref().is_some_and(|p| p != "Always") {
            errors.push(FieldError::not_supported(
                format!("{at}.restartPolicy"),
                quote(c.restart_policy.as_deref().unwrap_or_default()),
                &["Always"],
            ));
        }
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        for (probe, name) in [
            (&c.liveness_probe, "livenessProbe"),
            (&c.readiness_probe, "readinessProbe"),
            (&c.startup_probe, "startupProbe"),
        ] {
            if probe.is_some() && !sidecar {
                errors.push(FieldError::forbidden(
                    format!("{at}.{name}"),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    }
    if containers.is_empty() {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        errors.extend(common(c, volumes, &mut names, &at));
        if c.restart_policy.is_some() {
            errors.push(FieldError::forbidden(
                format!("{at}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errors
}

/// `validateContainerCommon` plus the duplicate-name check of `validateContainers`.
fn common(
    c: &Container,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    at: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name_at = format!("{at}.name");
    if c.name.is_empty() {
        errors.push(FieldError::required(&name_at, ""));
    } else if let Some(why) = dns1123_label(&c.name) {
        errors.push(FieldError::invalid(&name_at, quote(&c.name), why));
    } else if !names.insert(c.name.clone()) {
        errors.push(FieldError::duplicate(&name_at, quote(&c.name)));
    }
    if c.image.as_deref().unwrap_or_default().is_empty() {
        errors.push(FieldError::required(format!("{at}.image"), ""));
    }
    if let Some(policy) = &c.image_pull_policy
        && !PULL_POLICIES.contains(&policy.as_str())
    {
        errors.push(FieldError::not_supported(
            format!("{at}.imagePullPolicy"),
            quote(policy),
            PULL_POLICIES,
        ));
    }
    if let Some(policy) = &c.termination_message_policy
        && !MESSAGE_POLICIES.contains(&policy.as_str())
    {
        errors.push(FieldError::not_supported(
            format!("{at}.terminationMessagePolicy"),
            quote(policy),
            MESSAGE_POLICIES,
        ));
    }
    errors.extend(ports(
        c.ports.as_deref().unwrap_or_default(),
        &format!("{at}.ports"),
    ));
    errors.extend(env(c.env.as_deref().unwrap_or_default(), &format!("{at}.env")));
    errors.extend(volume_mounts(
        c.volume_mounts.as_deref().unwrap_or_default(),
        volumes,
        &format!("{at}.volumeMounts"),
    ));
    errors.extend(resources::requirements(
        c.resources.as_ref(),
        &format!("{at}.resources"),
    ));
    for (probe, name, single_success) in [
        (&c.liveness_probe, "livenessProbe", true),
        (&c.readiness_probe, "readinessProbe", false),
        (&c.startup_probe, "startupProbe", true),
    ] {
        if let Some(p) = probe {
            let probe_at = format!("{at}.{name}");
            errors.extend(self::probe(p, &probe_at));
            if single_success && p.success_threshold.is_some_and(|s| s != 1) {
                errors.push(FieldError::invalid(
                    format!("{probe_at}.successThreshold"),
                    p.success_threshold.unwrap_or_default(),
                    "must be 1",
                ));
            }
        }
    }
    if let Some(lifecycle) = &c.lifecycle {
        for (handler, name) in [
            (&lifecycle.post_start, "postStart"),
            (&lifecycle.pre_stop, "preStop"),
        ] {
            if let Some(h) = handler {
                let handlers = Handlers {
                    exec: h.exec.as_ref(),
                    http_get: h.http_get.as_ref(),
                    tcp_socket: h.tcp_socket.as_ref(),
                    grpc: None,
                    sleep: h.sleep.as_ref(),
                };
                errors.extend(handlers.validate(&format!("{at}.lifecycle.{name}")));
            }
        }
    }
    errors
}

/// `validateContainerPorts`: names are unique IANA service names, numbers in range, known protocols.
pub fn ports(ports: &[ContainerPort], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let why = port_name_errors(name);
            if !why.is_empty() {
                for w in why {
                    errors.push(FieldError::invalid(format!("{at}.name"), quote(name), w));
                }
            } else if !names.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(format!("{at}.name"), quote(name)));
            }
        }
        if port.container_port == 0 {
            errors.push(FieldError::required(format!("{at}.containerPort"), ""));
        } else if let Some(why) = port_number(port.container_port.into()) {
            errors.push(FieldError::invalid(
                format!("{at}.containerPort"),
                port.container_port,
                why,
            ));
        }
        if let Some(host) = port.host_port.filter(|p| *p != 0)
            && let Some(why) = port_number(host.into())
        {
            errors.push(FieldError::invalid(format!("{at}.hostPort"), host, why));
        }
        match port.protocol.as_deref() {
            Some("") => errors.push(FieldError::required(format!("{at}.protocol"), "")),
            Some(p) if !PROTOCOLS.contains(&p) => errors.push(FieldError::not_supported(
                format!("{at}.protocol"),
                quote(p),
                PROTOCOLS,
            )),
            _ => {}
        }
    }
    errors
}

/// `ValidateEnv`: names, and at most one `valueFrom` source that excludes `value`.
pub fn env(vars: &[EnvVar], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if var.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        } else {
            for why in env_var_name(&var.name) {
                errors.push(FieldError::invalid(format!("{at}.name"), quote(&var.name), why));
            }
        }
        let Some(from) = &var.value_from else { continue };
        let sources = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.file_key_ref.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count();
        let from_at = format!("{at}.valueFrom");
        match sources {
            0 => errors.push(FieldError::invalid(
                &from_at,
                "\"\"",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )),
            1 => {}
            _ => errors.push(FieldError::invalid(
                &from_at,
                "\"\"",
                "may not have more than one field specified at a time",
            )),
        }
        if sources > 0 && var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errors.push(FieldError::invalid(
                &from_at,
                "\"\"",
                "may not be specified when `value` is not empty",
            ));
        }
    }
    errors
}

/// `validateVolumeMounts`: each mount names a volume of the pod, and mount paths are unique.
pub fn volume_mounts(mounts: &[VolumeMount], volumes: &HashSet<String>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut paths = HashSet::new();
    for (i, mount) in mounts.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if mount.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        }
        if !volumes.contains(&mount.name) {
            errors.push(FieldError::not_found(format!("{at}.name"), quote(&mount.name)));
        }
        if mount.mount_path.is_empty() {
            errors.push(FieldError::required(format!("{at}.mountPath"), ""));
        }
        if !paths.insert(mount.mount_path.clone()) {
            errors.push(FieldError::invalid(
                format!("{at}.mountPath"),
                quote(&mount.mount_path),
                "must be unique",
            ));
        }
    }
    errors
}

/// The actions of a probe or lifecycle handler; exactly one must be set.
struct Handlers<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: Option<&'a SleepAction>,
}

impl Handlers<'_> {
    /// `validateHandler`.
    fn validate(&self, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let set = [
            ("exec", self.exec.is_some()),
            ("httpGet", self.http_get.is_some()),
            ("tcpSocket", self.tcp_socket.is_some()),
            ("grpc", self.grpc.is_some()),
            ("sleep", self.sleep.is_some()),
        ];
        let mut count = 0;
        for (name, present) in set {
            if !present {
                continue;
            }
            if count > 0 {
                errors.push(FieldError::forbidden(
                    format!("{path}.{name}"),
                    "may not specify more than 1 handler type",
                ));
            }
            count += 1;
        }
        if count == 0 {
            errors.push(FieldError::required(path, "must specify a handler type"));
        }
        if let Some(exec) = self.exec
            && exec.command.as_ref().is_none_or(Vec::is_empty)
        {
            errors.push(FieldError::required(format!("{path}.exec.command"), ""));
        }
        if let Some(http) = self.http_get {
            if http.path.as_deref().unwrap_or_default().is_empty() {
                errors.push(FieldError::required(format!("{path}.httpGet.path"), ""));
            }
            errors.extend(port_num_or_name(&http.port, &format!("{path}.httpGet.port")));
            if let Some(scheme) = &http.scheme
                && !["HTTP", "HTTPS"].contains(&scheme.as_str())
            {
                errors.push(FieldError::not_supported(
                    format!("{path}.httpGet.scheme"),
                    quote(scheme),
                    &["HTTP", "HTTPS"],
                ));
            }
        }
        if let Some(tcp) = self.tcp_socket {
            errors.extend(port_num_or_name(&tcp.port, &format!("{path}.tcpSocket.port")));
        }
        if let Some(grpc) = self.grpc
            && let Some(why) = port_number(grpc.port.into())
        {
            errors.push(FieldError::invalid(format!("{path}.grpc.port"), grpc.port, why));
        }
        if let Some(sleep) = self.sleep
            && sleep.seconds < 0
        {
            errors.push(FieldError::invalid(
                format!("{path}.sleep.seconds"),
                sleep.seconds,
                "must be non-negative",
            ));
        }
        errors
    }
}

/// `ValidatePortNumOrName`.
fn port_num_or_name(port: &IntOrString, path: &str) -> Vec<FieldError> {
    match port {
        IntOrString::Int(n) => port_number((*n).into())
            .map(|why| FieldError::invalid(path, n, why))
            .into_iter()
            .collect(),
        IntOrString::String(s) => {
            if s.is_empty() {
                return vec![FieldError::required(path, "")];
            }
            port_name_errors(s)
                .into_iter()
                .map(|why| FieldError::invalid(path, quote(s), why))
                .collect()
        }
    }
}

/// `validateProbe`: one handler, non-negative timings.
pub fn probe(probe: &Probe, path: &str) -> Vec<FieldError> {
    let handlers = Handlers {
        exec: probe.exec.as_ref(),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref(),
        grpc: probe.grpc.as_ref(),
        sleep: None,
    };
    let mut errors = handlers.validate(path);
    for (value, name) in [
        (probe.initial_delay_seconds, "initialDelaySeconds"),
        (probe.timeout_seconds, "timeoutSeconds"),
        (probe.period_seconds, "periodSeconds"),
        (probe.success_threshold, "successThreshold"),
        (probe.failure_threshold, "failureThreshold"),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errors.push(FieldError::invalid(
                format!("{path}.{name}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(grace) = probe.termination_grace_period_seconds.filter(|g| *g <= 0) {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
    errors
}
