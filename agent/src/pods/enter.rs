//! `skiff-agent __enter-pod ...` (hidden): the sandbox process, the per-run container shim, and exec into a
//! running container. Each step that changes namespaces runs while the process is still single-threaded.
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, bail};
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns, unshare},
    sys::signal::{SigSet, Signal},
};

use super::{
    launch::{ExitRecord, Launch, RunRecord},
    layout::write_json,
    logs::RotatingLog,
};
use crate::net::nl::{self, Netns};

/// Entry point: `args` are the words after `__enter-pod`.
pub fn main(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("sandbox") => {
            let hostname = match &args[1..] {
                [flag, h] if flag == "--hostname" => h.clone(),
                _ => bail!("usage: __enter-pod sandbox --hostname NAME"),
            };
            sandbox(&hostname)
        }
        Some("container") => {
            let [_, spec] = &args[..] else {
                bail!("usage: __enter-pod container LAUNCH.json");
            };
            container(Path::new(spec))
        }
        Some("exec") => {
            let usage = "usage: __enter-pod exec --pid PID [--cwd DIR] [--tty] -- COMMAND [ARGS...]";
            let (mut pid, mut cwd, mut tty) = (None, None, false);
            let mut rest = &args[1..];
            loop {
                match rest {
                    [flag, value, tail @ ..] if flag == "--pid" => {
                        pid = Some(value.parse().context("--pid")?);
                        rest = tail;
                    }
                    [flag, value, tail @ ..] if flag == "--cwd" => {
                        cwd = Some(value.as_str());
                        rest = tail;
                    }
                    [flag, tail @ ..] if flag == "--tty" => {
                        tty = true;
                        rest = tail;
                    }
                    [dashes, argv @ ..] if dashes == "--" && !argv.is_empty() => {
                        let Some(pid) = pid else { bail!(usage) };
                        break exec(pid, cwd, tty, argv);
                    }
                    _ => bail!(usage),
                }
            }
        }
        _ => bail!("usage: __enter-pod sandbox|container|exec ..."),
    }
}

/// New network, UTS and IPC namespaces; hostname; loopback up; "ready" on stdout; sleep until SIGTERM/SIGINT.
fn sandbox(hostname: &str) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .context("unsharing the pod namespaces")?;
    nix::unistd::sethostname(hostname).context("setting the hostname")?;
    nl::run_in(&Netns::Current, |h| async move {
        if let Some(lo) = nl::link_index(&h, "lo").await? {
            nl::link_up(&h, lo, "lo").await?;
        }
        Ok(())
    })?;
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    signals.wait()?;
    Ok(())
}

fn join_ns(pid: u32, kinds: &[(&str, CloneFlags)]) -> Result<()> {
    // Open all first: after joining the mount namespace, /proc paths may differ.
    let files: Vec<(File, &str, CloneFlags)> = kinds
        .iter()
        .map(|(k, f)| {
            File::open(format!("/proc/{pid}/ns/{k}"))
                .with_context(|| format!("opening /proc/{pid}/ns/{k}"))
                .map(|file| (file, *k, *f))
        })
        .collect::<Result<_>>()?;
    for (file, k, flag) in files {
        setns(&file, flag).with_context(|| format!("joining the {k} namespace of {pid}"))?;
    }
    Ok(())
}

