//! Running external commands: captured output, checked status, and a wall-clock limit for long runs.
use std::{
    os::unix::process::CommandExt,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Shows a command the way a user would type it (for error messages).
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs a command with no stdin and returns its stdout; a non-zero exit is an error carrying its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with no stdin and returns stdout even when it exits non-zero (for probes like `dpkg-query`).
pub fn probe(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with inherited stdout/stderr (the user sees it), no stdin, and checks its status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// How a time-limited run ended.
pub enum Finished {
    Exited(ExitStatus),
    TimedOut,
}

/// Runs a command in its own process group with inherited output; past `limit` the whole group (the command and
/// everything it started, e.g. cargo and the test binary) is killed.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Finished::Exited(status));
        }
        if started.elapsed() > limit {
            // Signal the process group created above (cargo and the test binary it started), by its id.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdin(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Finished::TimedOut);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_returns_stdout_and_reports_failures() {
        assert_eq!(output(Command::new("echo").arg("hi")).unwrap(), "hi\n");
        let err = output(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("nope") && text.contains("sh -c"), "{text}");
    }

    #[test]
    fn run_with_limit_kills_a_command_that_overruns() {
        let started = Instant::now();
        let r = run_with_limit(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap();
        assert!(matches!(r, Finished::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = run_with_limit(&mut Command::new("true"), Duration::from_secs(10)).unwrap();
        assert!(matches!(r, Finished::Exited(s) if s.success()));
    }
}
