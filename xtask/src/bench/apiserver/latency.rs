//! Latency samples to p50/p99/max in milliseconds, and rates.
use std::time::Duration;

use super::super::stats;

/// Percentiles of one series of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `samples`; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let sorted = stats::sorted(&ms);
    Some(Summary {
        count: sorted.len(),
        p50: stats::quantile(&sorted, 0.5)?,
        p99: stats::quantile(&sorted, 0.99)?,
        max: *sorted.last()?,
    })
}

/// Operations per second; zero when no time passed.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let samples: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let s = summarize(&samples).unwrap();
        assert_eq!(
            s,
            Summary {
                count: 200,
                p50: 100.0,
                p99: 198.0,
                max: 200.0
            }
        );
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn rates() {
        assert_eq!(rate(1000, Duration::from_millis(500)), 2000.0);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
    }
}
