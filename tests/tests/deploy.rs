//! deploy/: the Helm chart lints and renders with real helm, the rendered and plain manifests carry exactly what the
//! proxy needs (kinds, RBAC verbs, capabilities, host mounts), their settings parse as skiff-agent flags, the image
//! build script matches `cargo xtask setup`, and kubectl v1.35 accepts the manifests with --dry-run=server against
//! skiff-control.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::serde::Deserialize;
use serde_yaml::Value;
use tests::k8s_tools;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/skiff")
}

fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn helm(args: &[&str]) -> Command {
    let mut c = Command::new(k8s_tools::helm());
    // Keep helm's caches and config out of the user's home.
    let home = repo().join("target/tools/skiff-ds-helm-home");
    c.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"));
    c.env("HELM_DATA_HOME", home.join("data"));
    c
}

fn render(set: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "skiff",
        chart.to_str().unwrap(),
        "--namespace",
        "kube-system",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    docs(&ok(&mut helm(&args)))
}

fn plain() -> Vec<Value> {
    ["rbac.yaml", "configmap.yaml", "daemonset.yaml"]
        .iter()
        .flat_map(|f| docs(&std::fs::read_to_string(repo().join("deploy").join(f)).unwrap()))
        .collect()
}

fn kind<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objs.iter().filter(|o| o["kind"].as_str() == Some(kind));
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn container<'a>(ds: &'a Value, name: &str, list: &str) -> &'a Value {
    ds["spec"]["template"]["spec"][list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

/// The properties every rendering of the manifests must have.
fn check_objects(objs: &[Value]) {
    let kinds: BTreeSet<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        set(&[
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ])
    );
    for o in objs
        .iter()
        .filter(|o| !o["kind"].as_str().unwrap().starts_with("Cluster"))
    {
        assert_eq!(o["metadata"]["namespace"].as_str(), Some("kube-system"), "{o:?}");
    }

    // RBAC: exactly the proxy's needs.
    let rules: BTreeSet<(String, String, String)> = kind(objs, "ClusterRole")["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let (groups, resources, verbs) = (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            );
            let mut out = Vec::new();
            for g in &groups {
                for res in &resources {
                    for v in &verbs {
                        out.push((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
            out
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("", "services", "list"),
        ("", "services", "watch"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(rules, want, "RBAC must be exactly the proxy's");
    let binding = kind(objs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"].as_str(), Some("skiff-agent"));
    assert_eq!(
        binding["subjects"][0]["name"],
        kind(objs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some("kube-system"));

    // DaemonSet.
    let ds = kind(objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["priorityClassName"].as_str(), Some("system-node-critical"));
    assert_eq!(pod["serviceAccountName"].as_str(), Some("skiff-agent"));
    let tolerations = pod["tolerations"].as_sequence().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_null()),
        "must tolerate every taint: {tolerations:?}"
    );
    assert_eq!(
        ds["spec"]["updateStrategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(1)
    );
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    );

    let agent = container(ds, "skiff-agent", "containers");
    assert_eq!(strings(&agent["command"]), ["skiff-agent", "--proxy-only"]);
    let node_name = agent["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    assert_eq!(
        agent["envFrom"][0]["configMapRef"]["name"],
        kind(objs, "ConfigMap")["metadata"]["name"]
    );
    let sc = &agent["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&[
            "BPF",
            "PERFMON",
            "NET_ADMIN",
            "SYS_ADMIN",
            "SYS_RESOURCE",
            "NET_RAW"
        ])
    );
    assert_eq!(agent["livenessProbe"]["httpGet"]["port"].as_u64(), Some(10256));
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"].as_str(), Some("/livez"));

    // Host mounts: bpffs (shared with the host) and the host's cgroup tree.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let host_path = |vol: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(vol))
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_else(|| panic!("no hostPath volume {vol}"))
    };
    let mount = |c: &Value, vol: &str| -> Value {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(vol))
            .unwrap_or_else(|| panic!("{vol} not mounted"))
            .clone()
    };
    assert_eq!(host_path("bpffs"), "/sys/fs/bpf");
    assert_eq!(host_path("host-cgroup"), "/sys/fs/cgroup");
    let bpffs = mount(agent, "bpffs");
    assert_eq!(bpffs["mountPath"].as_str(), Some("/sys/fs/bpf"));
    assert_eq!(bpffs["mountPropagation"].as_str(), Some("HostToContainer"));
    let cgroup = mount(agent, "host-cgroup");
    let configmap = kind(objs, "ConfigMap");
    assert_eq!(
        cgroup["mountPath"], configmap["data"]["SKIFF_CGROUP"],
        "--cgroup must point at the mount"
    );
    // The privileged init container only mounts bpffs, with Bidirectional propagation so the host sees it.
    let init = container(ds, "mount-bpffs", "initContainers");
    assert_eq!(init["securityContext"]["privileged"].as_bool(), Some(true));
    assert_eq!(
        mount(init, "bpffs")["mountPropagation"].as_str(),
        Some("Bidirectional")
    );
    assert!(
        strings(&init["command"])
            .join(" ")
            .contains("mount -t bpf bpf /sys/fs/bpf")
    );

    // Every ConfigMap setting is a skiff-agent flag with a valid value.
    let env: Vec<(String, String)> = configmap["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().expect("string values").to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = skiff_agent::cli::proxy_args_with_env(&pairs, &["--proxy-only", "--node-name", "n1"])
        .unwrap_or_else(|e| panic!("the ConfigMap does not parse as skiff-agent flags: {e}"));
    assert_eq!(args.healthz().map(|a| a.port()), Some(10256));
}

#[test]
fn helm_lint_passes() {
    let out = ok(&mut helm(&["lint", "--strict", chart().to_str().unwrap()]));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_rendered_chart_has_exactly_what_the_proxy_needs() {
    check_objects(&render(&[]));
}

#[test]
fn the_plain_manifests_have_exactly_what_the_proxy_needs() {
    check_objects(&plain());
}

#[test]
fn chart_defaults_match_the_plain_manifests() {
    let (chart, plain) = (render(&[]), plain());
    assert_eq!(
        kind(&chart, "ConfigMap")["data"],
        kind(&plain, "ConfigMap")["data"]
    );
    assert_eq!(
        kind(&chart, "ClusterRole")["rules"],
        kind(&plain, "ClusterRole")["rules"]
    );
    let pod = |objs: &[Value]| kind(objs, "DaemonSet")["spec"]["template"]["spec"].clone();
    let (a, b) = (pod(&chart), pod(&plain));
    for field in [
        "hostNetwork",
        "priorityClassName",
        "tolerations",
        "volumes",
        "dnsPolicy",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let c = |p: &Value| p["containers"][0].clone();
    for field in [
        "securityContext",
        "volumeMounts",
        "command",
        "livenessProbe",
        "resources",
    ] {
        assert_eq!(c(&a)[field], c(&b)[field], "{field}");
    }
}

#[test]
fn values_reach_the_agent() {
    let objs = render(&[
        "mode=tc",
        "uplink=eth1",
        "xdpMode=generic",
        "mapSizes.conntrack=1048576",
        "cleanupKubeProxy=true",
        "podInterfaces={lxc*,tap*}",
        "image.repository=registry.example/skiff-agent",
        "image.tag=v9",
        "metrics.bindAddress=0.0.0.0",
    ]);
    let data = &kind(&objs, "ConfigMap")["data"];
    assert_eq!(data["SKIFF_MODE"].as_str(), Some("tc"));
    assert_eq!(data["SKIFF_UPLINK"].as_str(), Some("eth1"));
    assert_eq!(data["SKIFF_CT_SIZE"].as_str(), Some("1048576"));
    assert_eq!(data["SKIFF_POD_IFACES"].as_str(), Some("lxc*,tap*"));
    assert_eq!(data["SKIFF_METRICS_ADDR"].as_str(), Some("0.0.0.0:9965"));
    assert_eq!(data["SKIFF_CLEANUP_KUBE_PROXY"].as_str(), Some("true"));
    let ds = kind(&objs, "DaemonSet");
    assert_eq!(
        container(ds, "skiff-agent", "containers")["image"].as_str(),
        Some("registry.example/skiff-agent:v9")
    );
    check_objects(&objs);

    let bad = output(&mut helm(&[
        "template",
        "skiff",
        chart().to_str().unwrap(),
        "--set",
        "mode=fast",
    ]));
    assert!(!bad.status.success(), "an unknown mode must not render");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mode must be socket, tc or both"));
}

/// `const NAME: &str = "value";` from Rust source text.
fn rust_const(src: &str, name: &str) -> String {
    let line = src
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("const {name}: &str = ")))
        .unwrap_or_else(|| panic!("no const {name}"));
    line.split('"').nth(1).unwrap().to_string()
}

/// `NAME=value` from shell source text.
fn shell_var(src: &str, name: &str) -> String {
    let line = src
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}="));
    line.split_once('=').unwrap().1.trim_matches('"').to_string()
}

#[test]
fn the_image_build_script_matches_xtask_setup() {
    let setup = std::fs::read_to_string(repo().join("xtask/src/setup.rs")).unwrap();
    let script_path = repo().join("deploy/build-agent.sh");
    let script = std::fs::read_to_string(&script_path).unwrap();
    assert_eq!(
        shell_var(&script, "BPF_LINKER_VERSION"),
        rust_const(&setup, "BPF_LINKER_VERSION")
    );
    assert_eq!(
        shell_var(&script, "LLVM_PREFIX"),
        rust_const(&setup, "LLVM_PREFIX")
    );
    for pkg in shell_var(&script, "APT_BUILD_PACKAGES").split_whitespace() {
        assert!(
            setup.contains(&format!("\"{pkg}\"")),
            "{pkg} is not in xtask's APT_PACKAGES"
        );
    }
    for flag in [
        "\"--no-default-features\"",
        "\"llvm-22\"",
        "\"rust-src\"",
        "\"--locked\"",
    ] {
        assert!(setup.contains(flag), "xtask setup no longer passes {flag}");
    }
    let commands = ok(Command::new("sh")
        .arg(&script_path)
        .arg("all")
        .env("SKIFF_BUILD_DRY_RUN", "1"));
    for expected in [
        "+ rustup toolchain install nightly --profile minimal --component rust-src",
        "+ env LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --no-default-features --features llvm-22 \
         --version 0.13.0 --locked --force",
        "+ cargo build --release --locked -p agent --bin skiff-agent",
    ] {
        assert!(
            commands.lines().any(|l| l == expected),
            "missing `{expected}` in:\n{commands}"
        );
    }
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("RUN build-agent.sh deps"),
        "the Dockerfile must use the script"
    );
    assert!(dockerfile.contains("RUN build-agent.sh build"));
    assert!(dockerfile.contains("COPY deploy/build-agent.sh"));
}

#[test]
fn the_image_build_steps_run_here() {
    // The same script the Dockerfile runs: its toolchain checks pass on a machine `cargo xtask setup` prepared (so
    // nothing is installed), and its build produces the agent (dev profile: the workspace build already did the
    // work, so this is quick).
    let script = repo().join("deploy/build-agent.sh");
    let out = ok(Command::new("sh").arg(&script).arg("deps").current_dir(repo()));
    assert!(
        out.trim().is_empty(),
        "setup was incomplete; the script had to run:\n{out}"
    );
    let out = ok(Command::new("sh")
        .arg(&script)
        .arg("build")
        .env("SKIFF_BUILD_PROFILE", "dev")
        .current_dir(repo()));
    assert!(
        out.contains("+ cargo build --locked -p agent --bin skiff-agent"),
        "{out}"
    );
    assert!(repo().join("target/debug/skiff-agent").is_file());
}

/// skiff-control on a loopback port with a temporary data directory; killed on drop.
struct Control {
    child: std::process::Child,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Control {
    fn start() -> Control {
        let bin = std::env::var_os("SKIFF_CONTROL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/debug/skiff-control"));
        assert!(
            bin.is_file(),
            "{} missing: run `cargo build` first",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!("skiff-ds-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let child = Command::new(&bin)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0", "--insecure-http", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start skiff-control");
        let control = Control {
            child,
            dir,
            kubeconfig,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !std::fs::read_to_string(&control.kubeconfig).is_ok_and(|t| t.contains("server: ")) {
            assert!(
                Instant::now() < deadline,
                "skiff-control wrote no kubeconfig within 15s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        control
    }

    fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(k8s_tools::kubectl());
        c.args(args)
            .arg("--request-timeout=10s")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir);
        c
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kinds of the manifests skiff-control does not serve yet. When it learns them, this test fails: empty the list.
const NOT_SERVED_BY_CONTROL: &[&str] = &[];

#[test]
fn kubectl_server_dry_run_accepts_the_manifests() {
    let control = Control::start();
    // kube-system may not exist on a fresh server (`kubectl create namespace` sends protobuf; apply sends JSON).
    let ns = control.dir.join("namespace.yaml");
    std::fs::write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-system\n",
    )
    .unwrap();
    ok(&mut control.kubectl(&["apply", "-f", ns.to_str().unwrap()]));
    let served = ok(&mut control.kubectl(&["api-resources", "--no-headers", "-o", "name"]));
    let served: BTreeSet<&str> = served.lines().collect();
    let resource_of = |kind: &str| match kind {
        "ClusterRole" => "clusterroles.rbac.authorization.k8s.io",
        "ClusterRoleBinding" => "clusterrolebindings.rbac.authorization.k8s.io",
        "ConfigMap" => "configmaps",
        "DaemonSet" => "daemonsets.apps",
        "ServiceAccount" => "serviceaccounts",
        other => panic!("unexpected kind {other}"),
    };
    for (name, objs) in [("helm template", render(&[])), ("deploy/", plain())] {
        let mut applicable = Vec::new();
        for o in objs {
            let k = o["kind"].as_str().unwrap().to_string();
            let is_served = served.contains(resource_of(&k));
            assert_eq!(
                is_served,
                !NOT_SERVED_BY_CONTROL.contains(&k.as_str()),
                "skiff-control serving {k} changed: update NOT_SERVED_BY_CONTROL"
            );
            if is_served {
                applicable.push(o);
            }
        }
        let file = control.dir.join("manifests.yaml");
        let text: String = applicable
            .iter()
            .map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap()))
            .collect();
        std::fs::write(&file, text).unwrap();
        let out = ok(&mut control.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]));
        for k in [
            "serviceaccount/skiff-agent",
            "configmap/skiff-agent",
            "daemonset.apps/skiff-agent",
            "clusterrole.rbac.authorization.k8s.io/skiff-agent",
            "clusterrolebinding.rbac.authorization.k8s.io/skiff-agent",
        ] {
            assert!(
                out.contains(&format!("{k} created (server dry run)")),
                "{name}: {out}"
            );
        }
        // Dry run: nothing stored.
        let left = ok(&mut control.kubectl(&[
            "get",
            "daemonsets,configmaps,serviceaccounts,clusterroles,clusterrolebindings",
            "-n",
            "kube-system",
            "-o",
            "name",
        ]));
        assert!(
            !left.contains("skiff-agent"),
            "{name}: dry run stored objects: {left}"
        );
    }
}

/// A network namespace for one test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ok(Command::new("ip").args(["netns", "add", &name]));
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn cleanup_kube_proxy_removes_its_rules_and_only_those() {
    // Root only (network namespaces); runs against rules created inside a namespace of its own.
    let agent = std::env::var_os("SKIFF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug/skiff-agent"));
    assert!(
        agent.is_file(),
        "{} missing: run `cargo build` first",
        agent.display()
    );
    let ns = Netns::new(format!("skiff-ds-kp-{}", std::process::id()));
    for rule in [
        &["iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES"][..],
        &["iptables-nft", "-t", "nat", "-N", "KUBE-SVC-ABC"],
        &[
            "iptables-nft",
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-d",
            "10.96.0.1/32",
            "-j",
            "KUBE-SVC-ABC",
        ],
        &[
            "iptables-nft",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        &["iptables-nft", "-t", "filter", "-N", "KUBE-FIREWALL"],
        &[
            "iptables-nft",
            "-t",
            "filter",
            "-A",
            "INPUT",
            "-j",
            "KUBE-FIREWALL",
        ],
        &[
            "iptables-nft",
            "-t",
            "filter",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "ACCEPT",
        ],
        &["iptables-legacy", "-t", "filter", "-N", "KUBE-FORWARD"],
        &[
            "iptables-legacy",
            "-t",
            "filter",
            "-A",
            "FORWARD",
            "-j",
            "KUBE-FORWARD",
        ],
        &["ip6tables-nft", "-t", "mangle", "-N", "KUBE-PROXY-CANARY"],
        &["nft", "add", "table", "ip", "kube-proxy"],
        &["nft", "add", "table", "ip6", "kube-proxy"],
        &["nft", "add", "table", "inet", "mine"],
    ] {
        ok(&mut ns.exec(rule));
    }
    let first = ok(&mut ns.exec(&[agent.to_str().unwrap(), "cleanup-kube-proxy"]));
    assert!(
        first.contains("iptables-nft-save nat: removed 2 chains and 1 jump rules"),
        "{first}"
    );
    assert!(
        first.contains("iptables-legacy-save filter: removed 1 chains and 1 jump rules"),
        "{first}"
    );
    assert!(
        first.contains("ip6tables-nft-save mangle: removed 1 chains"),
        "{first}"
    );
    assert!(first.contains("nft: deleted table ip kube-proxy"), "{first}");

    let nat = ok(&mut ns.exec(&["iptables-nft-save", "-t", "nat"]));
    assert!(!nat.contains("KUBE-"), "{nat}");
    let filter = ok(&mut ns.exec(&["iptables-nft-save", "-t", "filter"]));
    assert!(
        filter.contains("-A INPUT -j KUBE-FIREWALL"),
        "the kubelet's chain must stay:\n{filter}"
    );
    assert!(
        filter.contains("--dport 22 -j ACCEPT"),
        "other rules must stay:\n{filter}"
    );
    let legacy = ok(&mut ns.exec(&["iptables-legacy-save", "-t", "filter"]));
    assert!(!legacy.contains("KUBE-"), "{legacy}");
    let tables = ok(&mut ns.exec(&["nft", "list", "tables"]));
    assert!(!tables.contains("kube-proxy"), "{tables}");
    assert!(tables.contains("table inet mine"), "{tables}");

    let again = ok(&mut ns.exec(&[agent.to_str().unwrap(), "cleanup-kube-proxy"]));
    assert_eq!(again.trim(), "no kube-proxy rules found", "not idempotent");
}
