//! Agent side of one container run: write the launch record, start the shim, observe the run, stop it gracefully.
use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use super::{
    RuntimeError,
    launch::{ExitRecord, Launch, RunRecord},
    layout::{PodDir, read_json, write_json},
};

/// What a container run is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The shim has not reported yet.
    Starting,
    Running(RunRecord),
    Exited(ExitRecord),
}

fn pid_alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Starts the shim for `launch` (recorded as `launch-<attempt>.json`), detached from the agent's session.
pub fn start(
    agent_exe: &Path,
    dir: &PodDir,
    name: &str,
    attempt: u32,
    launch: &Launch,
) -> Result<(), RuntimeError> {
    let path = dir.launch_file(name, attempt);
    for stale in [&launch.run_file, &launch.exit_file] {
        let _ = std::fs::remove_file(stale);
    }
    write_json(&path, launch).map_err(RuntimeError::io("writing the launch record"))?;
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.shim_log(name))
        .map_err(RuntimeError::io("opening shim.log"))?;
    let shim_err = shim_log
        .try_clone()
        .map_err(RuntimeError::io("opening shim.log"))?;
    let mut cmd = Command::new(agent_exe);
    cmd.arg("__enter-pod")
        .arg("container")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(shim_log)
        .stderr(shim_err);
    // SAFETY: setsid is async-signal-safe; the shim must survive agent restarts and not get the agent's signals.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(RuntimeError::io("starting the container shim"))?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Reads what run `attempt` of `name` is doing. A run whose shim vanished without a record counts as exited.
pub fn observe(dir: &PodDir, name: &str, attempt: u32) -> Observed {
    if let Ok(Some(exit)) = read_json::<ExitRecord>(&dir.exit_file(name, attempt)) {
        return Observed::Exited(exit);
    }
    match read_json::<RunRecord>(&dir.run_file(name, attempt)) {
        Ok(Some(run)) => {
            if pid_alive(run.shim_pid) || pid_alive(run.pid) {
                Observed::Running(run)
            } else if let Ok(Some(exit)) = read_json::<ExitRecord>(&dir.exit_file(name, attempt)) {
                Observed::Exited(exit)
            } else {
                Observed::Exited(ExitRecord {
                    exit_code: 137,
                    signal: Some(9),
                    reason: "Error".into(),
                    message: "the container's shim exited without recording an exit status".into(),
                    started_at: run.started_at.clone(),
                    finished_at: k8s_openapi::jiff::Timestamp::now().to_string(),
                })
            }
        }
        _ => Observed::Starting,
    }
}

/// Sends `sig` to the container's process group.
pub fn signal(run: &RunRecord, sig: Signal) {
    let _ = killpg(Pid::from_raw(run.pid as i32), sig);
}

/// Stops a run: SIGTERM, up to `grace` for it to exit, then SIGKILL (and up to 5 s more).
pub async fn stop(dir: &PodDir, name: &str, attempt: u32, grace: Duration, poll: Duration) -> Observed {
    let run = match observe(dir, name, attempt) {
        Observed::Running(r) => r,
        other => return other,
    };
    signal(&run, Signal::SIGTERM);
    for (limit, next) in [(grace, Some(Signal::SIGKILL)), (Duration::from_secs(5), None)] {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let o @ Observed::Exited(_) = observe(dir, name, attempt) {
                return o;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(poll).await;
        }
        if let Some(sig) = next {
            tracing::info!(
                container = name,
                "did not stop within its grace period, killing it"
            );
            signal(&run, sig);
        }
    }
    observe(dir, name, attempt)
}
