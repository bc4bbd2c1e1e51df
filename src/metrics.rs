//! Counters the endpoints bump as they work, read by `GET /metrics` (`http/metrics.rs`),
//! which adds what it reads off the log, the queries and the state store when scraped.
//! Plain atomics: no registry, no allocation per request, labels bounded by construction
//! (one series per Kafka API key, per HTTP status class).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus's `le`).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A cumulative histogram of durations.
pub struct Histogram {
    /// Observations at or below each bound (not cumulative here; summed when rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// (cumulative count per bucket, count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        (cumulative, self.count(), self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Kafka API keys are below this (Kafka 4 ends near 90).
pub const KAFKA_API_KEYS: usize = 128;

/// Per Kafka API key: how long requests took from decode to the encoded response.
pub static KAFKA_REQUESTS: [Histogram; KAFKA_API_KEYS] = [const { Histogram::new() }; KAFKA_API_KEYS];
/// Bytes of Kafka request frames read and response frames written.
pub static KAFKA_BYTES_IN: AtomicU64 = AtomicU64::new(0);
pub static KAFKA_BYTES_OUT: AtomicU64 = AtomicU64::new(0);
/// Kafka connections open now.
pub static KAFKA_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
/// Postgres connections open now.
pub static PG_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
/// HTTP requests answered, by status class (1xx..5xx at 1..5).
pub static HTTP_REQUESTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
pub static HTTP_REQUEST_DURATION: Histogram = Histogram::new();
/// Continuous queries' checkpoints: sink appends, the synced state write, the publish.
pub static CHECKPOINTS: Histogram = Histogram::new();

pub fn kafka_request(api_key: i16, took: Duration) {
    if let Some(h) = usize::try_from(api_key).ok().and_then(|k| KAFKA_REQUESTS.get(k)) {
        h.observe(took);
    }
}

/// Counts an open connection for as long as the guard lives.
pub struct Open(&'static AtomicI64);

impl Open {
    pub fn new(gauge: &'static AtomicI64) -> Open {
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[3], 2);
        assert_eq!(*buckets.last().unwrap(), 2, "60 s is past every bound: only +Inf counts it");
        assert!((sum - 60.0031).abs() < 1e-6);
    }
}
