//! The per-pod worker: runs init containers in order, then the containers; restarts them per restartPolicy with
//! CrashLoopBackOff; runs probes; stops everything gracefully on request; publishes kubectl-style status.
use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use super::{
    backoff::Backoff,
    cgroup,
    container::{self, Observed},
    launch::{BindMount, ExitRecord, Launch, RunRecord},
    layout::{PodDir, read_json, write_json},
    plan::{ContainerPlan, Exec, RuntimePlan, VolumeSource},
    probe::{ProbeKind, ProbeState},
    probe_exec::{self, ProbeTarget},
    runtime::RuntimeConfig,
    sandbox::Sandbox,
    status::{ContainerView, PodView, State, phase},
};

/// What survives an agent restart about a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// The current run (also the restart count of that run).
    attempt: u32,
    last_state: Option<State>,
    /// An init container that completed.
    done: bool,
}

struct Slot {
    plan: ContainerPlan,
    init: bool,
    view: ContainerView,
    rec: Record,
    backoff: Backoff,
    launched: bool,
    restart_at: Option<Instant>,
    running_since: Option<Instant>,
    run: Option<RunRecord>,
    probes: Vec<ProbeState>,
    kill_at: Option<Instant>,
    finished: bool,
}

/// The status before anything ran.
pub fn initial_view(plan: &RuntimePlan) -> PodView {
    PodView {
        phase: super::status::Phase::Pending,
        initialized: plan.init_containers.is_empty(),
        init_containers: plan
            .init_containers
            .iter()
            .map(|c| ContainerView::new(&c.name, &c.image))
            .collect(),
        containers: plan
            .containers
            .iter()
            .map(|c| ContainerView::new(&c.name, &c.image))
            .collect(),
    }
}

fn terminated(exit: &ExitRecord) -> State {
    State::Terminated {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: exit.reason.clone(),
        message: exit.message.clone(),
        started_at: exit.started_at.clone(),
        finished_at: exit.finished_at.clone(),
    }
}

struct Worker {
    cfg: Arc<RuntimeConfig>,
    plan: RuntimePlan,
    dir: PodDir,
    sandbox: Sandbox,
    pod_ip: Option<Ipv4Addr>,
    slots: Vec<Slot>,
    init_failed: bool,
}

/// Runs the pod until `stop` fires; then stops every container gracefully.
pub async fn run(
    cfg: Arc<RuntimeConfig>,
    plan: RuntimePlan,
    sandbox: Sandbox,
    pod_ip: Option<Ipv4Addr>,
    status: watch::Sender<PodView>,
    mut stop: oneshot::Receiver<Option<Duration>>,
) {
    let dir = PodDir::new(&cfg.state_root, &plan.uid);
    let slots = plan
        .init_containers
        .iter()
        .map(|c| (c, true))
        .chain(plan.containers.iter().map(|c| (c, false)))
        .map(|(c, init)| {
            let rec: Record = read_json(&dir.record_file(&c.name))
                .ok()
                .flatten()
                .unwrap_or_default();
            let mut view = ContainerView::new(&c.name, &c.image);
            view.restart_count = rec.attempt as i32;
            view.last_state = rec.last_state.clone();
            Slot {
                launched: dir.launch_file(&c.name, rec.attempt).exists(),
                plan: c.clone(),
                init,
                view,
                rec,
                backoff: Backoff::new(cfg.backoff),
                restart_at: None,
                running_since: None,
                run: None,
                probes: Vec::new(),
                kill_at: None,
                finished: false,
            }
        })
        .collect();
    let mut w = Worker {
        cfg,
        plan,
        dir,
        sandbox,
        pod_ip,
        slots,
        init_failed: false,
    };
    let grace = loop {
        w.tick().await;
        status.send_replace(w.view());
        tokio::select! {
            g = &mut stop => break g.ok().flatten(),
            _ = tokio::time::sleep(w.cfg.poll) => {}
        }
    };
    w.stop_all(grace.unwrap_or(w.plan.grace)).await;
    status.send_replace(w.view());
}

