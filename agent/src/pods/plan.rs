//! `plan(pod) -> RuntimePlan`: everything the runtime needs to run a pod, decided without any I/O.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, EnvVar, Pod, Probe, ProjectedVolumeSource},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Deserialize, Serialize};

use super::{
    env::{expand, resolve_env},
    image::{ImageKind, classify},
    probe::{ProbeAction, ProbeSpec},
    quantity,
};

/// Default PATH for containers that do not set one (the usual container image default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Facts about the pod's placement that the spec does not contain.
#[derive(Debug, Clone)]
pub struct PodContext {
    pub node_name: String,
    pub pod_ip: Option<Ipv4Addr>,
    /// This agent's binary (runs built-in agnhost and pause).
    pub agent_exe: PathBuf,
    /// `automountServiceAccountToken` of the pod's ServiceAccount (`None`: unset or the account was not read).
    pub service_account_automount: Option<bool>,
}

/// When containers are restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

/// A pod volume the runtime provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// A directory under the pod's state directory.
    EmptyDir,
    /// A host path.
    HostPath(PathBuf),
    /// The projected ServiceAccount token volume (`token`, `ca.crt`, `namespace`) written and refreshed by the agent.
    ServiceAccountToken(TokenVolume),
}

/// What the agent requests for a pod's ServiceAccount token volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenVolume {
    pub service_account: String,
    pub expiration_seconds: i64,
}

/// Where kubelet mounts the ServiceAccount token volume in every container.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name of the token volume the runtime adds (kube's admission names it `kube-api-access-<random>`).
pub const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access";
/// Lifetime kubelet requests for projected tokens (kube's admission default: 1 h plus 7 s).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    pub volume: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// How a container's process is obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exec {
    /// Run this argv (argv[0] absolute, or looked up in the container's PATH).
    Run { argv: Vec<String> },
    /// The container cannot be run: it stays waiting with this reason and message.
    Unrunnable { reason: String, message: String },
}

/// cgroup limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

/// One container, ready to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub exec: Exec,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<MountPlan>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub startup: Option<ProbeSpec>,
    pub limits: Limits,
}

/// A whole pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimePlan {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub restart_policy: RestartPolicy,
    pub grace: Duration,
    pub volumes: BTreeMap<String, VolumeSource>,
    pub init_containers: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
}

impl RuntimePlan {
    /// Every container, init containers first.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init_containers.iter().chain(&self.containers)
    }
}

/// A pod that cannot be planned at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("pod has no {0}")]
    Missing(&'static str),
    #[error("pod has no containers")]
    NoContainers,
}

fn unrunnable(reason: &str, message: String) -> Exec {
    Exec::Unrunnable {
        reason: reason.to_string(),
        message,
    }
}

