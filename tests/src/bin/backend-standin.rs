//! `backend-standin`: the Nasiko backend/auth stand-in as a process.

use clap::Parser;
use nasiko_tests::backend::BackendStandin;
use std::net::SocketAddr;

/// A stand-in for the Nasiko backend and auth service: accepts the upload-status, registry and
/// permissions calls of the build agent and records them. Not the backend: for tests and local trials.
///
/// Control: GET|DELETE /__standin/calls, PUT /__standin/mode {"status":N|null,"delay_ms":N}.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let s = match BackendStandin::start(a.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "backend-standin: cannot listen on {}: {e}. Pass --listen.",
                a.listen
            );
            std::process::exit(1);
        }
    };
    println!(
        "backend-standin: listening on {} (stand-in, not the Nasiko backend)",
        s.url()
    );
    wait_for_stop().await;
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
}
