//! A two-node test cluster in network namespaces with backends, Service manifests and the agent under test.
pub mod agent;
pub mod control;
pub mod manifests;
pub mod topology;
pub mod workload;

use std::{
    fs,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use agent::{Agent, InCluster, Mode};
use manifests::{Endpoint, Port, Service};
use topology::{BACKENDS, CGROUP1, NODE1, Pod, Topology};
use workload::Client;

use crate::netns::{Proc, wait_for};

/// ClusterIP of `web` (TCP 80 -> 8080 with nodePort 30080, UDP 53 -> 8081 with nodePort 30053).
pub const WEB_IP: &str = "10.96.0.10";
pub const WEB_NODE_PORT: u16 = 30080;
/// ClusterIP of `web-local` (like web's TCP port, nodePort 30081, externalTrafficPolicy Local).
pub const WEB_LOCAL_IP: &str = "10.96.0.11";
pub const WEB_LOCAL_NODE_PORT: u16 = 30081;
/// ClusterIP of `empty`, a Service without endpoints.
pub const EMPTY_IP: &str = "10.96.0.20";

/// The `web` Service.
pub fn web() -> Service {
    Service {
        name: "web",
        cluster_ip: WEB_IP,
        ports: vec![
            Port {
                name: "http",
                protocol: "TCP",
                port: 80,
                target_port: 8080,
                node_port: Some(WEB_NODE_PORT),
            },
            Port {
                name: "dns",
                protocol: "UDP",
                port: 53,
                target_port: 8081,
                node_port: Some(30053),
            },
        ],
        external_local: false,
    }
}

fn web_local() -> Service {
    Service {
        name: "web-local",
        cluster_ip: WEB_LOCAL_IP,
        ports: vec![Port {
            name: "http",
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: Some(WEB_LOCAL_NODE_PORT),
        }],
        external_local: true,
    }
}

fn empty() -> Service {
    Service {
        name: "empty",
        cluster_ip: EMPTY_IP,
        ports: vec![Port {
            name: "http",
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: None,
        }],
        external_local: false,
    }
}

/// The EndpointSlice entry of a backend pod.
pub fn endpoint(pod: Pod) -> Endpoint {
    Endpoint {
        pod: pod.short,
        ip: pod.ip,
        node: pod.node.name,
    }
}

/// The client pod on node1, outside the socket-LB cgroup (its traffic takes the TC path).
pub const TC_CLIENT: Client<'static> = Client {
    netns: topology::CLIENT.netns,
    cgroup: None,
};
/// The client pod on node1, inside the socket-LB cgroup (its connects are translated by the socket hooks).
pub const SOCKET_CLIENT: Client<'static> = Client {
    netns: topology::CLIENT.netns,
    cgroup: Some(CGROUP1),
};
/// The client outside the cluster, on the wire.
pub const EXT_CLIENT: Client<'static> = Client {
    netns: topology::EXT,
    cgroup: None,
};

/// Everything one test needs; fields drop in order: agents (killed, cleaned up), helpers, servers, the network.
pub struct Lab {
    agents: Vec<Agent>,
    helpers: Vec<Proc>,
    _servers: Vec<Proc>,
    scratch: Scratch,
    _topology: Topology,
}

impl Lab {
    /// Builds the network, starts the three backends and writes the Service manifests (web, web-local, empty).
    pub fn start() -> Lab {
        let topology = Topology::build();
        let scratch = Scratch::create();
        let servers = BACKENDS.iter().map(|p| workload::start_backend(*p)).collect();
        let all: Vec<_> = BACKENDS.iter().map(|p| endpoint(*p)).collect();
        web().write(&scratch.manifests(), &all);
        web_local().write(&scratch.manifests(), &all);
        empty().write(&scratch.manifests(), &[]);
        Lab {
            agents: Vec::new(),
            helpers: Vec::new(),
            _servers: servers,
            scratch,
            _topology: topology,
        }
    }

    /// The directory the agent reads manifests from.
    pub fn manifests(&self) -> PathBuf {
        self.scratch.manifests()
    }

    /// Starts node1's agent in `mode` and waits until `web` answers through `client` (at most 30 s).
    pub fn start_agent(&mut self, mode: Mode, client: Client<'_>) -> &mut Agent {
        let agent = Agent::start(
            NODE1.name,
            NODE1.name,
            &self.manifests(),
            mode,
            CGROUP1,
            &self.scratch.path,
        );
        self.agents.push(agent);
        self.wait_ready(client);
        self.agent()
    }

    /// The test's scratch directory (removed on drop unless the test failed).
    pub fn dir(&self) -> &std::path::Path {
        &self.scratch.path
    }

    /// Starts node1's agent as `skiff-agent --proxy-only` against `cluster` (see [`Agent::start_in_cluster`])
    /// without waiting for it.
    pub fn spawn_agent_in_cluster(&mut self, mode: Mode, cluster: &InCluster) -> &mut Agent {
        let agent =
            Agent::start_in_cluster(NODE1.name, NODE1.name, cluster, mode, CGROUP1, &self.scratch.path);
        self.agents.push(agent);
        self.agent()
    }

    /// [`Lab::spawn_agent_in_cluster`], then waits until `web` answers through `client` (at most 30 s).
    pub fn start_agent_in_cluster(
        &mut self,
        mode: Mode,
        client: Client<'_>,
        cluster: &InCluster,
    ) -> &mut Agent {
        self.spawn_agent_in_cluster(mode, cluster);
        self.wait_ready(client);
        self.agent()
    }

    /// Stops every agent and removes what it pinned, so the next `start_agent` starts from scratch.
    pub fn stop_agents(&mut self) {
        self.agents.clear();
    }

    /// node1's agent.
    pub fn agent(&mut self) -> &mut Agent {
        self.agents.first_mut().expect("no agent started")
    }

    /// Waits until `web` answers through `client`; panics with the agent's log after 30 s or if it exits.
    pub fn wait_ready(&mut self, client: Client<'_>) {
        let url = format!("http://{WEB_IP}/");
        let agent = self.agents.first_mut().expect("no agent started");
        let ready = wait_for(Duration::from_secs(30), || {
            agent.assert_running();
            client.http_get(&url, 1).ok()
        });
        if ready.is_none() {
            panic!(
                "web ({url}) never answered through {client:?} within 30 s; agent log:\n{}",
                agent.log_tail()
            );
        }
    }

    /// Attaches XDP_PASS on the wire side of node1's uplink (where node1's XDP_TX frames arrive).
    pub fn attach_xdp_pass(&mut self) {
        if let Some(p) = agent::xdp_pass(NODE1.wire_peer, topology::WIRE, NODE1.name) {
            self.helpers.push(p);
        }
    }
}

/// A scratch directory (manifests, agent logs) under the system temp dir, removed on drop unless a test failed.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "skt-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(path.join("manifests")).expect("creating the scratch directory");
        Scratch { path }
    }

    fn manifests(&self) -> PathBuf {
        self.path.join("manifests")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kept {} (manifests and agent logs) for inspection",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
