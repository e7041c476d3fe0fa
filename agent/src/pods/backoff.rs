//! CrashLoopBackOff: the delay before restarting an exited container (10 s doubling to 300 s, reset after a
//! container ran 10 minutes), as a pure state machine over durations.
use std::time::Duration;

/// Backoff parameters (Kubernetes' defaults by `Default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran at least this long starts over at `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Per-container backoff state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    cfg: BackoffConfig,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, last: None }
    }

    /// The container exited after running for `ran_for`: how long to wait before starting it again.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.cfg.reset_after {
            self.last = None;
        }
        let next = match self.last {
            None => self.cfg.initial,
            Some(d) => (d * 2).min(self.cfg.max),
        };
        self.last = Some(next);
        next
    }

    /// The delay handed out last (None before the first exit or after a reset).
    pub fn current(&self) -> Option<Duration> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let delays: Vec<u64> = (0..8)
            .map(|_| b.on_exit(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn resets_after_a_long_run() {
        let mut b = Backoff::new(BackoffConfig::default());
        b.on_exit(Duration::ZERO);
        b.on_exit(Duration::ZERO);
        assert_eq!(b.on_exit(Duration::from_secs(599)), Duration::from_secs(40));
        assert_eq!(b.on_exit(Duration::from_secs(600)), Duration::from_secs(10));
    }

    /// The restart schedule on virtual time: a container that crashes at once is started at t = 0, 10, 30, 70 s.
    #[tokio::test(start_paused = true)]
    async fn restart_schedule_on_virtual_time() {
        let t0 = tokio::time::Instant::now();
        let mut b = Backoff::new(BackoffConfig::default());
        let mut starts = vec![0];
        for _ in 0..3 {
            let ran = Duration::from_millis(5);
            tokio::time::sleep(ran).await;
            tokio::time::sleep(b.on_exit(ran)).await;
            starts.push(t0.elapsed().as_secs());
        }
        assert_eq!(starts, [0, 10, 30, 70]);
    }
}