impl Worker {
    fn view(&self) -> PodView {
        let initialized = self.slots.iter().filter(|s| s.init).all(|s| s.rec.done);
        let mains: Vec<(State, bool)> = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(|s| (s.view.state.clone(), s.restart_at.is_some()))
            .collect();
        PodView {
            phase: phase(initialized, self.init_failed, &mains),
            initialized,
            init_containers: self
                .slots
                .iter()
                .filter(|s| s.init)
                .map(|s| s.view.clone())
                .collect(),
            containers: self
                .slots
                .iter()
                .filter(|s| !s.init)
                .map(|s| s.view.clone())
                .collect(),
        }
    }

    async fn tick(&mut self) {
        if self.init_failed {
            return;
        }
        let now = Instant::now();
        // Init containers one at a time, in order; the containers only once all of them completed.
        let active: Vec<usize> = match self.slots.iter().position(|s| s.init && !s.rec.done) {
            Some(i) => vec![i],
            None => (0..self.slots.len()).filter(|i| !self.slots[*i].init).collect(),
        };
        for i in active {
            self.step(i, now);
        }
        self.probe(now).await;
    }

    fn persist(&self, i: usize) {
        let s = &self.slots[i];
        if let Err(e) = write_json(&self.dir.record_file(&s.plan.name), &s.rec) {
            tracing::warn!(container = s.plan.name, "saving the container record: {e}");
        }
    }

    fn step(&mut self, i: usize, now: Instant) {
        let name = self.slots[i].plan.name.clone();
        if !self.slots[i].launched {
            if let Exec::Unrunnable { reason, message } = &self.slots[i].plan.exec {
                self.slots[i].view.state = State::waiting(reason, message.clone());
                return;
            }
            if self.slots[i].finished || self.slots[i].restart_at.is_some_and(|t| now < t) {
                return;
            }
            if self.slots[i].restart_at.take().is_some() {
                self.slots[i].rec.attempt += 1;
                self.slots[i].view.restart_count = self.slots[i].rec.attempt as i32;
            }
            match self.launch(i) {
                Ok(()) => {
                    self.slots[i].launched = true;
                    self.slots[i].view.state = State::waiting("ContainerCreating", "");
                }
                Err(e) => {
                    self.slots[i].view.state = State::waiting("RunContainerError", e.to_string());
                    self.slots[i].restart_at = Some(now + self.slots[i].backoff.on_exit(Duration::ZERO));
                    // The failed attempt number is reused.
                    self.slots[i].rec.attempt = self.slots[i].rec.attempt.saturating_sub(1);
                }
            }
            self.persist(i);
            return;
        }
        let attempt = self.slots[i].rec.attempt;
        match container::observe(&self.dir, &name, attempt) {
            Observed::Starting => {}
            Observed::Running(run) => {
                let s = &mut self.slots[i];
                if !s.view.state.is_running() {
                    s.view.state = State::Running {
                        started_at: run.started_at.clone(),
                    };
                    s.running_since = Some(now);
                    s.probes = [
                        (&s.plan.startup, ProbeKind::Startup),
                        (&s.plan.readiness, ProbeKind::Readiness),
                        (&s.plan.liveness, ProbeKind::Liveness),
                    ]
                    .into_iter()
                    .filter_map(|(p, k)| p.clone().map(|p| ProbeState::new(p, k, now)))
                    .collect();
                    s.view.started = s.plan.startup.is_none();
                    s.view.ready = s.plan.readiness.is_none() && s.view.started;
                    s.run = Some(run);
                }
                if let (Some(at), Some(run)) = (s.kill_at, &s.run)
                    && now >= at
                {
                    container::signal(run, Signal::SIGKILL);
                }
            }
            Observed::Exited(exit) => self.exited(i, &exit, now),
        }
    }

