//! build-agent entry point: parse the command line, start logging, dispatch the subcommand.

use build_agent::cli::CliError;
use build_agent::config::{is_legacy_listener_command, Cli, Command, Config, RunArgs};
use clap::Parser;

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    // upstream's legacy worker command means the consumer: parse as if no argument was given
    let legacy = is_legacy_listener_command(&argv);
    let mut args = if legacy {
        argv[..1].to_vec()
    } else {
        argv.clone()
    };
    let mut cli = Cli::parse_from(&args);
    if cli.command.is_none() {
        // `build-agent` alone is `build-agent run` (with the same flags and environment)
        args.insert(1, "run".into());
        cli = Cli::parse_from(args);
    }
    start_logging(&cli.common.log_format);
    if legacy {
        tracing::info!(
            command = %argv[1..].join(" "),
            "this is the Python listener's command (upstream's compose file); running the consumer (build-agent run) in its place"
        );
    }
    let c = &cli.common;
    let result: Result<(), CliError> = match cli.command {
        None => unreachable!("parsed as run above"),
        Some(Command::Run(r)) => run(c, *r).await,
        Some(Command::Submit(a)) => match build_agent::cli::submit(c, &a).await {
            Ok(id) => {
                println!("{id}");
                match a.wait {
                    None => Ok(()),
                    Some(secs) => build_agent::cli::wait_for_job(c, &a.agent_name, &id, secs)
                        .await
                        .map(|outcome| println!("{outcome}")),
                }
            }
            Err(e) => Err(e),
        },
        Some(Command::Status { name }) => build_agent::cli::status(c, &name).await.map(|v| {
            if v.is_empty() {
                println!("no status for agent '{name}' (nothing deployed in the last 24 h?)");
            }
            for (k, val) in v {
                println!("{k}: {val}");
            }
        }),
        Some(Command::Logs { name, lines }) => build_agent::cli::logs(c, &name, lines)
            .await
            .map(|v| v.iter().for_each(|l| println!("{l}"))),
        Some(Command::Plan {
            dir,
            name,
            owner_id,
        }) => build_agent::cli::plan(c, &dir, name, &owner_id)
            .await
            .map(|s| print!("{s}")),
        Some(Command::Undeploy { name }) => build_agent::cli::undeploy(c, &name)
            .await
            .map(|n| println!("removed {n} container(s) of agent '{name}'")),
        Some(Command::Names { names }) => build_agent::cli::names(c, &names).map(|s| print!("{s}")),
        Some(Command::SyncPlan { dir, files }) => {
            match build_agent::deploy::dockerfile::sync_plan(&dir, &files) {
                Ok(plan) => plan.iter().for_each(|(f, to)| println!("sync\t{f}\t{to}")),
                Err(why) => println!("build\t{why}"),
            }
            Ok(())
        }
        Some(Command::Guard {
            every,
            once,
            remove,
        }) => guard(&c.docker_network, every, once, remove).await,
    };
    if let Err(e) = result {
        eprintln!("build-agent: {e}");
        std::process::exit(e.exit_code());
    }
}

/// Logs on stderr, as text or JSON (`LOG_FORMAT`), filtered by `RUST_LOG` (default info).
fn start_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
}

async fn run(c: &build_agent::config::Common, r: RunArgs) -> Result<(), CliError> {
    let cfg = Config::new(c, r)?;
    build_agent::run(cfg, shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}

async fn guard(stack: &str, every: u64, once: bool, remove: bool) -> Result<(), CliError> {
    use build_agent::guard;
    let failed = |e: guard::GuardError| CliError::Failed(e.to_string());
    if remove {
        let n = guard::remove(stack).await.map_err(failed)?;
        println!("removed {n} rule(s) of the agent guard of stack '{stack}'");
        Ok(())
    } else if once {
        let n = guard::ensure(stack).await.map_err(failed)?;
        println!("the agent guard of stack '{stack}' is in place ({n} rule(s) added)");
        Ok(())
    } else {
        let every = std::time::Duration::from_secs(every.max(1));
        guard::keep(stack, every, shutdown_signal())
            .await
            .map_err(failed)
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
