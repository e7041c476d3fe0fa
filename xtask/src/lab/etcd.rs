//! A local etcd (Debian's `etcd-server`) for `--store etcd`: data under the lab dir, loopback ports next to the
//! apiserver's (client `api_port + 1`, peer `api_port + 2`).
use std::{net::TcpStream, path::Path, process::Command, time::Duration};

use anyhow::{Result, bail, ensure};

use super::{kube::wait_for, layout::Lab, procs::Daemon};

pub fn daemon(lab: &Lab) -> Daemon {
    Daemon {
        pid_file: lab.run_dir().join("etcd.pid"),
        log: lab.log_dir().join("etcd.log"),
        marker: format!("--data-dir={}", lab.dir.join("etcd").display()),
    }
}

/// Starts etcd if it is not running; returns its client endpoint.
pub fn start(lab: &Lab) -> Result<String> {
    ensure!(
        Path::new("/usr/bin/etcd").exists(),
        "--store etcd needs Debian's etcd: apt-get install etcd-server"
    );
    let client = lab.plan.api_port + 1;
    let peer = lab.plan.api_port + 2;
    let endpoint = format!("http://127.0.0.1:{client}");
    let d = daemon(lab);
    if d.pid().is_none() {
        d.spawn(
            Command::new("/usr/bin/etcd")
                .arg(&d.marker)
                .args(["--name", &format!("{}etcd", lab.plan.prefix)])
                .args([
                    "--listen-client-urls",
                    &endpoint,
                    "--advertise-client-urls",
                    &endpoint,
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("{}etcd=http://127.0.0.1:{peer}", lab.plan.prefix),
                ]),
        )?;
    }
    let up = wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", client)).ok().map(drop)
    });
    if up.is_none() {
        bail!(
            "etcd did not listen on {endpoint} within 20 s (log: {})",
            d.log.display()
        );
    }
    Ok(endpoint)
}
