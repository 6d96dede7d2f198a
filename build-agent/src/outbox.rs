//! Status deliveries to the backend, off every caller's path: callers enqueue and go on; a
//! background task delivers them in order per agent, several agents at once, each request with a
//! deadline and a few retries. A backend that is down or never answers costs the callers nothing
//! (the reader keeps consuming); what it misses is in the Redis status hash all the same.

use crate::http::HttpClient;
use crate::retry::Backoff;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

/// One request to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Deliveries of one agent go out in order, one at a time.
    pub agent: String,
    pub job: String,
    pub method: &'static str,
    pub url: String,
    pub body: Option<Value>,
}

/// Limits of the outbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight at once (over all agents).
    pub concurrency: usize,
    /// Deliveries waiting, over all agents; past it new ones are dropped (and counted).
    pub capacity: usize,
    /// Attempts per delivery (5xx and no answer are retried).
    pub attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: 8,
            capacity: 10_000,
            attempts: 3,
        }
    }
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Delivery>,
    waiting: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    capacity: u64,
}

impl Outbox {
    /// Start the delivering task; it ends when every handle is dropped and the queue is empty.
    pub fn start(http: HttpClient, limits: Limits) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicU64::new(0));
        tokio::spawn(deliver_all(rx, http, limits, waiting.clone()));
        Outbox {
            tx,
            waiting,
            dropped: Arc::new(AtomicU64::new(0)),
            capacity: limits.capacity as u64,
        }
    }

    /// Queue a delivery; never waits.
    pub fn send(&self, d: Delivery) {
        if self.waiting.load(Ordering::Relaxed) >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "status delivery dropped: {} deliveries are waiting for the backend ({} {})",
                self.capacity,
                d.method,
                d.url
            );
            return;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(d).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Deliveries queued or in flight.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

async fn deliver_all(
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    http: HttpClient,
    limits: Limits,
    waiting: Arc<AtomicU64>,
) {
    let mut queues: HashMap<String, VecDeque<Delivery>> = HashMap::new();
    let mut busy: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let permits = Arc::new(Semaphore::new(limits.concurrency.max(1)));
    let mut open = true;
    loop {
        if !open && busy.is_empty() && queues.values().all(VecDeque::is_empty) {
            return;
        }
        tokio::select! {
            d = rx.recv(), if open => match d {
                Some(d) => queues.entry(d.agent.clone()).or_default().push_back(d),
                None => open = false,
            },
            Some(agent) = done_rx.recv() => {
                busy.remove(&agent);
                waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // start the head of every idle agent's queue
        let ready: Vec<String> = queues
            .iter()
            .filter(|(a, q)| !q.is_empty() && !busy.contains(*a))
            .map(|(a, _)| a.clone())
            .collect();
        for agent in ready {
            let Some(d) = queues.get_mut(&agent).and_then(VecDeque::pop_front) else {
                continue;
            };
            if queues.get(&agent).is_some_and(VecDeque::is_empty) {
                queues.remove(&agent);
            }
            busy.insert(agent.clone());
            let (http, permits, done) = (http.clone(), permits.clone(), done_tx.clone());
            let span = tracing::info_span!("job", job = %d.job);
            tokio::spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    deliver(&http, &d, limits.attempts).await;
                    let _ = done.send(agent);
                }
                .instrument(span),
            );
        }
    }
}

/// One delivery with retries on 5xx and no answer; 404 is normal (a job queued by hand has no
/// upload record).
pub async fn deliver(http: &HttpClient, d: &Delivery, attempts: u32) -> Option<u16> {
    // doubling without a cap that matters: at most `attempts` tries
    let mut delay = Backoff::new(Duration::from_millis(300), Duration::MAX);
    for attempt in 1..=attempts.max(1) {
        let last = attempt == attempts.max(1);
        match http.send(d.method, &d.url, d.body.as_ref()).await {
            Ok(code) if code < 500 => {
                if code >= 400 && code != 404 {
                    tracing::warn!("{} {} answered {code}", d.method, d.url);
                }
                return Some(code);
            }
            Ok(code) if last => {
                tracing::warn!(
                    "{} {} answered {code}; giving up after {attempt} attempts",
                    d.method,
                    d.url
                );
                return Some(code);
            }
            Err(e) if last || !e.retryable() => {
                tracing::warn!(
                    "{} {} failed: {e}; giving up after {attempt} attempt(s)",
                    d.method,
                    d.url
                );
                return None;
            }
            _ => delay.wait().await,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(url: &str) -> Delivery {
        Delivery {
            agent: "a".into(),
            job: "1-0".into(),
            method: "PUT",
            url: url.into(),
            body: None,
        }
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_made_is_not_retried_and_one_without_answer_is() {
        let http = HttpClient::new(Duration::from_secs(1));
        // 40 attempts with doubling pauses would take years: returning at all means no retry
        let invalid = tokio::time::timeout(
            Duration::from_secs(10),
            deliver(&http, &delivery("http://bad host/x"), 40),
        )
        .await;
        assert_eq!(invalid.ok(), Some(None));
        // a listener that accepts and closes: every attempt reaches it
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        let seen = std::thread::spawn(move || (0..3).filter_map(|_| l.accept().ok()).count());
        assert_eq!(deliver(&http, &delivery(&url), 3).await, None);
        assert_eq!(seen.join().unwrap(), 3);
    }
}
