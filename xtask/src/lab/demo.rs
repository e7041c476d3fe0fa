//! `lab demo`: an agnhost netexec Deployment behind a ClusterIP and a NodePort Service, and requests from client
//! namespaces spreading over its replicas.
use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    kube::{Kubectl, wait_for},
    layout::Lab,
    plan::NodePlan,
    teardown,
};
use crate::{
    cmd,
    progress::{Outcome, Progress},
};

pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const REPLICAS: usize = 3;
const REQUESTS: usize = 30;

/// The demo's objects: Deployment, ClusterIP and NodePort Services, and a client pod on `client_node`.
pub fn manifest(client_node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: skiff-demo, namespace: default}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: skiff-demo}}}}
  template:
    metadata: {{labels: {{app: skiff-demo}}}}
    spec:
      containers:
      - name: netexec
        image: {IMAGE}
        args: [netexec, --http-port=8080]
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: skiff-demo, namespace: default}}
spec:
  selector: {{app: skiff-demo}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: skiff-demo-nodeport, namespace: default}}
spec:
  type: NodePort
  selector: {{app: skiff-demo}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: skiff-demo-client, namespace: default, labels: {{app: skiff-demo-client}}}}
spec:
  nodeName: {client_node}
  containers:
  - name: client
    image: {IMAGE}
    args: [pause]
"#
    )
}

/// Counts answers per backend name.
pub fn tally<'a>(answers: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.trim().to_string()).or_insert(0) += 1;
    }
    m
}

fn show_tally(title: &str, t: &BTreeMap<String, usize>) {
    println!("  {title}");
    for (host, n) in t {
        println!("    {host:<40} {n:>3} {}", "#".repeat(*n));
    }
}

/// Deploys the demo and shows the requests spreading. Fails when not every replica answers through both paths.
pub fn run(lab: &Lab) -> Result<()> {
    let k = lab.kubectl();
    let client_node = lab
        .plan
        .all_nodes()
        .into_iter()
        .next()
        .context("the lab has no nodes")?;
    let mut p = Progress::new(5);
    p.run("apply the demo", |_| {
        k.apply(&lab.dir, &manifest(&client_node.name))?;
        Ok(Outcome::Ready(
            "Deployment skiff-demo, Services skiff-demo and skiff-demo-nodeport".into(),
        ))
    })?;
    let replicas = std::cell::RefCell::new(Vec::new());
    p.run("replicas Ready", |_| {
        *replicas.borrow_mut() = wait_replicas(&k)?;
        Ok(Outcome::Ready(replicas.borrow().join(", ")))
    })?;
    let replicas = replicas.into_inner();
    p.run("endpoints", |_| {
        let ready = wait_for(Duration::from_secs(60), || {
            let eps = k.get(
                &["endpointslices", "-l", "kubernetes.io/service-name=skiff-demo"],
                "{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
            );
            (eps.split_whitespace().count() == REPLICAS).then_some(eps)
        })
        .context("the EndpointSlices of skiff-demo did not list 3 ready endpoints within 60 s (is skiff-control's EndpointSlice controller running?)")?;
        Ok(Outcome::Ready(ready))
    })?;
    let vip = k.get(&["service", "skiff-demo"], "{.spec.clusterIP}");
    let node_port = k.get(&["service", "skiff-demo-nodeport"], "{.spec.ports[0].nodePort}");
    let mut via_cluster_ip = BTreeMap::new();
    p.run(&format!("ClusterIP {vip}:80 from pod skiff-demo-client"), |_| {
        wait_pod_ready(&k, "skiff-demo-client")?;
        let url = format!("http://{vip}/hostname");
        via_cluster_ip = spread(&replicas, || {
            from_pod(lab, &k, &client_node, "skiff-demo-client", &url)
        })?;
        Ok(Outcome::Ready(format!(
            "{} replicas answered",
            via_cluster_ip.len()
        )))
    })?;
    let mut via_node_port = BTreeMap::new();
    p.run(
        &format!("NodePort {node_port} from namespace {}", lab.plan.client_netns()),
        |_| {
            let nodes = lab.plan.all_nodes();
            let mut i = 0;
            via_node_port = spread(&replicas, || {
                let n = &nodes[i % nodes.len()];
                i += 1;
                from_netns(
                    &lab.plan.client_netns(),
                    &format!("http://{}:{node_port}/hostname", n.ip),
                )
            })?;
            Ok(Outcome::Ready(format!(
                "{} replicas answered",
                via_node_port.len()
            )))
        },
    )?;
    println!("\n{REQUESTS} requests each:");
    show_tally(
        &format!(
            "http://{vip}/hostname (ClusterIP, from pod skiff-demo-client on {})",
            client_node.name
        ),
        &via_cluster_ip,
    );
    show_tally(
        &format!(
            "http://<node IP>:{node_port}/hostname (NodePort, every node in turn, from ip netns {})",
            lab.plan.client_netns()
        ),
        &via_node_port,
    );
    println!(
        "\nTry it yourself:\n  ip netns exec {} curl http://{}:{node_port}/hostname\n  kubectl get pods -o wide; kubectl scale deployment skiff-demo --replicas=5",
        lab.plan.client_netns(),
        client_node.ip
    );
    Ok(())
}

