//! The build log sink: where a deploy writes its lines (`docker build`'s output, "up to date").
//! The deploy stage knows only [`BuildLog`]; the worker gives it [`RedisBuildLog`], which appends
//! to the agent's `agent:buildlog:{name}` stream (capped near 2000 entries), each line with its job,
//! and marks each build step begun as the job's progress.

use crate::attempts::{build_step, Mark};
use crate::stream::Stream;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The Redis stream holding an agent's build log.
pub fn buildlog_key(agent: &str) -> String {
    format!("agent:buildlog:{agent}")
}

/// Where a job's build log goes.
pub trait BuildLog: Send + Sync {
    /// A writer for one job's lines of agent `agent`; they are written in order.
    fn open(&self, agent: &str, job: &str) -> LogWriter;
}

/// One job's open build log: send lines on `tx`, then [`LogWriter::close`] to wait until all
/// are written.
pub struct LogWriter {
    pub tx: mpsc::UnboundedSender<String>,
    done: JoinHandle<()>,
}

impl LogWriter {
    /// A writer whose lines `write` consumes in order, on a task of its own.
    pub fn spawn<F, Fut>(write: F) -> LogWriter
    where
        F: FnMut(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut write = write;
        let done = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                write(line).await;
            }
        });
        LogWriter { tx, done }
    }

    /// Wait until every line sent is written.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.done.await;
    }
}

/// The build log in Redis (a write that fails is dropped: the log is for people, not the job).
pub struct RedisBuildLog {
    pub con: ConnectionManager,
    /// Where a build step begun is marked as the job's progress (`attempts`).
    pub progress: Option<Stream>,
}

impl BuildLog for RedisBuildLog {
    fn open(&self, agent: &str, job: &str) -> LogWriter {
        let redis = self.con.clone();
        let progress = self.progress.clone();
        let key = buildlog_key(agent);
        let job = job.to_string();
        LogWriter::spawn(move |line| {
            let mut redis = redis.clone();
            let progress = progress.clone();
            let key = key.clone();
            let job = job.clone();
            async move {
                if let (Some(stream), Some(n)) = (&progress, build_step(&line)) {
                    if let Ok(true) = stream.reached(&job, Mark::build_step(n)).await {
                        tracing::debug!("build step {n}: further than any earlier attempt");
                    }
                }
                let _: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(2000)
                    .arg("*")
                    .arg("job")
                    .arg(&job)
                    .arg("line")
                    .arg(&line)
                    .query_async(&mut redis)
                    .await;
            }
        })
    }
}
