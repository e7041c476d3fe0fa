//! The lab directory: `lab.json` (the plan), binaries, kubeconfigs (admin and one per node), logs, pid files,
//! control data and node state.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{
    kube::Kubectl,
    plan::{LabPlan, NodePlan},
    procs::Daemon,
};

/// A lab directory and the plan saved in it.
pub struct Lab {
    pub dir: PathBuf,
    pub plan: LabPlan,
}

impl Lab {
    fn plan_file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    /// The lab saved in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Lab>> {
        let f = Self::plan_file(dir);
        if !f.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let plan: LabPlan =
            serde_json::from_str(&text).with_context(|| format!("{}: not a lab plan", f.display()))?;
        Ok(Some(Lab {
            dir: dir.to_owned(),
            plan,
        }))
    }

    /// The lab in `dir`, or an error that says how to create one.
    pub fn require(dir: &Path) -> Result<Lab> {
        Self::load(dir)?.with_context(|| {
            format!(
                "no lab in {} (start one with `cargo xtask lab up`)",
                dir.display()
            )
        })
    }

    pub fn save(&self) -> Result<()> {
        for d in [self.bin_dir(), self.log_dir(), self.run_dir(), self.nodes_dir()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let f = Self::plan_file(&self.dir);
        std::fs::write(&f, serde_json::to_string_pretty(&self.plan)? + "\n")
            .with_context(|| format!("writing {}", f.display()))
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }
    pub fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// A node agent's own kubeconfig (`system:node:<name>`, a client certificate from the control CA), so
    /// node restriction applies to it.
    pub fn node_kubeconfig(&self, n: &NodePlan) -> PathBuf {
        self.run_dir().join(format!("{}.kubeconfig", n.name))
    }
    pub fn agent_bin(&self) -> PathBuf {
        self.bin_dir().join("skiff-agent")
    }
    pub fn control_bin(&self) -> PathBuf {
        self.bin_dir().join("skiff-control")
    }
    /// A node's agent state (pod sandboxes, logs, IPAM): runtime state, removed by `lab down`.
    pub fn node_state(&self, n: &NodePlan) -> PathBuf {
        self.nodes_dir().join(&n.name)
    }

    pub fn control(&self) -> Daemon {
        Daemon {
            pid_file: self.run_dir().join("skiff-control.pid"),
            log: self.log_dir().join("skiff-control.log"),
            marker: "skiff-control".into(),
        }
    }

    pub fn agent(&self, n: &NodePlan) -> Daemon {
        Daemon {
            pid_file: self.run_dir().join(format!("{}.pid", n.name)),
            log: self.log_dir().join(format!("{}.log", n.name)),
            marker: n.name.clone(),
        }
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            binary: self.bin_dir().join("kubectl"),
            kubeconfig: self.kubeconfig(),
        }
    }

    /// The lines a user pastes into their shell.
    pub fn env_lines(&self) -> String {
        format!(
            "export KUBECONFIG={}\nexport PATH={}:$PATH",
            self.kubeconfig().display(),
            self.bin_dir().display()
        )
    }
}