/// Sends requests until every replica answered at least once (bounded), then returns the tally of `REQUESTS`.
fn spread(
    replicas: &[String],
    mut request: impl FnMut() -> Result<String>,
) -> Result<BTreeMap<String, usize>> {
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..REQUESTS * 4 {
        match request() {
            Ok(a) => answers.push(a),
            Err(e) => errors.push(format!("{e:#}")),
        }
        let t = tally(answers.iter().map(String::as_str));
        if answers.len() >= REQUESTS && replicas.iter().all(|r| t.contains_key(r)) {
            return Ok(tally(
                answers[answers.len() - REQUESTS..].iter().map(String::as_str),
            ));
        }
        if errors.len() > REQUESTS {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "not every replica answered: got {:?}; last errors: {:?}",
        tally(answers.iter().map(String::as_str)),
        errors.iter().rev().take(3).collect::<Vec<_>>()
    )
}

fn wait_replicas(k: &Kubectl) -> Result<Vec<String>> {
    let any = wait_for(Duration::from_secs(30), || {
        (!k.get(&["pods", "-l", "app=skiff-demo"], "{.items[*].metadata.name}")
            .is_empty())
        .then_some(())
    });
    if any.is_none() {
        bail!(
            "the Deployment created no pods within 30 s (is skiff-control's Deployment/ReplicaSet controller running?)"
        );
    }
    wait_for(Duration::from_secs(120), || {
        let names = k.get(
            &["pods", "-l", "app=skiff-demo", "--field-selector=status.phase=Running"],
            "{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        );
        let ready: Vec<String> = names
            .lines()
            .filter_map(|l| l.strip_suffix(" True").map(str::to_string))
            .collect();
        (ready.len() == REPLICAS).then_some(ready)
    })
    .context("the demo replicas were not all Ready within 120 s (`kubectl get pods -o wide`, `cargo xtask lab logs NODE`)")
}

fn wait_pod_ready(k: &Kubectl, name: &str) -> Result<()> {
    wait_for(Duration::from_secs(60), || {
        (k.get(
            &["pod", name],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    })
    .with_context(|| format!("pod {name} not Ready within 60 s"))
}

/// Runs curl in a pod's network namespace, inside its container's cgroup (so the socket hooks see it).
pub fn from_pod(lab: &Lab, k: &Kubectl, node: &NodePlan, pod: &str, url: &str) -> Result<String> {
    let uid = k.get(&["pod", pod], "{.metadata.uid}");
    let dir = lab.node_state(node).join("pods").join(&uid);
    let record = std::fs::read_to_string(dir.join("sandbox.json"))
        .with_context(|| format!("reading the sandbox of {pod} in {}", dir.display()))?;
    let pid = teardown::recorded_pid(&record).context("no sandbox pid")?;
    let container = k.get(&["pod", pod], "{.spec.containers[0].name}");
    let cgroup = teardown::node_cgroup(&node.name)
        .join("pods")
        .join(format!("pod{uid}"))
        .join(container);
    let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cgroup.display());
    cmd::output(
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "--", "sh", "-c", &script, "sh"])
            .args(["curl", "-sf", "-m", "2", url]),
    )
}

/// Runs curl in a named network namespace.
pub fn from_netns(netns: &str, url: &str) -> Result<String> {
    cmd::output(Command::new("ip").args(["netns", "exec", netns, "curl", "-sf", "-m", "2", url]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_trimmed_answers() {
        let t = tally(["a\n", "b", "a", " c "]);
        assert_eq!(t.get("a"), Some(&2));
        assert_eq!(t.get("c"), Some(&1));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn manifest_pins_the_client_and_uses_agnhost_netexec() {
        let m = manifest("skiff-lab-node1");
        assert!(m.contains("nodeName: skiff-lab-node1"));
        assert!(m.contains("args: [netexec, --http-port=8080]"));
        assert!(m.contains("type: NodePort"));
        assert!(m.contains("replicas: 3"));
    }
}
