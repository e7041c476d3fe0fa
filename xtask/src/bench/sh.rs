//! Running the system tools the testbed needs (ip, iptables-restore, nft, ethtool, conntrack), with time limits.
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `Command::new(prog)` whose process gets SIGKILL when xtask dies (killed, or crashed), so servers, load
/// generators and agents never outlive an interrupted run.
pub fn command(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(prog);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag the run checks between trials (so it stops and cleans up).
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fails once SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs `prog args` with `stdin` fed in, fails with its stderr if it fails or outlives `limit`.
pub fn run_input(prog: &str, args: &[&str], stdin: Option<&str>, limit: Duration) -> Result<String> {
    run_command(command(prog), prog, args, stdin, limit)
}

/// Like [`run_input`] (no stdin), with the process moved into cgroup `cgroup` (a cgroup v2 directory) before it
/// executes `prog`, so everything it does, also after `ip netns exec`, happens inside that cgroup.
pub fn run_in_cgroup(prog: &str, args: &[&str], cgroup: &Path, limit: Duration) -> Result<String> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .context("cgroup path with a NUL byte")?;
    let mut cmd = command(prog);
    // SAFETY: the closure only calls open/write/close (async-signal-safe) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    run_command(cmd, prog, args, None, limit)
}

fn run_command(
    mut cmd: Command,
    prog: &str,
    args: &[&str],
    stdin: Option<&str>,
    limit: Duration,
) -> Result<String> {
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot start `{prog}` (is it installed? `cargo xtask setup` installs it)")
        })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe")?;
        let input = input.to_string();
        // A writer thread, so a child that stops reading cannot block us past the limit.
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if !status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                bail!("`{prog} {}` failed ({status}): {}", args.join(" "), err.trim());
            }
            return Ok(stdout);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{prog} {}` did not finish within {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `prog args` (10 s limit) and returns stdout.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    run_input(prog, args, None, Duration::from_secs(10))
}

/// Runs a command inside network namespace `ns` through `ip netns exec`.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Like [`in_ns`] with stdin and a custom limit; returns stdout and the wall time it took.
pub fn in_ns_timed(ns: &str, args: &[&str], stdin: &str, limit: Duration) -> Result<(String, Duration)> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    let start = Instant::now();
    let out = run_input("ip", &full, Some(stdin), limit)?;
    Ok((out, start.elapsed()))
}
