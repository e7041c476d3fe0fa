//! Loads the embedded eBPF object with its maps pinned under the node's pin directory (reused across restarts).
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::MapData,
    programs::{Program, ProgramError},
};
use skiff_common::{maps, sizes};

use super::pins::{PinDir, PinDirError};

/// How many lines of the verifier log an error shows.
const VERIFIER_LOG_TAIL: usize = 40;

/// Errors loading the eBPF object.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the embedded eBPF object is empty: the agent was built with AYA_BUILD_SKIP; rebuild without it \
         (needs bpf-linker and nightly rust-src, see `cargo xtask setup`)"
    )]
    EmptyObject,
    #[error(transparent)]
    PinDir(#[from] PinDirError),
    #[error("loading the eBPF object: {0}")]
    Object(#[source] EbpfError),
    #[error(
        "the kernel verifier rejected program {program}: {io_error}\n--- verifier log (last lines) ---\n{log_tail}"
    )]
    Verifier {
        program: String,
        io_error: std::io::Error,
        log_tail: String,
    },
    #[error("loading program {program}: {source}")]
    Program {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error("program {program} has a type the agent does not load")]
    UnsupportedProgram { program: String },
}

/// Map sizes (max entries); defaults from `skiff_common::sizes`. A size only applies when the map is created:
/// a map already pinned keeps its size (remove it with `skiff-agent cleanup` to resize).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSizes {
    pub services: u32,
    pub backends: u32,
    pub slots: u32,
    pub rev_nat: u32,
    pub conntrack: u32,
    pub sock_rev_nat: u32,
    pub affinity: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            services: sizes::SERVICES,
            backends: sizes::BACKENDS,
            slots: sizes::SLOTS,
            rev_nat: sizes::REV_NAT,
            conntrack: sizes::CONNTRACK,
            sock_rev_nat: sizes::SOCK_REV_NAT,
            affinity: sizes::AFFINITY,
        }
    }
}

impl MapSizes {
    fn entries(&self) -> [(&'static str, u32); 7] {
        [
            (maps::SERVICES, self.services),
            (maps::BACKENDS, self.backends),
            (maps::SLOTS, self.slots),
            (maps::REV_NAT, self.rev_nat),
            (maps::CONNTRACK, self.conntrack),
            (maps::SOCK_REV_NAT, self.sock_rev_nat),
            (maps::AFFINITY, self.affinity),
        ]
    }
}

/// Loads `object` with every Skiff map pinned in `pin` (existing pins are reused with their contents) and loads
/// every program into the kernel (attaching is `attach`'s job).
pub fn load(object: &[u8], pin: &PinDir, sizes: &MapSizes) -> Result<Ebpf, LoadError> {
    load_only(object, pin, sizes, None)
}

/// Like `load`, but loads only the named programs into the kernel when `only` is given.
pub fn load_only(
    object: &[u8],
    pin: &PinDir,
    sizes: &MapSizes,
    only: Option<&[&str]>,
) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::EmptyObject);
    }
    pin.prepare()?;
    let mut loader = EbpfLoader::new();
    for name in maps::ALL {
        loader.map_pin_path(name, pin.map(name));
    }
    for (name, size) in sizes.entries() {
        loader.map_max_entries(name, size);
    }
    let mut ebpf = loader.load(object).map_err(LoadError::Object)?;
    warn_on_resized_pins(&ebpf, sizes);
    load_programs(&mut ebpf, only)?;
    tracing::debug!(pin = %pin.path().display(), "eBPF object loaded");
    Ok(ebpf)
}

/// Loads only the map-free programs in `only` (e.g. `skiff_xdp_pass`) without touching the node's maps: the
/// object's maps are created minimal, pinned in a scratch directory and unpinned again right away, so a later
/// `proxy` for the node never reuses undersized maps.
pub fn load_standalone(object: &[u8], pin: &PinDir, only: &[&str]) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::EmptyObject);
    }
    pin.prepare()?;
    let scratch = pin.path().join(SCRATCH_DIR);
    std::fs::create_dir_all(&scratch).map_err(|source| PinDirError::Create {
        path: scratch.clone(),
        source,
    })?;
    let mut loader = EbpfLoader::new();
    for name in maps::ALL {
        loader.map_pin_path(name, scratch.join(name));
        loader.map_max_entries(name, 1);
    }
    // Keep the drop counters' shape (indexed by reason).
    loader.map_max_entries(maps::DROPS, skiff_common::DropReason::COUNT);
    let loaded = loader.load(object).map_err(LoadError::Object);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut ebpf = loaded?;
    load_programs(&mut ebpf, Some(only))?;
    Ok(ebpf)
}

/// Scratch pin directory of `load_standalone` (removed before it returns; `cleanup` removes leftovers).
pub const SCRATCH_DIR: &str = "scratch";

fn load_programs(ebpf: &mut Ebpf, only: Option<&[&str]>) -> Result<(), LoadError> {
    let names: Vec<String> = ebpf
        .programs()
        .map(|(n, _)| n.to_string())
        .filter(|n| only.is_none_or(|o| o.contains(&n.as_str())))
        .collect();
    for name in names {
        let prog = ebpf.program_mut(&name).expect("program listed by the object");
        load_program(&name, prog)?;
    }
    Ok(())
}

fn load_program(name: &str, prog: &mut Program) -> Result<(), LoadError> {
    let res = match prog {
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        _ => {
            return Err(LoadError::UnsupportedProgram {
                program: name.to_string(),
            });
        }
    };
    res.map_err(|e| match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program: name.to_string(),
            io_error,
            log_tail: tail(&verifier_log.to_string(), VERIFIER_LOG_TAIL),
        },
        source => LoadError::Program {
            program: name.to_string(),
            source,
        },
    })
}

/// The last `n` non-empty lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn warn_on_resized_pins(ebpf: &Ebpf, sizes: &MapSizes) {
    for (name, want) in sizes.entries() {
        let Some(map) = ebpf.map(name) else { continue };
        let have = map_data(map).and_then(|d| d.info().ok()).map(|i| i.max_entries());
        if let Some(have) = have
            && have != want
        {
            tracing::warn!(
                map = name,
                pinned = have,
                requested = want,
                "pinned map keeps its size; run `skiff-agent cleanup` first to resize"
            );
        }
    }
}

fn map_data(map: &aya::maps::Map) -> Option<&MapData> {
    use aya::maps::Map;
    match map {
        Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\n\nc\nd\n", 2), "c\nd");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn empty_object_is_a_clear_error() {
        let pin = PinDir::under(std::path::Path::new("/nonexistent"), "n").unwrap();
        let err = load(&[], &pin, &MapSizes::default()).unwrap_err();
        assert!(matches!(err, LoadError::EmptyObject));
        assert!(err.to_string().contains("AYA_BUILD_SKIP"));
    }
}
