//! List latency over a namespace of pods: full, paginated, label-selected and as a Table.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hyper::Method;

use super::fixtures;
use super::http::{Conn, JSON, TABLE};

/// Page size of the paginated form (what kubectl and informers use).
pub const PAGE: usize = 500;

/// The list forms measured, in report order.
pub const FORMS: [&str; 4] = ["list_full", "list_paginated", "list_selector", "list_table"];

/// Pods `0..n` whose label group is `group`.
pub fn selected(n: usize, group: usize) -> usize {
    (0..n).filter(|i| i % fixtures::LABEL_GROUPS == group).count()
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One list of form `form` over `ns` holding pods `0..n`; checks the item count when `verify`.
async fn list_once(conn: &mut Conn, ns: &str, n: usize, form: &str, verify: bool) -> Result<Duration> {
    let base = format!("/api/v1/namespaces/{ns}/pods");
    let t = Instant::now();
    let (body, expected) = match form {
        "list_full" => (conn.ok(Method::GET, &base, JSON, None).await?, n),
        "list_table" => (conn.ok(Method::GET, &base, TABLE, None).await?, n),
        "list_selector" => {
            let sel = encode(&format!("app={}", fixtures::group(3)));
            let path = format!("{base}?labelSelector={sel}");
            (conn.ok(Method::GET, &path, JSON, None).await?, selected(n, 3))
        }
        "list_paginated" => {
            let mut token: Option<String> = None;
            let mut items = 0;
            for _ in 0..=n / PAGE + 1 {
                let mut path = format!("{base}?limit={PAGE}");
                if let Some(t) = &token {
                    path.push_str(&format!("&continue={}", encode(t)));
                }
                let page = conn.ok(Method::GET, &path, JSON, None).await?;
                token = fixtures::continue_token(&page);
                if verify {
                    items += fixtures::count_items(&page).unwrap_or(0);
                }
                if token.is_none() {
                    break;
                }
            }
            let took = t.elapsed();
            if token.is_some() {
                bail!(
                    "paginated list of {n} pods did not end after {} pages",
                    n / PAGE + 2
                );
            }
            if verify && items != n {
                bail!("paginated list returned {items} pods, expected {n}");
            }
            return Ok(took);
        }
        other => bail!("unknown list form {other}"),
    };
    let took = t.elapsed();
    if verify {
        let got = fixtures::count_items(&body);
        if got != Some(expected) {
            bail!("{form} returned {got:?} items, expected {expected}");
        }
    }
    Ok(took)
}

/// The samples of one list form, or why it failed (a failed form is not tried again; the others go on).
pub struct FormResult {
    pub form: &'static str,
    pub samples: Vec<Duration>,
    pub error: Option<anyhow::Error>,
}

/// `samples` lists of each form, interleaved (full, paginated, selector, table, full, ...); the first of each form
/// also checks the item count.
pub async fn measure(addr: SocketAddr, ns: &str, n: usize, samples: usize) -> Result<Vec<FormResult>> {
    let mut conn = Conn::connect(addr).await?;
    let mut out: Vec<FormResult> = FORMS
        .iter()
        .map(|form| FormResult {
            form,
            samples: Vec::new(),
            error: None,
        })
        .collect();
    for s in 0..samples {
        for r in out.iter_mut().filter(|r| r.error.is_none()) {
            match list_once(&mut conn, ns, n, r.form, s == 0).await {
                Ok(took) => r.samples.push(took),
                Err(e) => {
                    r.error = Some(e);
                    // The connection may be mid-response after a timeout: start a fresh one.
                    conn = Conn::connect(addr).await?;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("app=bench-3"), "app%3Dbench-3");
        assert_eq!(encode("eyJ+a/b="), "eyJ%2Ba%2Fb%3D");
    }

    #[test]
    fn selector_matches_a_tenth() {
        assert_eq!(selected(10_000, 3), 1000);
        assert_eq!(selected(15, 3), 2);
    }
}
