//! The Python `kubernetes` client in a virtualenv under `target/tools/`, created once with pip and cached.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The pinned client version (PyPI).
const PACKAGE: &str = "kubernetes==37.0.2";

static SETUP: Mutex<()> = Mutex::new(());

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("tools")
        .join("python-kubernetes")
}

fn usable(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Path of a Python interpreter that can `import kubernetes`, creating the virtualenv on first use.
pub fn python() -> PathBuf {
    let _one_at_a_time = SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    if usable(&python) {
        return python;
    }
    let parent = dir.parent().expect("tools dir");
    std::fs::create_dir_all(parent).expect("create tools dir");
    let staging = parent.join("python-kubernetes.partial");
    let _ = std::fs::remove_dir_all(&staging);
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&staging),
        "python3 -m venv (needs python3-venv)",
    );
    run(
        Command::new(staging.join("bin").join("pip")).args(["install", "--quiet", PACKAGE]),
        "pip install kubernetes (needs access to PyPI)",
    );
    let _ = std::fs::remove_dir_all(&dir);
    // A venv's scripts carry its path; rebuild them for the final location.
    std::fs::rename(&staging, &dir).expect("move the virtualenv into place");
    run(
        Command::new("python3")
            .args(["-m", "venv", "--upgrade"])
            .arg(&dir),
        "python3 -m venv --upgrade",
    );
    assert!(
        usable(&python),
        "the virtualenv at {} cannot import kubernetes",
        dir.display()
    );
    python
}
