//! registry-sidecar entry point: parse flags/env, start logging, drop root (keeping the Docker
//! socket's group), then start the runtime and run until SIGTERM/SIGINT.

use clap::Parser;
use registry_sidecar::config::{Args, Command};
use registry_sidecar::privileges::{self, Outcome};

fn main() {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    if args.command == Some(Command::Check) {
        std::process::exit(check(args));
    }
    // before the runtime starts any thread
    let socket = privileges::socket_path(args.docker_host.as_deref());
    match privileges::drop_root(&args.run_as_user, socket.as_deref()) {
        Ok(Outcome::Switched {
            uid,
            gid,
            socket_gid,
        }) => tracing::info!(
            uid,
            gid,
            ?socket_gid,
            "running unprivileged, with the Docker socket's group"
        ),
        Ok(_) => {}
        Err(e) => {
            eprintln!("registry-sidecar: {e}");
            std::process::exit(2);
        }
    }
    let cfg = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("registry-sidecar: {e}");
            std::process::exit(2);
        }
    };
    registry_sidecar::memory::one_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(registry_sidecar::run(cfg, shutdown_signal())) {
        eprintln!("registry-sidecar: {e}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `registry-sidecar check`: prints what Kong lacks; the exit code says whether it lacks anything.
fn check(args: Args) -> i32 {
    let cfg = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("registry-sidecar check: {e}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(registry_sidecar::check::check(&cfg)) {
        Err(e) => {
            eprintln!("registry-sidecar check: {e}");
            2
        }
        Ok(r) => {
            println!(
                "Kong at {}: {} agents routed, {} static proxies",
                cfg.kong_admin_url, r.agents, r.proxies
            );
            for w in &r.wanted {
                println!("  wants    {w}");
            }
            for w in &r.waiting {
                println!("  waiting  {w}");
            }
            for d in &r.differences {
                println!("  DIFFERS  a sync would {d}");
            }
            if r.differences.is_empty() {
                println!("Kong holds everything the sidecar wants");
                0
            } else {
                eprintln!(
                    "{} difference(s): the sidecar is behind, or cannot write (see its /status and logs)",
                    r.differences.len()
                );
                1
            }
        }
    }
}