    fn exited(&mut self, i: usize, exit: &ExitRecord, now: Instant) {
        let policy = self.plan.restart_policy;
        let s = &mut self.slots[i];
        let state = terminated(exit);
        let ran_for = s.running_since.map_or(Duration::ZERO, |t| now - t);
        s.run = None;
        s.probes.clear();
        s.kill_at = None;
        s.running_since = None;
        s.view.ready = false;
        s.launched = false;
        if s.init && exit.exit_code == 0 {
            s.rec.done = true;
            s.finished = true;
            s.view.state = state;
        } else if (s.init && policy != super::plan::RestartPolicy::Never)
            || (!s.init && policy.restarts(exit.exit_code))
        {
            let delay = s.backoff.on_exit(ran_for);
            s.restart_at = Some(now + delay);
            s.rec.last_state = Some(state.clone());
            s.view.last_state = Some(state);
            s.view.state = State::waiting(
                "CrashLoopBackOff",
                format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    delay.as_secs(),
                    s.plan.name,
                    self.plan.name,
                    self.plan.namespace,
                    self.plan.uid
                ),
            );
            tracing::info!(
                pod = self.plan.name,
                container = s.plan.name,
                code = exit.exit_code,
                ?delay,
                "container exited, restarting after back-off"
            );
        } else {
            s.finished = true;
            s.view.state = state;
            if s.init {
                self.init_failed = true;
            }
        }
        self.persist(i);
    }

    fn launch(&mut self, i: usize) -> Result<(), super::RuntimeError> {
        let c = &self.slots[i].plan;
        let Exec::Run { argv } = &c.exec else {
            unreachable!("unrunnable containers are never launched");
        };
        let attempt = self.slots[i].rec.attempt;
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let source = match self.plan.volumes.get(&m.volume) {
                Some(VolumeSource::EmptyDir) => self.dir.volume(&m.volume),
                Some(VolumeSource::HostPath(p)) => p.clone(),
                Some(VolumeSource::ServiceAccountToken(_)) => {
                    // Every pod mounts here: the host directory is shared and stays (removing it would race
                    // with other pods' container starts).
                    std::fs::create_dir_all(&m.path)
                        .map_err(super::RuntimeError::io("creating the ServiceAccount mount point"))?;
                    mounts.push(BindMount {
                        source: self.dir.volume(&m.volume),
                        target: m.path.clone(),
                        read_only: true,
                    });
                    continue;
                }
                None => continue,
            };
            ensure_mountpoint(&self.dir, &m.path)?;
            mounts.push(BindMount {
                source,
                target: m.path.clone(),
                read_only: m.read_only,
            });
        }
        let cgroup = self.cfg.cgroup_root.as_ref().and_then(|root| {
            match cgroup::prepare(root, &self.plan.uid, &c.name, &c.limits) {
                Ok((dir, skipped)) => {
                    for s in skipped {
                        tracing::debug!(container = c.name, "limit not applied: {s}");
                    }
                    Some(dir)
                }
                Err(e) => {
                    tracing::warn!(container = c.name, "no cgroup for the container: {e}");
                    None
                }
            }
        });
        let launch = Launch {
            sandbox_pid: self.sandbox.pid,
            argv: argv.clone(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone(),
            mounts,
            cgroup,
            log_path: self.dir.log_file(&c.name, attempt),
            log_max_bytes: self.cfg.log_max_bytes,
            log_keep: self.cfg.log_keep,
            run_file: self.dir.run_file(&c.name, attempt),
            exit_file: self.dir.exit_file(&c.name, attempt),
        };
        // Keep only this run's and the previous run's logs (for `kubectl logs --previous`).
        if attempt >= 2 {
            let _ = std::fs::remove_file(self.dir.log_file(&c.name, attempt - 2));
        }
        container::start(&self.cfg.agent_exe, &self.dir, &c.name, attempt, &launch)
    }

    async fn probe(&mut self, now: Instant) {
        let mut checks = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(run) = &s.run else { continue };
            if s.kill_at.is_some() {
                continue;
            }
            let startup_pending = s.probes.iter().any(|p| p.kind() == ProbeKind::Startup && !p.ok());
            for (j, p) in s.probes.iter().enumerate() {
                if !p.due(now) || (startup_pending && p.kind() != ProbeKind::Startup) {
                    continue;
                }
                let target = ProbeTarget {
                    netns: self.sandbox.netns_path(),
                    pod_ip: self.pod_ip,
                    container_pid: run.pid,
                    agent_exe: self.cfg.agent_exe.clone(),
                };
                let spec = p.spec().clone();
                checks.push((
                    i,
                    j,
                    tokio::task::spawn_blocking(move || probe_exec::check(&target, &spec)),
                ));
            }
        }
        for (i, j, h) in checks {
            let ok = h.await.unwrap_or(false);
            let grace = self.plan.grace;
            let s = &mut self.slots[i];
            s.probes[j].record(ok, Instant::now());
            let p = &s.probes[j];
            match p.kind() {
                ProbeKind::Startup => s.view.started = p.ok(),
                ProbeKind::Readiness => {}
                ProbeKind::Liveness => {}
            }
            if p.kills()
                && s.kill_at.is_none()
                && let Some(run) = &s.run
            {
                tracing::info!(container = s.plan.name, kind = ?p.kind(), "probe failed, killing the container");
                container::signal(run, Signal::SIGTERM);
                s.kill_at = Some(Instant::now() + grace);
            }
            let readiness = s
                .probes
                .iter()
                .find(|p| p.kind() == ProbeKind::Readiness)
                .is_none_or(ProbeState::ok);
            s.view.ready = s.view.started && readiness;
        }
    }

    async fn stop_all(&mut self, grace: Duration) {
        let poll = self.cfg.poll;
        let stops: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.launched)
            .map(|(i, s)| {
                let (dir, name, attempt) = (self.dir.clone(), s.plan.name.clone(), s.rec.attempt);
                (
                    i,
                    tokio::spawn(async move { container::stop(&dir, &name, attempt, grace, poll).await }),
                )
            })
            .collect();
        for (i, h) in stops {
            if let Ok(Observed::Exited(exit)) = h.await {
                let s = &mut self.slots[i];
                s.view.state = terminated(&exit);
                s.view.ready = false;
                s.launched = false;
                s.run = None;
            }
        }
        for s in &mut self.slots {
            s.restart_at = None;
        }
    }
}

