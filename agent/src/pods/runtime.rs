//! The pod runtime's API for the node loop: create a sandbox, run a planned pod, stop and remove it, re-adopt pods
//! after an agent restart.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{oneshot, watch};

use super::{
    RuntimeError,
    backoff::BackoffConfig,
    cgroup,
    layout::{PodDir, read_json, write_json},
    plan::{RuntimePlan, VolumeSource},
    sandbox::Sandbox,
    status::PodView,
    worker,
};

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub node_name: String,
    /// Pod state directories live under here (`/run/skiff/<node>/pods`).
    pub state_root: PathBuf,
    /// This agent's binary: the sandbox, the shims and the built-in agnhost.
    pub agent_exe: PathBuf,
    /// cgroup v2 directory for the node's pods (`None`: no cgroups).
    pub cgroup_root: Option<PathBuf>,
    pub backoff: BackoffConfig,
    /// How often container runs are checked.
    pub poll: Duration,
    pub log_max_bytes: u64,
    pub log_keep: usize,
    /// The cluster CA (PEM) written as `ca.crt` into ServiceAccount token volumes.
    pub cluster_ca: Option<Vec<u8>>,
}

impl RuntimeConfig {
    /// Defaults for `node`: state under /run/skiff/<node>/pods, cgroups under the unified hierarchy.
    pub fn for_node(node: &str) -> std::io::Result<Self> {
        Ok(Self {
            node_name: node.into(),
            state_root: super::layout::default_state_root(node),
            agent_exe: std::env::current_exe()?,
            cgroup_root: Some(cgroup::default_root(&crate::bpf::attach::default_cgroup(), node)),
            backoff: BackoffConfig::default(),
            poll: Duration::from_millis(200),
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 4,
            cluster_ca: None,
        })
    }
}

/// A running pod: its live status and the means to stop it.
pub struct PodHandle {
    pub plan: RuntimePlan,
    pub sandbox: Sandbox,
    status: watch::Receiver<PodView>,
    stop: Option<oneshot::Sender<Option<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    /// The latest status.
    pub fn status(&self) -> PodView {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<PodView> {
        self.status.clone()
    }

    /// Stops watching the pod without touching its containers (what an agent exit does); the pod can be re-adopted
    /// with [`PodRuntime::adoptable`] and [`PodRuntime::run`].
    pub fn detach(self) -> (RuntimePlan, Sandbox) {
        self.task.abort();
        (self.plan, self.sandbox)
    }

    /// Stops every container gracefully (`grace` overrides the pod's terminationGracePeriodSeconds) and returns the
    /// final status. The sandbox and state stay until [`PodRuntime::remove`].
    pub async fn stop(mut self, grace: Option<Duration>) -> (RuntimePlan, Sandbox, PodView) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(grace);
        }
        let _ = (&mut self.task).await;
        let view = self.status.borrow().clone();
        (self.plan, self.sandbox, view)
    }
}

/// The pod runtime of one node.
#[derive(Debug, Clone)]
pub struct PodRuntime {
    cfg: Arc<RuntimeConfig>,
}

impl PodRuntime {
    pub fn new(cfg: RuntimeConfig) -> Self {
        Self { cfg: Arc::new(cfg) }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    pub fn pod_dir(&self, uid: &str) -> PodDir {
        PodDir::new(&self.cfg.state_root, uid)
    }

    /// Records the plan, creates the pod's volumes and starts its sandbox (or returns the running one).
    pub fn create_sandbox(&self, plan: &RuntimePlan) -> Result<Sandbox, RuntimeError> {
        let dir = self.pod_dir(&plan.uid);
        if let Some(sb) = Sandbox::load(&dir) {
            return Ok(sb);
        }
        std::fs::create_dir_all(dir.path()).map_err(RuntimeError::io("creating the pod state directory"))?;
        write_json(&dir.plan_file(), plan).map_err(RuntimeError::io("writing plan.json"))?;
        for (name, v) in &plan.volumes {
            // The token volume is filled by the node before the containers start (see `sa_token`).
            if matches!(v, VolumeSource::EmptyDir | VolumeSource::ServiceAccountToken(_)) {
                std::fs::create_dir_all(dir.volume(name))
                    .map_err(RuntimeError::io("creating a volume directory"))?;
            }
        }
        Sandbox::create(&self.cfg.agent_exe, &dir, &plan.hostname)
    }

    /// Runs the pod's containers in `sandbox` (init containers first); picks up runs recorded by an earlier agent.
    pub fn run(&self, plan: RuntimePlan, sandbox: Sandbox, pod_ip: Option<std::net::Ipv4Addr>) -> PodHandle {
        let (status_tx, status) = watch::channel(worker::initial_view(&plan));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(worker::run(
            self.cfg.clone(),
            plan.clone(),
            sandbox.clone(),
            pod_ip,
            status_tx,
            stop_rx,
        ));
        PodHandle {
            plan,
            sandbox,
            status,
            stop: Some(stop_tx),
            task,
        }
    }

    /// Pods recorded in the state root whose sandbox still runs (to hand back to [`PodRuntime::run`]), and the UIDs of
    /// recorded pods whose sandbox is gone (to [`PodRuntime::remove_uid`]).
    pub fn adoptable(&self) -> (Vec<(RuntimePlan, Sandbox)>, Vec<String>) {
        let mut live = Vec::new();
        let mut dead = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.cfg.state_root) else {
            return (live, dead);
        };
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            let dir = self.pod_dir(&uid);
            match (read_json::<RuntimePlan>(&dir.plan_file()), Sandbox::load(&dir)) {
                (Ok(Some(plan)), Some(sb)) => live.push((plan, sb)),
                _ => dead.push(uid),
            }
        }
        (live, dead)
    }

    /// Kills the sandbox (and any container still running) and removes the pod's cgroups, created mount points and
    /// state directory.
    pub fn remove(&self, plan: &RuntimePlan, sandbox: &Sandbox) -> Result<(), RuntimeError> {
        worker::kill_recorded_runs(&self.pod_dir(&plan.uid));
        sandbox.destroy()?;
        self.remove_uid(&plan.uid)
    }

    /// Removes what is left of pod `uid`: kills any container run and sandbox still recorded (no grace), then removes
    /// its cgroups, mount points and state directory.
    pub fn remove_uid(&self, uid: &str) -> Result<(), RuntimeError> {
        let dir = self.pod_dir(uid);
        worker::kill_recorded_runs(&dir);
        if let Some(sb) = Sandbox::load(&dir) {
            sb.destroy()?;
        }
        if let Some(root) = &self.cfg.cgroup_root
            && let Err(e) = cgroup::remove_pod(root, uid)
        {
            tracing::warn!(uid, "removing the pod's cgroups: {e}");
        }
        worker::remove_mountpoints(&dir);
        match std::fs::remove_dir_all(dir.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("removing the pod state directory")(e)),
        }
    }
}
