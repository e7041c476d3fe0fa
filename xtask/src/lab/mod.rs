//! `cargo xtask lab`: a multi-node Skiff cluster on this machine, each node a network namespace.
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

mod demo;
mod etcd;
mod kube;
mod layout;
mod net;
mod ops;
mod plan;
mod procs;
mod teardown;
mod up;

use layout::Lab;
use plan::{Dataplane, LabPlan, MAX_NODES, StoreKind};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct LabArgs {
    #[command(subcommand)]
    command: Option<LabCommand>,
    #[command(flatten)]
    opts: LabOpts,
}

#[derive(Args, Clone)]
pub struct LabOpts {
    /// Lab directory: control data, kubeconfig, binaries, logs, pid files.
    #[arg(long, global = true, default_value = "/var/lib/skiff-lab")]
    data_dir: PathBuf,
    /// Number of nodes for a new lab (a lab that exists keeps its nodes; use `lab add-node`).
    #[arg(long, global = true, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=MAX_NODES as i64))]
    nodes: u32,
    /// Where skiff-control keeps its objects (etcd: a local etcd from Debian's etcd-server package).
    #[arg(long, global = true, value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// Which eBPF hooks serve ClusterIP traffic on the nodes.
    #[arg(long, global = true, value_enum, default_value_t = Dataplane::Both)]
    dataplane: Dataplane,
    /// Skip `cargo xtask setup` (the machine is provisioned already).
    #[arg(long, global = true)]
    no_setup: bool,
    /// Use prebuilt skiff-agent and skiff-control from this directory instead of a release build.
    #[arg(long, global = true, hide = true)]
    binaries: Option<PathBuf>,
    /// Prefix of node and namespace names.
    #[arg(long, global = true, hide = true, default_value = "skiff-lab-")]
    name_prefix: String,
    #[arg(long, global = true, hide = true, default_value_t = 6443)]
    api_port: u16,
    #[arg(long, global = true, hide = true, default_value_t = 10250)]
    kubelet_port: u16,
    #[arg(long, global = true, hide = true, default_value = "10.244.0.0/16")]
    pod_cidr: String,
    #[arg(long, global = true, hide = true, default_value = "10.96.0.0/16")]
    service_cidr: String,
    #[arg(long, global = true, hide = true, default_value = "10.99.0.0/24")]
    underlay: String,
    #[arg(long, global = true, hide = true, default_value = "10.99.0.192/27")]
    lb_pool: String,
    /// Seconds without a heartbeat before a node is Unknown and its endpoints are dropped.
    #[arg(long, global = true, default_value_t = plan::default_node_grace())]
    node_grace_seconds: u32,
    /// Seconds before the pods of an unreachable node are evicted (and replaced elsewhere).
    #[arg(long, global = true, default_value_t = plan::default_eviction())]
    eviction_seconds: u32,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Start the lab (provisioning and building what is missing) and print the kubeconfig export lines.
    Up,
    /// Stop the lab and remove every namespace, route, pin and process it created.
    Down {
        /// Also delete the lab directory (cluster state, logs, binaries).
        #[arg(long)]
        purge: bool,
    },
    /// Processes, nodes, pods, services and each node's dataplane.
    Status,
    /// Print the export lines for KUBECONFIG and PATH.
    Env,
    /// Show the log of a node's agent (or `control`, `etcd`).
    Logs {
        node: String,
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
    /// Add a node to the running lab.
    AddNode,
    /// Stop a node's agent (node failure).
    StopNode { node: String },
    /// Start a stopped node's agent again.
    StartNode { node: String },
    /// Deploy the demo and show requests spreading over its replicas.
    Demo,
}

impl LabOpts {
    fn new_plan(&self) -> LabPlan {
        LabPlan {
            prefix: self.name_prefix.clone(),
            nodes: (1..=self.nodes).collect(),
            dataplane: self.dataplane,
            store: self.store,
            api_port: self.api_port,
            kubelet_port: self.kubelet_port,
            pod_cidr: self.pod_cidr.clone(),
            service_cidr: self.service_cidr.clone(),
            underlay: self.underlay.clone(),
            lb_pool: self.lb_pool.clone(),
            node_grace_seconds: self.node_grace_seconds,
            eviction_seconds: self.eviction_seconds,
        }
    }

    /// The saved lab, or a new one from the options.
    fn lab(&self) -> Result<Lab> {
        if let Some(lab) = Lab::load(&self.data_dir)? {
            if lab.plan.dataplane != self.dataplane || lab.plan.store != self.store {
                eprintln!(
                    "note: the lab in {} keeps its dataplane ({}) and store; `lab down --purge` to start afresh",
                    self.data_dir.display(),
                    lab.plan.dataplane.as_str()
                );
            }
            return Ok(lab);
        }
        let plan = self.new_plan();
        plan.validate()?;
        Ok(Lab {
            dir: self.data_dir.clone(),
            plan,
        })
    }

    fn binaries(&self) -> up::Binaries {
        match &self.binaries {
            Some(d) => up::Binaries::Prebuilt(d.clone()),
            None => up::Binaries::Release,
        }
    }
}

pub fn run(args: LabArgs) -> Result<()> {
    let o = &args.opts;
    match args.command {
        None => {
            if o.binaries.is_none() && !o.no_setup {
                crate::setup::run()?;
            }
            let lab = o.lab()?;
            up::up(&lab, &o.binaries())?;
            demo::run(&lab)
        }
        Some(LabCommand::Up) => {
            if o.binaries.is_none() && !o.no_setup {
                crate::setup::run()?;
            }
            up::up(&o.lab()?, &o.binaries())
        }
        Some(LabCommand::Down { purge }) => match Lab::load(&o.data_dir)? {
            Some(lab) => ops::down(&lab, purge),
            None => bail!("no lab in {} (nothing to stop)", o.data_dir.display()),
        },
        Some(LabCommand::Status) => ops::status(&Lab::require(&o.data_dir)?),
        Some(LabCommand::Env) => {
            println!("{}", Lab::require(&o.data_dir)?.env_lines());
            Ok(())
        }
        Some(LabCommand::Logs { node, lines }) => ops::logs(&Lab::require(&o.data_dir)?, &node, lines),
        Some(LabCommand::AddNode) => ops::add_node(&mut Lab::require(&o.data_dir)?),
        Some(LabCommand::StopNode { node }) => ops::stop_node(&Lab::require(&o.data_dir)?, &node),
        Some(LabCommand::StartNode { node }) => ops::start_node(&Lab::require(&o.data_dir)?, &node),
        Some(LabCommand::Demo) => demo::run(&Lab::require(&o.data_dir)?),
    }
}