/// Plans `pod` for running on `ctx.node_name`.
pub fn plan(pod: &Pod, ctx: &PodContext) -> Result<RuntimePlan, PlanError> {
    let meta = &pod.metadata;
    let name = meta.name.clone().ok_or(PlanError::Missing("metadata.name"))?;
    let uid = meta.uid.clone().ok_or(PlanError::Missing("metadata.uid"))?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let spec = pod.spec.as_ref().ok_or(PlanError::Missing("spec"))?;
    if spec.containers.is_empty() {
        return Err(PlanError::NoContainers);
    }
    let restart_policy = match spec.restart_policy.as_deref() {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    #[allow(deprecated, reason = "kube still honours the deprecated serviceAccount field")]
    let service_account = spec
        .service_account_name
        .clone()
        .or_else(|| spec.service_account.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let mut volumes = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        if v.empty_dir.is_some() {
            volumes.insert(v.name.clone(), VolumeSource::EmptyDir);
        } else if let Some(hp) = &v.host_path {
            volumes.insert(v.name.clone(), VolumeSource::HostPath(PathBuf::from(&hp.path)));
        } else if let Some(token) = v.projected.as_ref().and_then(|p| api_access(p, &service_account)) {
            volumes.insert(v.name.clone(), VolumeSource::ServiceAccountToken(token));
        } else {
            unsupported.insert(v.name.clone(), ());
        }
    }
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let fields = FieldValues {
        name: &name,
        namespace: &namespace,
        uid: &uid,
        node_name: &ctx.node_name,
        pod_ip: ctx.pod_ip,
        service_account: &service_account,
        hostname: &hostname,
    };
    // A pod that already carries the projection (as kube's admission writes it) gets no second one.
    let projected = volumes
        .values()
        .any(|v| matches!(v, VolumeSource::ServiceAccountToken(_)));
    let automount = !projected
        && automounts_token(
            spec.automount_service_account_token,
            ctx.service_account_automount,
        );
    if automount {
        volumes.insert(
            SERVICE_ACCOUNT_VOLUME.into(),
            VolumeSource::ServiceAccountToken(TokenVolume {
                service_account: service_account.clone(),
                expiration_seconds: TOKEN_EXPIRATION_SECONDS,
            }),
        );
    }
    let one = |c: &Container| {
        let mut plan = container(c, ctx, &fields, &volumes, &unsupported);
        if automount
            && !plan
                .mounts
                .iter()
                .any(|m| m.path == Path::new(SERVICE_ACCOUNT_MOUNT))
        {
            plan.mounts.push(MountPlan {
                volume: SERVICE_ACCOUNT_VOLUME.into(),
                path: PathBuf::from(SERVICE_ACCOUNT_MOUNT),
                read_only: true,
            });
        }
        plan
    };
    Ok(RuntimePlan {
        uid: uid.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        hostname: hostname.clone(),
        restart_policy,
        grace: Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64),
        init_containers: spec.init_containers.iter().flatten().map(one).collect(),
        containers: spec.containers.iter().map(one).collect(),
        volumes,
    })
}

/// Whether the pod gets the ServiceAccount token mount: the pod's `automountServiceAccountToken` wins, then the
/// ServiceAccount's; both unset means yes (kube's ServiceAccount admission).
pub fn automounts_token(pod: Option<bool>, service_account: Option<bool>) -> bool {
    pod.or(service_account).unwrap_or(true)
}

