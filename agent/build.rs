//! Builds the eBPF object (crate `skiff-ebpf`, in ../ebpf/programs) with aya-build; the agent embeds it.
//! `AYA_BUILD_SKIP=1` skips that (pure-logic unit tests on machines without bpf-linker) and embeds an empty object,
//! which the loader rejects with a clear error. Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) skip it the same way:
//! the fuzz targets use only the agent's pure logic, and the instrumentation flags must not reach the eBPF build.
use std::{env, fs, path::PathBuf};

fn main() -> aya_build::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../ebpf/programs");
    let ebpf_dir = ebpf_dir.to_str().expect("workspace path is UTF-8");
    // The object also depends on the shared map types.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../ebpf/common/src").display()
    );
    let fuzzing = env::var_os("CARGO_CFG_FUZZING").is_some();
    if !fuzzing {
        build_ebpf(ebpf_dir)?;
    }
    let object = PathBuf::from(env::var("OUT_DIR")?).join("skiff");
    if !object.exists() {
        fs::write(&object, [])?;
    }
    Ok(())
}

fn build_ebpf(ebpf_dir: &str) -> aya_build::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "skiff-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
