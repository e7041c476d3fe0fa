//! Probe scheduling and thresholds as a pure state machine (when is the next check due, what is the result).
use std::time::Duration;

use tokio::time::Instant;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProbeAction {
    Http {
        port: u16,
        path: String,
        host: Option<String>,
        https: bool,
    },
    Tcp {
        port: u16,
        host: Option<String>,
    },
    Exec {
        argv: Vec<String>,
    },
}

/// A probe with Kubernetes' timing fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// What a probe is for; decides the result before the first check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Not ready until it succeeds.
    Readiness,
    /// Alive until it fails `failure_threshold` times.
    Liveness,
    /// Not started until it succeeds; failing kills the container.
    Startup,
}

/// Running state of one probe for one container run.
#[derive(Debug, Clone)]
pub struct ProbeState {
    spec: ProbeSpec,
    kind: ProbeKind,
    successes: u32,
    failures: u32,
    ok: bool,
    next_at: Instant,
}

impl ProbeState {
    /// A probe for a container that started at `started`.
    pub fn new(spec: ProbeSpec, kind: ProbeKind, started: Instant) -> Self {
        let next_at = started + spec.initial_delay;
        Self {
            ok: kind == ProbeKind::Liveness,
            spec,
            kind,
            successes: 0,
            failures: 0,
            next_at,
        }
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The current result (ready / alive / started).
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// When the next check is due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Records one check's outcome at `now`; returns the new result when it changed.
    pub fn record(&mut self, success: bool, now: Instant) -> Option<bool> {
        self.next_at = now + self.spec.period;
        if success {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let before = self.ok;
        if success && self.successes >= self.spec.success_threshold.max(1) {
            self.ok = true;
        } else if !success && self.failures >= self.spec.failure_threshold.max(1) {
            self.ok = false;
        }
        (before != self.ok).then_some(self.ok)
    }

    /// Whether the container must be killed (a liveness or startup probe failed past its threshold).
    pub fn kills(&self) -> bool {
        matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup)
            && self.failures >= self.spec.failure_threshold.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: ProbeAction::Tcp { port: 80, host: None },
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_thresholds_and_periods() {
        let t0 = Instant::now();
        let mut p = ProbeState::new(spec(2, 3), ProbeKind::Readiness, t0);
        assert!(!p.ok());
        assert!(!p.due(t0));
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert!(p.due(now));
        assert_eq!(p.record(true, now), None, "one success of two is not ready yet");
        assert_eq!(p.next_at(), now + Duration::from_secs(10));
        assert_eq!(p.record(true, now), Some(true));
        assert_eq!(p.record(false, now), None);
        assert_eq!(p.record(false, now), None);
        assert_eq!(p.record(true, now), None, "a success resets the failure count");
        for _ in 0..2 {
            assert_eq!(p.record(false, now), None);
        }
        assert_eq!(p.record(false, now), Some(false));
        assert!(!p.kills(), "readiness never kills");
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_starts_alive_and_kills_after_failures() {
        let t0 = Instant::now();
        let mut p = ProbeState::new(spec(1, 2), ProbeKind::Liveness, t0);
        assert!(p.ok());
        assert_eq!(p.record(false, t0), None);
        assert!(!p.kills());
        assert_eq!(p.record(false, t0), Some(false));
        assert!(p.kills());
    }
}
