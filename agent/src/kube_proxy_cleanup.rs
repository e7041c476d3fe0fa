//! `--cleanup-kube-proxy`: removes kube-proxy's iptables chains (legacy and nft backends, IPv4 and IPv6) and its
//! nftables tables, so that nodes migrated to Skiff carry no stale Service rules. Idempotent.
use std::{collections::BTreeSet, io::Write, process::Command};

/// Tables kube-proxy writes chains into.
pub const TABLES: [&str; 3] = ["nat", "filter", "mangle"];
/// KUBE-* chains that belong to the kubelet, not to kube-proxy (the kubelet recreates them; leave them alone).
pub const KUBELET_CHAINS: [&str; 2] = ["KUBE-KUBELET-CANARY", "KUBE-FIREWALL"];
/// nftables tables of kube-proxy's nftables mode.
pub const NFT_TABLES: [(&str, &str); 2] = [("ip", "kube-proxy"), ("ip6", "kube-proxy")];

/// Errors running the cleanup.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("running {tool}: {source}")]
    Spawn { tool: String, source: std::io::Error },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
}

type Result<T, E = CleanupError> = std::result::Result<T, E>;

/// What one `iptables-restore --noflush` script removes from one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    /// Rules (in `iptables-save` syntax, without the leading `-A`) outside the removed chains that jump to them.
    pub jumps: Vec<String>,
    /// Chains to flush and delete.
    pub chains: Vec<String>,
}

/// Splits an `iptables-save` rule line into words, keeping double-quoted strings (comments) whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == '"' {
            cur.push(c);
            quoted = !quoted;
            any = true;
        } else if c.is_whitespace() && !quoted {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
            any = true;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn is_kube_proxy_chain(name: &str) -> bool {
    name.starts_with("KUBE-") && !KUBELET_CHAINS.contains(&name)
}

/// Plans the removal of kube-proxy's chains from `iptables-save` output, one plan per table that has any.
pub fn plan(save: &str) -> Vec<TablePlan> {
    let mut plans = Vec::new();
    let mut cur: Option<TablePlan> = None;
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in save.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            cur = TABLES.contains(&table).then(|| TablePlan {
                table: table.to_string(),
                ..TablePlan::default()
            });
            rules.clear();
        } else if line == "COMMIT" {
            if let Some(mut p) = cur.take() {
                let removed: BTreeSet<&str> = p.chains.iter().map(String::as_str).collect();
                p.jumps = rules
                    .iter()
                    .filter(|(chain, spec)| !removed.contains(chain.as_str()) && jumps_into(spec, &removed))
                    .map(|(chain, spec)| format!("{chain} {spec}"))
                    .collect();
                if !p.chains.is_empty() || !p.jumps.is_empty() {
                    plans.push(p);
                }
            }
        } else if let Some(p) = cur.as_mut() {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if is_kube_proxy_chain(name) {
                    p.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ")
                && let Some((chain, spec)) = rule.split_once(' ')
            {
                rules.push((chain.to_string(), spec.to_string()));
            }
        }
    }
    plans
}

fn jumps_into(spec: &str, chains: &BTreeSet<&str>) -> bool {
    let w = words(spec);
    w.windows(2)
        .any(|p| matches!(p[0].as_str(), "-j" | "-g" | "--jump" | "--goto") && chains.contains(p[1].as_str()))
}

