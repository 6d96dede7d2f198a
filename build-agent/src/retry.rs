//! The one retry rule of the build agent: wait, double the wait, up to a cap. [`Backoff`] is the
//! schedule (for loops that also do other things between tries); [`until_ok`] retries an
//! operation until it succeeds, saying each failure through `on_error`.

use std::future::Future;
use std::time::Duration;

/// Waits that start at `first` and double up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    /// The schedule of the writes that must land (status, acknowledgement, dead letter) and of
    /// Redis reads: 250 ms doubling up to 10 s.
    pub fn redis() -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(10))
    }

    /// The wait to use now (the next one is doubled).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Sleep the current wait, then double it (up to the cap).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = self.next.saturating_mul(2).min(self.max);
    }

    /// Back to the first wait.
    pub fn reset(&mut self, first: Duration) {
        self.next = first;
    }
}

/// Run `op` until it succeeds, waiting by `backoff` between tries; each failure is given to
/// `on_error` with the wait that follows it.
pub async fn until_ok<T, E, F, Fut>(
    mut backoff: Backoff,
    mut op: F,
    mut on_error: impl FnMut(&E, Duration),
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                on_error(&e, backoff.peek());
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_double_up_to_the_cap_and_the_value_comes_back() {
        let mut waits = Vec::new();
        let mut tries = 0;
        let v = until_ok(
            Backoff::new(Duration::from_millis(1), Duration::from_millis(3)),
            || {
                tries += 1;
                let t = tries;
                async move {
                    if t < 5 {
                        Err("no")
                    } else {
                        Ok(t)
                    }
                }
            },
            |e: &&str, d| {
                assert_eq!(*e, "no");
                waits.push(d.as_millis())
            },
        )
        .await;
        assert_eq!(v, 5);
        assert_eq!(waits, [1, 2, 3, 3]);
    }
}