const POD_NS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
];

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Joins the pod, builds the container's mount namespace, starts the process, logs its output, records its end.
fn container(spec_path: &Path) -> Result<()> {
    let spec: Launch =
        serde_json::from_slice(&std::fs::read(spec_path)?).context("reading the launch record")?;
    let started_at = now();
    let fail = |reason: &str, message: String| -> Result<()> {
        write_json(
            &spec.exit_file,
            &ExitRecord {
                exit_code: 128,
                signal: None,
                reason: reason.into(),
                message,
                started_at: started_at.clone(),
                finished_at: now(),
            },
        )?;
        Ok(())
    };
    if let Err(e) = enter_container(&spec) {
        return fail("StartError", format!("{e:#}"));
    }
    // The container's own pid namespace (kube's default without shareProcessNamespace): its process is pid 1 and
    // sees only its own descendants.
    let own_pid_ns = File::open("/proc/self/ns/pid").context("opening the shim's pid namespace")?;
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return fail("StartError", format!("unsharing the pid namespace: {e}"));
    }
    let log = RotatingLog::open(&spec.log_path, spec.log_max_bytes, spec.log_keep)?;
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    // A relative argv[0] is looked up in the container's PATH (std uses the child's PATH once it is set).
    // SAFETY: only async-signal-safe calls: a new process group (so the whole container can be signalled), death
    // with the shim, and a /proc of the new pid namespace in the container's mount namespace (mounted here because
    // only a process inside the namespace can mount its procfs).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
                .map_err(std::io::Error::from)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail("StartError", format!("failed to start {:?}: {e}", spec.argv[0]));
        }
    };
    // Back to the shim's own pid namespace for what it creates next: the kernel refuses new threads (the log
    // pumps) while new children would land in another pid namespace.
    setns(&own_pid_ns, CloneFlags::CLONE_NEWPID).context("returning to the shim's pid namespace")?;
    write_json(
        &spec.run_file,
        &RunRecord {
            pid: child.id(),
            shim_pid: std::process::id(),
            started_at: started_at.clone(),
        },
    )?;
    let log = Arc::new(Mutex::new(log));
    let pump = |stream: Box<dyn std::io::Read + Send>, name: &'static str| {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = log.lock() {
                    let _ = l.line(name, &line);
                }
            }
        })
    };
    let out = pump(Box::new(child.stdout.take().expect("piped")), "stdout");
    let err = pump(Box::new(child.stderr.take().expect("piped")), "stderr");
    let status = child.wait()?;
    let _ = out.join();
    let _ = err.join();
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        _ => (255, None),
    };
    write_json(
        &spec.exit_file,
        &ExitRecord {
            exit_code,
            signal,
            reason: super::status::exit_reason(exit_code).into(),
            message: String::new(),
            started_at,
            finished_at: now(),
        },
    )?;
    Ok(())
}

fn enter_container(spec: &Launch) -> Result<()> {
    join_ns(spec.sandbox_pid, &POD_NS)?;
    unshare(CloneFlags::CLONE_NEWNS).context("unsharing the mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    for m in &spec.mounts {
        mount(
            Some(&m.source),
            &m.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} at {}", m.source.display(), m.target.display()))?;
        if m.read_only {
            mount(
                None::<&str>,
                &m.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| format!("making {} read-only", m.target.display()))?;
        }
    }
    if let Some(cg) = &spec.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    Ok(())
}

/// Joins the namespaces of container process `pid` (network, UTS, IPC, pid, mount), runs `argv` there in `cwd`
/// (else `/`) with the container's environment (a child: joining a pid namespace takes effect for new processes
/// only) and exits with its status; 127 when the command does not exist, 126 when it cannot be run (as runc).
/// The command dies with this process. With `tty` (stdin is a terminal) the command leads a new session with that
/// terminal as its controlling terminal, so a shell inside the container's pid namespace sees its own process
/// group in the foreground (job control, and `exit` restoring it).
fn exec(pid: u32, cwd: Option<&str>, tty: bool, argv: &[String]) -> Result<()> {
    // Read before joining: the container's /proc shows its own pid namespace, not this pid.
    let env: Vec<(String, String)> = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    join_ns(
        pid,
        &[
            ("net", CloneFlags::CLONE_NEWNET),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ],
    )?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(cwd.unwrap_or("/"));
    // SAFETY: only async-signal-safe calls between fork and exec (prctl, setsid, ioctl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("exec: {:?}: {e}", argv[0]);
            std::process::exit(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    )
}