/// The token volume of a projected volume shaped like kube's `kube-api-access-*` (a token for the API server at
/// `token`, the `kube-root-ca.crt` ConfigMap's `ca.crt`, the namespace at `namespace`); `None` for any other.
fn api_access(p: &ProjectedVolumeSource, service_account: &str) -> Option<TokenVolume> {
    let mut token = None;
    for s in p.sources.iter().flatten() {
        if let Some(t) = &s.service_account_token {
            let default_audience = t.audience.as_deref().is_none_or(str::is_empty);
            if t.path != "token" || !default_audience {
                return None;
            }
            token = Some(t.expiration_seconds.unwrap_or(TOKEN_EXPIRATION_SECONDS));
        } else if let Some(cm) = &s.config_map {
            let ca = cm
                .items
                .iter()
                .flatten()
                .all(|i| i.key == "ca.crt" && i.path == "ca.crt");
            if cm.name != "kube-root-ca.crt" || !ca {
                return None;
            }
        } else if let Some(d) = &s.downward_api {
            let ns = d.items.iter().flatten().all(|i| {
                i.path == "namespace"
                    && i.field_ref
                        .as_ref()
                        .is_some_and(|f| f.field_path == "metadata.namespace")
            });
            if !ns {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(TokenVolume {
        service_account: service_account.to_owned(),
        expiration_seconds: token?,
    })
}

/// Values available to `fieldRef` env vars.
pub struct FieldValues<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub node_name: &'a str,
    pub pod_ip: Option<Ipv4Addr>,
    pub service_account: &'a str,
    pub hostname: &'a str,
}

fn container(
    c: &Container,
    ctx: &PodContext,
    fields: &FieldValues<'_>,
    volumes: &BTreeMap<String, VolumeSource>,
    unsupported: &BTreeMap<String, ()>,
) -> ContainerPlan {
    let image = c.image.clone().unwrap_or_default();
    let env_vars: &[EnvVar] = c.env.as_deref().unwrap_or_default();
    let (env, env_err) = match resolve_env(env_vars, fields) {
        Ok(env) => (env, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut env = env;
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), fields.hostname.to_string()));
    }
    let command: Vec<String> = c.command.iter().flatten().map(|w| expand(w, &env)).collect();
    let args: Vec<String> = c.args.iter().flatten().map(|w| expand(w, &env)).collect();
    let mut mounts = Vec::new();
    let mut mount_err = None;
    for m in c.volume_mounts.iter().flatten() {
        if volumes.contains_key(&m.name) {
            mounts.push(MountPlan {
                volume: m.name.clone(),
                path: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false),
            });
        } else if unsupported.contains_key(&m.name) {
            mount_err = Some(format!(
                "volume {:?} has a type this runtime does not provide (only emptyDir, hostPath and the \
                 kube-api-access projection)",
                m.name
            ));
        } else {
            mount_err = Some(format!("volumeMount {:?} names no volume of the pod", m.name));
        }
    }
    let exe = ctx.agent_exe.to_string_lossy().into_owned();
    let exec = if let Some(e) = env_err {
        unrunnable("CreateContainerConfigError", e)
    } else if let Some(e) = mount_err {
        unrunnable("CreateContainerConfigError", e)
    } else {
        match classify(&image) {
            ImageKind::Pause => Exec::Run {
                argv: vec![exe, "agnhost".into(), "pause".into()],
            },
            ImageKind::Agnhost => {
                let words: Vec<String> = command.iter().chain(&args).cloned().collect();
                let builtin = command
                    .first()
                    .is_none_or(|w| w.rsplit('/').next() == Some("agnhost"));
                if builtin {
                    let rest = if command.is_empty() {
                        &words[..]
                    } else {
                        &words[1..]
                    };
                    let mut argv = vec![exe, "agnhost".into()];
                    argv.extend(rest.iter().cloned());
                    Exec::Run { argv }
                } else {
                    Exec::Run { argv: words }
                }
            }
            ImageKind::Host if command.is_empty() => unrunnable(
                "ErrImagePull",
                format!(
                    "image {image:?} is not built in (agnhost, pause) and the container has no command to run \
                     from the host filesystem: set command"
                ),
            ),
            ImageKind::Host => Exec::Run {
                argv: command.iter().chain(&args).cloned().collect(),
            },
        }
    };
    let ports: BTreeMap<&str, u16> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.as_deref()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let probe = |p: &Option<Probe>| p.as_ref().and_then(|p| probe_spec(p, &ports));
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    ContainerPlan {
        name: c.name.clone(),
        image,
        exec,
        env,
        working_dir: c.working_dir.clone(),
        mounts,
        readiness: probe(&c.readiness_probe),
        liveness: probe(&c.liveness_probe),
        startup: probe(&c.startup_probe),
        limits: Limits {
            memory_bytes: limits
                .and_then(|l| l.get("memory"))
                .and_then(|q| quantity::bytes(&q.0)),
            cpu_millis: limits
                .and_then(|l| l.get("cpu"))
                .and_then(|q| quantity::millicores(&q.0)),
        },
    }
}

fn port_of(p: &IntOrString, ports: &BTreeMap<&str, u16>) -> Option<u16> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(s) => s.parse().ok().or_else(|| ports.get(s.as_str()).copied()),
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |s| s.max(0) as u64))
}

/// A probe's plan; `None` for a probe without an action or with a port that names nothing.
pub fn probe_spec(p: &Probe, ports: &BTreeMap<&str, u16>) -> Option<ProbeSpec> {
    let action = if let Some(h) = &p.http_get {
        ProbeAction::Http {
            port: port_of(&h.port, ports)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone(),
            https: h.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp {
            port: port_of(&t.port, ports)?,
            host: t.host.clone(),
        }
    } else if let Some(e) = &p.exec {
        ProbeAction::Exec {
            argv: e.command.clone().unwrap_or_default(),
        }
    } else {
        return None;
    };
    Some(ProbeSpec {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: p.success_threshold.map_or(1, |v| v.max(1) as u32),
        failure_threshold: p.failure_threshold.map_or(3, |v| v.max(1) as u32),
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
