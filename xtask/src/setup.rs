//! `cargo xtask setup`: installs what this machine lacks for building and testing Skiff, idempotently.
use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd,
    progress::{Outcome, Progress, Step},
};

/// Debian packages the build and the test suites need.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "bpftool",
    "iproute2",
    "iptables",
    "nftables",
    "iperf3",
    "curl",
    "ethtool",
    "socat",
    "wrk",
    "conntrack",
    "python3",
    "python3-venv",
    "protobuf-compiler",
    // The well-known .proto files (google/protobuf/descriptor.proto) etcd-client's build compiles against.
    "libprotobuf-dev",
    "etcd-server",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz builds and runs the fuzz targets in fuzz/ (`cargo xtask test fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";
const BTF: &str = "/sys/kernel/btf/vmlinux";
const STEPS: usize = 8;

/// Runs every setup step, stopping at the first failure.
pub fn run() -> Result<()> {
    let mut p = Progress::new(STEPS);
    p.run("running as root", |_| check_root())?;
    p.run("apt packages", apt_packages)?;
    p.run("nightly toolchain + rust-src", nightly)?;
    p.run("bpf-linker", bpf_linker)?;
    p.run("cargo-fuzz", cargo_fuzz)?;
    p.run("bpffs", |_| bpffs())?;
    p.run("cgroup2", |_| cgroup2())?;
    p.run("kernel BTF", |_| btf())?;
    Ok(())
}

fn check_root() -> Result<Outcome> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    match effective_uid(&status) {
        Some(0) => Ok(Outcome::Ready("yes".into())),
        Some(uid) => bail!(
            "running as uid {uid}; setup installs packages, mounts bpffs and loads eBPF programs: \
             run it as root (e.g. `sudo -E cargo xtask setup`)"
        ),
        None => bail!("could not find the Uid line in /proc/self/status"),
    }
}

fn apt_packages(step: &Step<'_>) -> Result<Outcome> {
    let listing = cmd::probe(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${Status}\n"])
            .args(APT_PACKAGES),
    )?;
    let mut missing = missing_packages(APT_PACKAGES, &installed_packages(&listing));
    // npm may come with a Node.js that is not Debian's (Debian's npm would conflict with it): a working `npm` on
    // PATH is enough, whoever installed it.
    if !command_works("npm") {
        missing.extend(["nodejs", "npm"]);
    }
    if missing.is_empty() {
        return Ok(Outcome::Ready(format!("all {} installed", APT_PACKAGES.len())));
    }
    step.say(format!("installing {} (about 1-3 min)", missing.join(" ")));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    cmd::run(&mut apt(&["update", "-q"])).context(
        "apt-get update failed: check network access to the Debian mirrors and /etc/apt/sources.list",
    )?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    cmd::run(&mut install).with_context(|| {
        format!(
            "could not install {}: try `apt-get install {}` by hand to see why",
            missing.join(" "),
            missing.join(" ")
        )
    })?;
    Ok(Outcome::Done)
}

fn nightly(step: &Step<'_>) -> Result<Outcome> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs); install it, then re-run")?;
    let mut changed = false;
    if !has_nightly(&toolchains) {
        step.say("installing the nightly toolchain (about 1 min)");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("could not install nightly: check access to the Rust release server")?;
        changed = true;
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !has_component(&components, "rust-src") {
        step.say("adding rust-src to nightly");
        cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context("could not add rust-src: run `rustup component add rust-src --toolchain nightly`")?;
        changed = true;
    }
    Ok(if changed {
        Outcome::Done
    } else {
        Outcome::Ready("already installed".into())
    })
}

fn bpf_linker(step: &Step<'_>) -> Result<Outcome> {
    let version = cmd::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if bpf_linker_matches(&version, BPF_LINKER_VERSION) {
        return Ok(Outcome::Ready(format!("already installed ({})", version.trim())));
    }
    let in_cargo_bin = cargo_home().join("bin/bpf-linker");
    if version.is_empty() && in_cargo_bin.exists() {
        let v = cmd::output(Command::new(&in_cargo_bin).arg("--version")).unwrap_or_default();
        if bpf_linker_matches(&v, BPF_LINKER_VERSION) {
            bail!(
                "{} is installed but not on PATH; aya-build needs it there: \
                 run `. \"$HOME/.cargo/env\"` or add {} to PATH",
                in_cargo_bin.display(),
                in_cargo_bin.parent().unwrap_or(Path::new("")).display()
            );
        }
    }
    step.say("installing (about 75 s)");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .args(["--version", BPF_LINKER_VERSION, "--locked", "--force"]),
    )
    .context(format!(
        "building bpf-linker failed: check that llvm-22-dev, libpolly-22-dev and libzstd-dev are installed \
         and that {LLVM_PREFIX} exists"
    ))?;
    Ok(Outcome::Done)
}

fn cargo_fuzz(step: &Step<'_>) -> Result<Outcome> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = cmd::output(Command::new(&cargo).args(["fuzz", "--version"])).unwrap_or_default();
    if cargo_fuzz_matches(&version, CARGO_FUZZ_VERSION) {
        return Ok(Outcome::Ready(format!("already installed ({})", version.trim())));
    }
    step.say("installing (about 1 min)");
    cmd::run(Command::new(&cargo).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
        "--force",
    ]))
    .context(format!(
        "building cargo-fuzz failed: try `cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked` by hand"
    ))?;
    Ok(Outcome::Done)
}

