//! Processes started by `kubectl exec`: a command in a running container's namespaces, cgroup, environment and
//! working directory (through `skiff-agent __enter-pod exec`, as exec probes), with pipes or a pseudo-terminal.
use std::{
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    process::Stdio,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::{
    launch::{Launch, RunRecord},
    layout::{PodDir, read_json},
    status::{PodView, State},
};

/// The container process an exec joins, and how the container was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub pid: u32,
    pub cgroup: Option<PathBuf>,
    pub working_dir: Option<String>,
}

/// Why a container cannot be entered: an HTTP code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRunning {
    pub code: u16,
    pub message: String,
}

/// The running container `container` of a pod (its live `view`, state under `pod_dir`).
pub fn target(
    view: &PodView,
    pod_dir: &PodDir,
    pod: &str,
    container: &str,
) -> Result<ExecTarget, NotRunning> {
    let refuse = |code, message: String| NotRunning { code, message };
    let c = view
        .container(container)
        .ok_or_else(|| refuse(400, format!("container {container} is not valid for pod {pod}")))?;
    if !matches!(c.state, State::Running { .. }) {
        return Err(refuse(
            400,
            format!("container {container} in pod {pod} is not running"),
        ));
    }
    let attempt = c.restart_count.max(0) as u32;
    let run: RunRecord = read_json(&pod_dir.run_file(container, attempt))
        .ok()
        .flatten()
        .ok_or_else(|| {
            refuse(
                400,
                format!("container {container} in pod {pod} has not started yet"),
            )
        })?;
    if !Path::new(&format!("/proc/{}", run.pid)).exists() {
        return Err(refuse(
            400,
            format!("container {container} in pod {pod} is not running"),
        ));
    }
    let launch: Option<Launch> = read_json(&pod_dir.launch_file(container, attempt)).ok().flatten();
    Ok(ExecTarget {
        pid: run.pid,
        cgroup: launch.as_ref().and_then(|l| l.cgroup.clone()),
        working_dir: launch.and_then(|l| l.working_dir),
    })
}

/// The arguments of `skiff-agent` that run `argv` in the container.
pub fn enter_args(t: &ExecTarget, argv: &[String], tty: bool) -> Vec<String> {
    let mut args = vec![
        "__enter-pod".into(),
        "exec".into(),
        "--pid".into(),
        t.pid.to_string(),
    ];
    if let Some(dir) = &t.working_dir {
        args.extend(["--cwd".into(), dir.clone()]);
    }
    if tty {
        args.push("--tty".into());
    }
    args.push("--".into());
    args.extend(argv.iter().cloned());
    args
}

/// The exec's streams.
pub enum ExecIo {
    /// Separate pipes (each `None` when not asked for).
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    },
    /// The master side of the pseudo-terminal that is the command's stdin, stdout and stderr.
    Tty(OwnedFd),
}

/// A started exec.
pub struct ExecProcess {
    pub child: Child,
    pub io: ExecIo,
}

impl ExecProcess {
    /// Kills the command and everything it started (they share its process group).
    pub fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

/// Which streams an exec wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A NUL-terminated copy of `path/cgroup.procs` for the child (no allocation after fork).
fn procs_file(cgroup: &Path) -> Option<std::ffi::CString> {
    std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).ok()
}

/// Starts `argv` in the container `t` with `agent_exe __enter-pod exec` in a new session (so in its own process
/// group, which the command shares without `tty`; under `tty` the command leads its own session on the terminal),
/// in the container's cgroup.
pub fn spawn(agent_exe: &Path, t: &ExecTarget, argv: &[String], streams: Streams) -> io::Result<ExecProcess> {
    let mut cmd = Command::new(agent_exe);
    cmd.args(enter_args(t, argv, streams.tty)).kill_on_drop(true);
    let procs = t.cgroup.as_deref().and_then(procs_file);
    let master = if streams.tty {
        let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        let slave = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        Some(pty.master)
    } else {
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(streams.stdin))
            .stdout(pipe(streams.stdout))
            .stderr(pipe(streams.stderr));
        None
    };
    // SAFETY: only async-signal-safe calls between fork and exec: setsid, open, write, close; the path was
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    // Best effort, like the container shim on a hybrid layout: the exec still runs if it fails.
                    let _ = libc::write(fd, c"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // The parent's copies of the slave side were moved into `cmd`; dropping it closes them, so reading the master
    // ends (EIO) once the command and its children have exited.
    drop(cmd);
    let io = match master {
        Some(m) => ExecIo::Tty(m),
        None => ExecIo::Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        },
    };
    Ok(ExecProcess { child, io })
}

/// Sets the terminal size of the pseudo-terminal `master` (columns, rows).
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives for the call; the fd is open.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The exit code kubectl reports for a finished command: its code, or 128 + the signal that killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::status::{ContainerView, Phase};

    #[test]
    fn enter_arguments_carry_pid_and_working_dir() {
        let t = ExecTarget {
            pid: 42,
            cgroup: None,
            working_dir: Some("/srv".into()),
        };
        let argv = ["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(
            enter_args(&t, &argv, false),
            [
                "__enter-pod",
                "exec",
                "--pid",
                "42",
                "--cwd",
                "/srv",
                "--",
                "sh",
                "-c",
                "exit 3"
            ]
        );
        assert_eq!(
            enter_args(&t, &argv[..1], true)[4..],
            ["--cwd", "/srv", "--tty", "--", "sh"]
        );
        let t = ExecTarget {
            working_dir: None,
            ..t
        };
        assert_eq!(
            enter_args(&t, &argv[..1], false),
            ["__enter-pod", "exec", "--pid", "42", "--", "sh"]
        );
    }

    #[test]
    fn only_running_containers_are_entered() {
        let dir = tempfile::tempdir().unwrap();
        let pod_dir = PodDir::new(dir.path(), "uid-1");
        let mut view = PodView {
            phase: Phase::Running,
            initialized: true,
            init_containers: Vec::new(),
            containers: Vec::new(),
        };
        let mut c = ContainerView::new("c", "img");
        view.containers.push(c.clone());
        assert_eq!(
            target(&view, &pod_dir, "p", "x").unwrap_err(),
            NotRunning {
                code: 400,
                message: "container x is not valid for pod p".into()
            }
        );
        assert_eq!(
            target(&view, &pod_dir, "p", "c").unwrap_err().message,
            "container c in pod p is not running"
        );
        c.state = State::Running {
            started_at: String::new(),
        };
        view.containers[0] = c;
        assert_eq!(
            target(&view, &pod_dir, "p", "c").unwrap_err().message,
            "container c in pod p has not started yet",
            "no run record"
        );
    }
}