/// Creates a missing mount point on the host and records what was created (removed with the pod).
fn ensure_mountpoint(dir: &PodDir, target: &std::path::Path) -> Result<(), super::RuntimeError> {
    if target.exists() {
        return Ok(());
    }
    let mut created: Vec<PathBuf> = read_json(&dir.mountpoints_file())
        .ok()
        .flatten()
        .unwrap_or_default();
    let missing: Vec<PathBuf> = target
        .ancestors()
        .take_while(|p| !p.exists())
        .map(PathBuf::from)
        .collect();
    std::fs::create_dir_all(target).map_err(super::RuntimeError::io("creating a mount point"))?;
    tracing::info!(path = %target.display(), "created a mount point on the host (removed with the pod)");
    created.extend(missing);
    write_json(&dir.mountpoints_file(), &created).map_err(super::RuntimeError::io("recording mount points"))
}

/// Removes the (empty) mount points the runtime created for a pod, deepest first.
pub fn remove_mountpoints(dir: &PodDir) {
    let mut created: Vec<PathBuf> = read_json(&dir.mountpoints_file())
        .ok()
        .flatten()
        .unwrap_or_default();
    created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    created.dedup();
    for p in created {
        let _ = std::fs::remove_dir(&p);
    }
}

/// SIGKILLs every container run (process group) and shim still recorded as running in `dir`.
pub fn kill_recorded_runs(dir: &PodDir) {
    let Ok(containers) = std::fs::read_dir(dir.path().join("containers")) else {
        return;
    };
    for c in containers.flatten() {
        let Ok(files) = std::fs::read_dir(c.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with("run-") {
                continue;
            }
            let exited = c.path().join(name.replacen("run-", "exit-", 1)).exists();
            if let (false, Ok(Some(run))) = (exited, read_json::<RunRecord>(&f.path())) {
                container::signal(&run, Signal::SIGKILL);
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.shim_pid as i32), Signal::SIGKILL);
            }
        }
    }
}