/// The `iptables-restore --noflush` input carrying out `plans`: drop the jumps in, flush every chain, then delete
/// them (flushing first clears references between the removed chains).
pub fn restore_script(plans: &[TablePlan]) -> String {
    let mut s = String::new();
    for p in plans {
        s.push_str(&format!("*{}\n", p.table));
        for j in &p.jumps {
            s.push_str(&format!("-D {j}\n"));
        }
        for c in &p.chains {
            s.push_str(&format!("-F {c}\n"));
        }
        for c in &p.chains {
            s.push_str(&format!("-X {c}\n"));
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// kube-proxy's tables in `nft list tables` output.
pub fn nft_tables_to_delete(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["table", family, name] if NFT_TABLES.contains(&(*family, *name)) => {
                    Some((family.to_string(), name.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// What a cleanup removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `(tool, table, chains removed, jump rules removed)`.
    pub iptables: Vec<(String, String, usize, usize)>,
    /// `family name` of deleted nftables tables.
    pub nft: Vec<String>,
    /// Tools that are not installed (that backend cannot hold rules we could remove).
    pub missing_tools: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.iptables.is_empty() && self.nft.is_empty()
    }
}

fn installed(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

fn run(cmd: &mut Command, tool: &str, stdin: Option<&str>) -> Result<String> {
    let spawn_err = |source| CleanupError::Spawn {
        tool: tool.to_string(),
        source,
    };
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(CleanupError::Failed {
            tool: tool.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes kube-proxy's iptables chains and nftables tables from the current network namespace.
pub fn cleanup() -> Result<Report> {
    let mut report = Report::default();
    for family in ["iptables", "ip6tables"] {
        for backend in ["legacy", "nft"] {
            let (save, restore) = (
                format!("{family}-{backend}-save"),
                format!("{family}-{backend}-restore"),
            );
            if !installed(&save) || !installed(&restore) {
                report.missing_tools.push(save);
                continue;
            }
            let dump = run(&mut Command::new(&save), &save, None)?;
            let plans = plan(&dump);
            if plans.is_empty() {
                continue;
            }
            run(
                Command::new(&restore).args(["--noflush", "--wait"]),
                &restore,
                Some(&restore_script(&plans)),
            )?;
            for p in plans {
                tracing::info!(tool = %save, table = %p.table, chains = p.chains.len(), "removed kube-proxy chains");
                report
                    .iptables
                    .push((save.clone(), p.table, p.chains.len(), p.jumps.len()));
            }
        }
    }
    if installed("nft") {
        let listing = run(Command::new("nft").args(["list", "tables"]), "nft", None)?;
        for (family, name) in nft_tables_to_delete(&listing) {
            run(
                Command::new("nft").args(["delete", "table", &family, &name]),
                "nft",
                None,
            )?;
            tracing::info!(%family, %name, "removed kube-proxy nftables table");
            report.nft.push(format!("{family} {name}"));
        }
    } else {
        report.missing_tools.push("nft".into());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Mon Dec  1 21:00:00 2026
*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
:MY-CHAIN - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "a comment saying -j KUBE-SERVICES" -j ACCEPT
-A MY-CHAIN -g KUBE-SERVICES
-A KUBE-FORWARD -j KUBE-SERVICES
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j KUBE-SVC-ABC
COMMIT
*raw
:KUBE-SOMETHING - [0:0]
COMMIT
"#;

    #[test]
    fn plans_kube_proxy_chains_and_the_jumps_into_them() {
        let plans = plan(SAVE);
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[0].table, "mangle");
        assert_eq!(
            plans[0].chains,
            ["KUBE-PROXY-CANARY"],
            "the kubelet's canary stays"
        );
        assert!(plans[0].jumps.is_empty());
        let filter = &plans[1];
        assert_eq!(filter.chains, ["KUBE-FORWARD", "KUBE-SERVICES"]);
        assert_eq!(
            filter.jumps,
            [
                r#"FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD"#,
                "MY-CHAIN -g KUBE-SERVICES",
            ],
            "jumps to chains that do not exist here, to kubelet chains and inside comments stay"
        );
        assert_eq!(plans[2].table, "nat");
        assert_eq!(plans[2].chains, ["KUBE-SERVICES", "KUBE-SVC-ABC"]);
        assert_eq!(plans[2].jumps.len(), 1);
    }

    #[test]
    fn the_script_drops_jumps_then_flushes_then_deletes() {
        let script = restore_script(&plan(SAVE));
        let nat = script.split("*nat\n").nth(1).unwrap();
        assert_eq!(
            nat,
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -F KUBE-SERVICES\n-F KUBE-SVC-ABC\n-X KUBE-SERVICES\n-X KUBE-SVC-ABC\nCOMMIT\n"
        );
        assert_eq!(script.matches("COMMIT").count(), 3);
    }

    #[test]
    fn nothing_to_do_on_a_clean_node() {
        let clean =
            "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n";
        assert!(plan(clean).is_empty());
        assert!(plan("").is_empty());
        assert_eq!(restore_script(&[]), "");
    }

    #[test]
    fn quoted_words_stay_whole() {
        assert_eq!(
            words(r#"-m comment --comment "a \"b\" c" -j X"#),
            ["-m", "comment", "--comment", r#""a \"b\" c""#, "-j", "X"]
        );
        assert_eq!(words(r#"--comment """#), ["--comment", r#""""#]);
    }

    #[test]
    fn finds_kube_proxy_nft_tables() {
        let listing =
            "table inet filter\ntable ip kube-proxy\ntable ip6 kube-proxy\ntable ip kube-proxy-other\n";
        assert_eq!(
            nft_tables_to_delete(listing),
            [
                ("ip".into(), "kube-proxy".into()),
                ("ip6".into(), "kube-proxy".into())
            ]
        );
        assert!(nft_tables_to_delete("table inet filter\n").is_empty());
    }
}
