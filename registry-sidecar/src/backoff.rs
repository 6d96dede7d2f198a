//! Exponential backoff with jitter and a cap, reset after success.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            first,
            cap,
            attempt: 0,
            seed,
        }
    }

    /// The next delay: first·2ⁿ capped, with ±20% jitter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .first
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift jitter in [0.8, 1.2)
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.8 + (self.seed % 400) as f64 / 1000.0;
        base.mul_f64(factor).min(self.cap)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_about_half_a_second_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let d0 = b.next_delay();
        assert!(
            d0 >= Duration::from_millis(400) && d0 <= Duration::from_millis(600),
            "{d0:?}"
        );
        let d1 = b.next_delay();
        assert!(
            d1 >= Duration::from_millis(800) && d1 <= Duration::from_millis(1200),
            "{d1:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        assert!(b.next_delay() >= Duration::from_secs(8));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(600));
    }
}
