//! build-agent: Redis stream → validated job → docker build / docker compose → status.

pub mod attempts;
pub mod buildlog;
pub mod card;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod guard;
pub mod http;
pub mod job;
pub mod outbox;
pub mod pipeline;
pub mod process;
pub mod report;
pub mod retry;
pub mod runner;
pub mod stream;
pub mod worker;

/// Run the daemon until `shutdown` completes.
pub async fn run(
    cfg: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), worker::StartError> {
    let w = worker::Worker::start(cfg).await?;
    w.run(shutdown).await;
    Ok(())
}
