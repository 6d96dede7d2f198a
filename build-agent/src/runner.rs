//! Job scheduling: a bounded number of jobs at once, one at a time per agent, and a newer queued
//! job for an agent supersedes an older queued one. Tracks the entries this consumer holds (for
//! heartbeats and back-pressure).

use crate::job::DeployJob;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

/// Runs one job to its terminal state (reported and acknowledged).
pub trait Execute: Send + Sync + 'static {
    fn execute(&self, job: DeployJob) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// A queued job replaced by a newer one for the same agent: acknowledge it.
    fn superseded(
        &self,
        old: DeployJob,
        by: &DeployJob,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

#[derive(Default)]
struct Slot {
    running: bool,
    queued: Option<DeployJob>,
}

pub struct Runner {
    sem: Semaphore,
    slots: Mutex<HashMap<String, Slot>>,
    held: Mutex<BTreeSet<String>>,
    running: Mutex<usize>,
    stopping: std::sync::atomic::AtomicBool,
    changed: Notify,
    exec: Arc<dyn Execute>,
}

impl Runner {
    pub fn new(concurrency: usize, exec: Arc<dyn Execute>) -> Arc<Runner> {
        Arc::new(Runner {
            sem: Semaphore::new(concurrency),
            slots: Mutex::new(HashMap::new()),
            held: Mutex::new(BTreeSet::new()),
            running: Mutex::new(0),
            stopping: false.into(),
            changed: Notify::new(),
            exec,
        })
    }

    /// Stream ids this consumer holds (queued or running).
    pub fn held(&self) -> Vec<String> {
        self.held
            .lock()
            .expect("held lock")
            .iter()
            .cloned()
            .collect()
    }
    pub fn holds(&self, id: &str) -> bool {
        self.held.lock().expect("held lock").contains(id)
    }
    pub fn in_flight(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Wait until fewer than `limit` entries are held.
    pub async fn wait_capacity(&self, limit: usize) {
        loop {
            let n = self.changed.notified();
            if self.in_flight() < limit {
                return;
            }
            n.await;
        }
    }

    pub fn submit(self: &Arc<Self>, job: DeployJob) {
        self.held
            .lock()
            .expect("held lock")
            .insert(job.stream_id.clone());
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots.entry(job.agent.clone()).or_default();
        if slot.running {
            if let Some(old) = slot.queued.replace(job.clone()) {
                let me = self.clone();
                tokio::spawn(async move {
                    me.exec.superseded(old.clone(), &job).await;
                    me.release(&old.stream_id);
                });
            }
            return;
        }
        slot.running = true;
        drop(slots);
        let me = self.clone();
        tokio::spawn(async move { me.agent_loop(job).await });
    }

    fn release(&self, id: &str) {
        self.held.lock().expect("held lock").remove(id);
        self.changed.notify_waiters();
    }

    async fn agent_loop(self: Arc<Self>, first: DeployJob) {
        let agent = first.agent.clone();
        let mut job = first;
        loop {
            let permit = self.sem.acquire().await.expect("semaphore is never closed");
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                // not started: stays pending in Redis for the next start
                drop(permit);
                let mut slots = self.slots.lock().expect("slots lock");
                slots.remove(&agent);
                return;
            }
            *self.running.lock().expect("running lock") += 1;
            let id = job.stream_id.clone();
            self.exec.execute(job).await;
            *self.running.lock().expect("running lock") -= 1;
            drop(permit);
            self.release(&id);
            let mut slots = self.slots.lock().expect("slots lock");
            let slot = slots.entry(agent.clone()).or_default();
            match slot.queued.take() {
                Some(next) => job = next,
                None => {
                    slots.remove(&agent);
                    return;
                }
            }
        }
    }

    /// Stop starting jobs; wait for running ones to end or `grace` to pass. True if all ended.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let n = self.changed.notified();
            if *self.running.lock().expect("running lock") == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return *self.running.lock().expect("running lock") == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    struct Probe {
        log: Mutex<Vec<String>>,
        now: Mutex<usize>,
        max: Mutex<usize>,
    }

    impl Execute for Probe {
        fn execute(&self, job: DeployJob) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(async move {
                {
                    let mut n = self.now.lock().unwrap();
                    *n += 1;
                    let mut m = self.max.lock().unwrap();
                    *m = (*m).max(*n);
                }
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("start {} {}", job.agent, job.stream_id));
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("end {} {}", job.agent, job.stream_id));
                *self.now.lock().unwrap() -= 1;
            })
        }
        fn superseded(
            &self,
            old: DeployJob,
            by: &DeployJob,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            let line = format!("superseded {} by {}", old.stream_id, by.stream_id);
            Box::pin(async move { self.log.lock().unwrap().push(line) })
        }
    }

    fn job(agent: &str, id: &str) -> DeployJob {
        DeployJob {
            stream_id: id.into(),
            action: crate::job::Action::Deploy,
            agent: agent.into(),
            package: PathBuf::new(),
            owner_id: String::new(),
            upload_id: String::new(),
            upload_type: String::new(),
            version: String::new(),
            backend_url: None,
            webhook_url: None,
            strategy: Default::default(),
            keep_old: false,
        }
    }

    #[tokio::test]
    async fn bounded_concurrency_one_per_agent_and_latest_queued_wins() {
        let probe = Arc::new(Probe {
            log: Mutex::new(vec![]),
            now: Mutex::new(0),
            max: Mutex::new(0),
        });
        let r = Runner::new(2, probe.clone());
        for (a, id) in [
            ("a", "1"),
            ("a", "2"),
            ("a", "3"),
            ("b", "4"),
            ("c", "5"),
            ("d", "6"),
        ] {
            r.submit(job(a, id));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while r.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let log = probe.log.lock().unwrap().clone();
        assert_eq!(*probe.max.lock().unwrap(), 2, "{log:?}");
        assert!(log.contains(&"superseded 2 by 3".to_string()), "{log:?}");
        assert!(!log.contains(&"start a 2".to_string()));
        let a_events: Vec<&String> = log.iter().filter(|l| l.contains(" a ")).collect();
        assert_eq!(a_events, ["start a 1", "end a 1", "start a 3", "end a 3"]);
        for id in ["4", "5", "6"] {
            assert!(log
                .iter()
                .any(|l| l.ends_with(&format!(" {id}")) && l.starts_with("end")));
        }
    }
}
