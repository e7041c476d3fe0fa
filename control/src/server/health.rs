//! `/healthz`, `/livez` and `/readyz` with kube-apiserver's check lists: `ping` always, and the storage check
//! (named `etcd` on the etcd backend, `store` on the embedded one) on `/readyz` and `/healthz`. As in kube, a
//! failing check answers 500 with `[-]<name> failed: reason withheld`; `?verbose` lists every check, and
//! `/readyz/<name>` runs one. `/livez` leaves the store out, so a storage outage does not get the process
//! restarted by a liveness probe: it recovers on its own once storage is back.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::store::Store;

/// How long the storage check may take before it counts as failed.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health endpoints of one server.
#[derive(Clone)]
pub struct Health {
    store: Arc<dyn Store>,
    store_check: &'static str,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
}

/// The response body and status for a probe's outcomes (kube's wording).
pub fn render(probe: &str, outcomes: &[Outcome], verbose: bool) -> (StatusCode, String) {
    let ok = outcomes.iter().all(|o| o.ok);
    if ok && !verbose {
        return (StatusCode::OK, "ok".to_owned());
    }
    let mut text = String::new();
    for outcome in outcomes {
        if outcome.ok {
            text.push_str(&format!("[+]{} ok\n", outcome.name));
        } else {
            text.push_str(&format!("[-]{} failed: reason withheld\n", outcome.name));
        }
    }
    if ok {
        text.push_str(&format!("{probe} check passed\n"));
        (StatusCode::OK, text)
    } else {
        text.push_str(&format!("{probe} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, text)
    }
}

impl Health {
    /// `etcd` names the storage check `etcd` (kube's name), otherwise `store`.
    pub fn new(store: Arc<dyn Store>, etcd: bool) -> Self {
        Self {
            store,
            store_check: if etcd { "etcd" } else { "store" },
        }
    }

    async fn store_ok(&self) -> bool {
        matches!(
            tokio::time::timeout(STORE_CHECK_TIMEOUT, self.store.current_revision()).await,
            Ok(Ok(_))
        )
    }

    /// Answers a probe path (`/readyz`, `/readyz/etcd`, `/livez?verbose`, ...).
    pub async fn serve(&self, uri: &Uri) -> Response {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let probe = segments.first().copied().unwrap_or("healthz");
        let verbose = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")));
        let mut checks = vec!["ping"];
        if probe != "livez" {
            checks.push(self.store_check);
        }
        if let Some(only) = segments.get(1) {
            checks.retain(|c| c == only);
            if checks.is_empty() || segments.len() > 2 {
                return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
            }
        }
        let mut outcomes = Vec::with_capacity(checks.len());
        for name in checks {
            let ok = name == "ping" || self.store_ok().await;
            outcomes.push(Outcome { name, ok });
        }
        let (status, text) = render(probe, &outcomes, verbose);
        if status != StatusCode::OK {
            tracing::warn!(probe, body = %text.trim_end(), "health check failed");
        }
        let mut response = (status, text).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kube() {
        let good = [
            Outcome {
                name: "ping",
                ok: true,
            },
            Outcome {
                name: "etcd",
                ok: true,
            },
        ];
        assert_eq!(render("readyz", &good, false), (StatusCode::OK, "ok".into()));
        assert_eq!(
            render("readyz", &good, true),
            (
                StatusCode::OK,
                "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".into()
            )
        );
        let bad = [
            Outcome {
                name: "ping",
                ok: true,
            },
            Outcome {
                name: "etcd",
                ok: false,
            },
        ];
        assert_eq!(
            render("readyz", &bad, false),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n".into()
            )
        );
    }
}
