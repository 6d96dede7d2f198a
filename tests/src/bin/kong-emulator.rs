//! `kong-emulator`: the Kong 3.4 Admin API emulator as a process (for end-to-end tests and manual trials).

use clap::Parser;
use nasiko_tests::kong::{KongEmulator, Options, Timing, DEFAULT_PLUGINS};
use std::net::SocketAddr;

/// A stand-in for Kong 3.4 in DB mode or DB-less: the Admin API (services, routes, plugins) and a proxy
/// listener that forwards requests by the routes it holds. Not Kong: for tests and local trials.
///
/// Control endpoints (on both listeners): GET|DELETE /__emulator/requests,
/// PUT /__emulator/fault {"mode":"none|refuse|error500|delay","delay_ms":N},
/// PUT /__emulator/plugins {"available":[names]}.
///
/// Like Kong, it reads KONG_WORKER_CONSISTENCY (strict | eventual, default eventual) and
/// KONG_WORKER_STATE_UPDATE_FREQUENCY (seconds > 0, default 5): in DB mode under eventual, a
/// route or plugin written through the Admin API reaches the proxy at the next rebuild tick.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address of the Admin API listener (Kong's 8001): ip:port or host:port. A host name is
    /// resolved once at start, as Kong's nginx resolves a name in `admin_listen`; the stacks
    /// name an alias the gateway has on the platform network only, so agents cannot reach it.
    #[arg(long, env = "EMULATOR_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    admin_listen: String,
    /// Address of the proxy listener (Kong's 8000).
    #[arg(long, env = "EMULATOR_PROXY_LISTEN", default_value = "127.0.0.1:8000")]
    proxy_listen: SocketAddr,
    /// Comma-separated plugins the node reports in `GET /` as available_on_server
    /// (drop `nasiko-auth` to emulate a node without it).
    #[arg(long, env = "EMULATOR_PLUGINS", value_delimiter = ',', default_values_t = DEFAULT_PLUGINS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    plugins: Vec<String>,
    /// `postgres` (DB mode) or `off` (DB-less: configuration only through POST /config, as
    /// Kong with KONG_DATABASE=off).
    #[arg(long, env = "EMULATOR_DATABASE", default_value = "postgres", value_parser = ["postgres", "off"])]
    database: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let a = Args::parse();
    // Kong refuses to start on a bad setting (`conf_loader`'s `check_and_parse`)
    let timing = match Timing::from_env(|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kong-emulator: {e}");
            std::process::exit(1);
        }
    };
    let admin = match resolve(&a.admin_listen).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("kong-emulator: --admin-listen '{}': {e}", a.admin_listen);
            std::process::exit(2);
        }
    };
    let emu = match KongEmulator::start(Options {
        admin,
        proxy: a.proxy_listen,
        plugins: a.plugins,
        dbless: a.database == "off",
        timing,
    })
    .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kong-emulator: cannot listen on {admin} / {}: {e}. Is the port taken? Pass --admin-listen/--proxy-listen.", a.proxy_listen);
            std::process::exit(1);
        }
    };
    println!(
        "kong-emulator: admin on {}, proxy on {} (stand-in, not Kong); worker_consistency={}, worker_state_update_frequency={}",
        emu.admin_url(),
        emu.proxy_url(),
        timing.consistency.as_str(),
        timing.frequency_json()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    drop(emu);
}

/// The one address `host:port` names. Names that do not resolve yet are retried for 10 s
/// (a container's network aliases can lag its start); a name with several addresses is refused,
/// since binding only one of them would leave the others unserved.
async fn resolve(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let mut last = String::new();
    for _ in 0..50 {
        match tokio::net::lookup_host(listen).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                return match addrs.as_slice() {
                    [one] => Ok(*one),
                    [] => Err("resolves to no address".into()),
                    many => Err(format!(
                        "resolves to {} addresses ({many:?}); name exactly one",
                        many.len()
                    )),
                };
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(format!(
        "does not resolve ({last}); write ip:port or a host name this container can resolve"
    ))
}
