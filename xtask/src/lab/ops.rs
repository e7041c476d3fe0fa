//! The lab's day-to-day commands: down, status, env, logs, add-node, stop-node and start-node.
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{etcd, layout::Lab, net, procs, teardown, up};
use crate::progress::{Outcome, Progress};

const AGENT_GRACE: Duration = Duration::from_secs(15);

/// Stops every lab process and removes every namespace, route, pin and cgroup the lab created; keeps the control
/// data (so `lab up` brings the cluster back) unless `purge`.
pub fn down(lab: &Lab, purge: bool) -> Result<()> {
    up::preflight()?;
    let nodes = lab.plan.all_nodes();
    let mut p = Progress::new(5);
    p.run("agents", |_| {
        let stopped = nodes.iter().filter(|n| lab.agent(n).stop(AGENT_GRACE)).count();
        Ok(Outcome::Ready(format!("{stopped} stopped")))
    })?;
    p.run("skiff-control", |_| {
        let stopped = lab.control().stop(Duration::from_secs(10));
        let etcd = etcd::daemon(lab).stop(Duration::from_secs(10));
        Ok(Outcome::Ready(match (stopped, etcd) {
            (true, true) => "stopped (and etcd)".into(),
            (true, false) => "stopped".into(),
            (false, _) => "not running".into(),
        }))
    })?;
    p.run("pods, cgroups and pins", |_| {
        for n in &nodes {
            teardown::remove_node_leftovers(lab, n)?;
        }
        Ok(Outcome::Done)
    })?;
    p.run("lab network", |_| {
        let mut removed = 0;
        for ns in lab.plan.namespaces() {
            removed += usize::from(net::delete_netns(&ns)?);
        }
        let routes = net::remove_guards(&lab.plan)?;
        Ok(Outcome::Ready(format!(
            "{removed} namespaces and {routes} routes removed"
        )))
    })?;
    p.run("state", |_| {
        if purge {
            std::fs::remove_dir_all(&lab.dir).with_context(|| format!("removing {}", lab.dir.display()))?;
            Ok(Outcome::Ready(format!("{} removed", lab.dir.display())))
        } else {
            Ok(Outcome::Ready(format!(
                "kept in {} (`lab up` brings the cluster back; `lab down --purge` deletes it)",
                lab.dir.display()
            )))
        }
    })?;
    Ok(())
}

/// Processes, nodes, pods, services and each node's dataplane.
pub fn status(lab: &Lab) -> Result<()> {
    println!(
        "lab {} ({} nodes, dataplane {})",
        lab.dir.display(),
        lab.plan.nodes.len(),
        lab.plan.dataplane.as_str()
    );
    let show = |name: &str, pid: Option<i32>| match pid {
        Some(pid) => println!("  {name:<24} running (pid {pid})"),
        None => println!("  {name:<24} stopped"),
    };
    show("skiff-control", lab.control().pid());
    for n in lab.plan.all_nodes() {
        show(&n.name, lab.agent(&n).pid());
    }
    if lab.control().pid().is_none() {
        println!("skiff-control is not running: `cargo xtask lab up` starts the lab");
        return Ok(());
    }
    let k = lab.kubectl();
    for args in [
        &["get", "nodes", "-o", "wide"][..],
        &["get", "pods", "-A", "-o", "wide"],
        &["get", "services", "-A"],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        k.show(args)?;
    }
    for n in lab.plan.all_nodes() {
        println!("\n$ skiff-agent inspect services --node-name {}", n.name);
        if let Err(e) = crate::cmd::run(std::process::Command::new(lab.agent_bin()).args([
            "inspect",
            "--node-name",
            &n.name,
            "services",
        ])) {
            println!("  (no dataplane state: {e:#})");
        }
    }
    Ok(())
}

/// The log of a node's agent, or of `control` / `etcd`.
pub fn logs(lab: &Lab, node: &str, lines: usize) -> Result<()> {
    let log = match node {
        "control" | "skiff-control" => lab.control().log,
        "etcd" => etcd::daemon(lab).log,
        _ => lab.agent(&find(lab, node)?).log,
    };
    println!("==> {} <==\n{}", log.display(), procs::tail(&log, lines));
    Ok(())
}

fn find(lab: &Lab, node: &str) -> Result<super::plan::NodePlan> {
    lab.plan.find(node).with_context(|| {
        let names: Vec<String> = lab.plan.all_nodes().into_iter().map(|n| n.name).collect();
        format!("no lab node {node:?} (nodes: {})", names.join(", "))
    })
}

/// Stops a node's agent (SIGTERM): the node stops heartbeating and goes NotReady; its pods keep running.
pub fn stop_node(lab: &Lab, node: &str) -> Result<()> {
    let n = find(lab, node)?;
    if lab.agent(&n).stop(AGENT_GRACE) {
        println!(
            "stopped the agent of {} (its pods keep running; the node turns NotReady once its Lease expires)",
            n.name
        );
    } else {
        println!("the agent of {} was not running", n.name);
    }
    Ok(())
}

/// Starts a stopped node's agent again and waits until the node is Ready.
pub fn start_node(lab: &Lab, node: &str) -> Result<()> {
    up::preflight()?;
    let n = find(lab, node)?;
    if lab.control().pid().is_none() {
        bail!("skiff-control is not running: start the lab with `cargo xtask lab up`");
    }
    let mut p = Progress::new(2);
    p.run(&format!("agent {}", n.name), |_| up::start_agent(lab, &n))?;
    p.run("node Ready", |_| up::wait_ready(lab, std::slice::from_ref(&n)))
}

/// Adds one node to a running lab.
pub fn add_node(lab: &mut Lab) -> Result<()> {
    up::preflight()?;
    if lab.control().pid().is_none() {
        bail!("skiff-control is not running: start the lab with `cargo xtask lab up`");
    }
    let number = lab.plan.next_node();
    lab.plan.nodes.push(number);
    lab.plan.validate()?;
    let n = lab.plan.node(number);
    lab.save()?;
    let mut p = Progress::new(3);
    p.run(&format!("namespace {}", n.name), |_| {
        net::create_node(&lab.plan, &n)?;
        Ok(Outcome::Done)
    })?;
    p.run(&format!("agent {}", n.name), |_| up::start_agent(lab, &n))?;
    p.run("node Ready", |_| up::wait_ready(lab, std::slice::from_ref(&n)))
}