fn bpffs() -> Result<Outcome> {
    if mount_point(&mounts()?, "bpf").as_deref() == Some(BPFFS) {
        return Ok(Outcome::Ready(format!("mounted at {BPFFS}")));
    }
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    cmd::output(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).context(format!(
        "mounting bpffs failed: try `mount -t bpf bpf {BPFFS}` by hand"
    ))?;
    Ok(Outcome::Done)
}

fn cgroup2() -> Result<Outcome> {
    match mount_point(&mounts()?, "cgroup2") {
        Some(path) => Ok(Outcome::Ready(format!("mounted at {path}"))),
        None => bail!(
            "no cgroup2 mount found (the socket load balancer attaches to a cgroup v2): \
             mount one, e.g. `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`"
        ),
    }
}

fn btf() -> Result<Outcome> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !Path::new(BTF).exists() {
        bail!(
            "{BTF} is missing: kernel {} was built without CONFIG_DEBUG_INFO_BTF; use a kernel with BTF",
            release.trim()
        );
    }
    Ok(Outcome::Ready(format!("kernel {} has BTF", release.trim())))
}

fn mounts() -> Result<String> {
    fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
    })
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Names of fully installed packages in `dpkg-query -W -f '${Package} ${Status}\n'` output.
pub fn installed_packages(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The wanted packages that are not installed, in the order wanted.
pub fn missing_packages<'a>(wanted: &[&'a str], installed: &BTreeSet<String>) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(*p))
        .collect()
}

/// Whether `NAME --version` runs and succeeds.
fn command_works(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `rustup toolchain list` shows a nightly toolchain.
pub fn has_nightly(toolchains: &str) -> bool {
    toolchains
        .lines()
        .any(|l| l.trim_start().starts_with("nightly-") || l.trim() == "nightly")
}

/// Whether `rustup component list --installed` lists the component (`rust-src` has no target suffix).
pub fn has_component(components: &str, name: &str) -> bool {
    components
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .any(|c| c == name || c.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
}

/// Whether `bpf-linker --version` output is the wanted major.minor release.
pub fn bpf_linker_matches(version_output: &str, wanted: &str) -> bool {
    let Some(found) = version_output.split_whitespace().nth(1) else {
        return false;
    };
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    version_output.starts_with("bpf-linker ") && minor(found) == minor(wanted)
}

/// Whether `cargo fuzz --version` output (`cargo-fuzz 0.13.2`) is exactly the wanted version.
pub fn cargo_fuzz_matches(version_output: &str, wanted: &str) -> bool {
    let mut words = version_output.split_whitespace();
    words.next() == Some("cargo-fuzz") && words.next() == Some(wanted)
}

/// The mount point of the first mount of type `fstype` in `/proc/self/mounts` text.
pub fn mount_point(mounts: &str, fstype: &str) -> Option<String> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_source, target, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == fstype).then(|| unescape_mount_path(target))
    })
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as three-digit octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok());
        if bytes[i] == b'\\'
            && let Some(code) = octal.and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn only_fully_installed_packages_count() {
        let listing = "bpftool install ok installed\n\
                       curl deinstall ok config-files\n\
                       wrk unknown ok not-installed\n\
                       socat install ok installed\n";
        let installed = installed_packages(listing);
        assert_eq!(
            installed.iter().map(String::as_str).collect::<Vec<_>>(),
            ["bpftool", "socat"]
        );
        assert_eq!(
            missing_packages(&["curl", "bpftool", "wrk", "iperf3", "socat"], &installed),
            ["curl", "wrk", "iperf3"]
        );
    }

    #[test]
    fn nothing_missing_when_all_installed() {
        let listing: String = APT_PACKAGES
            .iter()
            .map(|p| format!("{p} install ok installed\n"))
            .collect();
        assert!(missing_packages(APT_PACKAGES, &installed_packages(&listing)).is_empty());
    }

    #[test]
    fn toolchain_and_component_detection() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        let comps = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(comps, "rust-src"));
        assert!(has_component(comps, "rustc"));
        assert!(!has_component("rust-std-x86_64-unknown-linux-gnu\n", "rust-src"));
        assert!(!has_component("rust-srcx\n", "rust-src"));
    }

    #[test]
    fn bpf_linker_version_check() {
        assert!(bpf_linker_matches("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(bpf_linker_matches("bpf-linker 0.13.2\n", "0.13.0"));
        assert!(!bpf_linker_matches("bpf-linker 0.9.13\n", "0.13.0"));
        assert!(!bpf_linker_matches("", "0.13.0"));
        assert!(!bpf_linker_matches("something 0.13.0", "0.13.0"));
    }

    #[test]
    fn cargo_fuzz_version_check() {
        assert!(cargo_fuzz_matches("cargo-fuzz 0.13.2\n", "0.13.2"));
        assert!(!cargo_fuzz_matches("cargo-fuzz 0.12.0\n", "0.13.2"));
        assert!(!cargo_fuzz_matches("error: no such command: `fuzz`", "0.13.2"));
        assert!(!cargo_fuzz_matches("", "0.13.2"));
    }

    #[test]
    fn finds_mounts_by_type() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      bpf /sys/fs/bpf bpf rw 0 0\n\
                      none /mnt/with\\040space cgroup2 rw 0 0\n";
        assert_eq!(
            mount_point(mounts, "cgroup2").as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(mount_point(mounts, "bpf").as_deref(), Some("/sys/fs/bpf"));
        assert_eq!(mount_point("sysfs /sys sysfs rw 0 0\n", "bpf"), None);
        assert_eq!(
            mount_point("none /mnt/with\\040space cgroup2 rw 0 0\n", "cgroup2").as_deref(),
            Some("/mnt/with space")
        );
    }
}
