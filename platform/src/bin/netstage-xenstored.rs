//! `netstage-xenstored`: the embedded XenStore daemon of the emulated platform, standalone.
//!
//! Serves the real XenStore wire protocol on Unix sockets: dom0 on `--socket`, each guest
//! domain on `<domain-dir>/dom<ID>.sock` once introduced (with `--introduce ID` at start-up,
//! or `XS_INTRODUCE` from dom0). Point clients at a socket with `XENSTORED_PATH`. Stops
//! cleanly on SIGINT or SIGTERM, removing its sockets. Logs to stderr through `env_logger`
//! (`RUST_LOG`, default `info`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use netstage_platform::sim::xenstored::{Quotas, Xenstored, XenstoredConfig};

/// The netstage XenStore daemon (real wire protocol, emulated platform).
#[derive(Debug, Parser)]
// A negative number is a bad value of its option, named as such, not an unknown flag.
#[command(version, allow_negative_numbers = true)]
struct Args {
    /// Dom0's socket: clients of the control domain connect here (XENSTORED_PATH=PATH).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Directory for guest sockets `dom<ID>.sock` [default: the socket's directory].
    #[arg(long, value_name = "DIR")]
    domain_dir: Option<PathBuf>,
    /// Introduce guest domain ID at start-up (repeatable): opens its socket.
    #[arg(long = "introduce", value_name = "ID")]
    introduce: Vec<u16>,
    /// Set a quota guests are held to, NAME=N (repeatable; 0: no limit), as C xenstored's
    /// --quota: nodes, watches, transactions, transaction-nodes, node-permissions,
    /// node-size, path-max, outstanding, connections, queued-bytes, queued-messages.
    #[arg(short = 'Q', long = "quota", value_name = "NAME=N", value_parser = checked_quota)]
    quotas: Vec<String>,
    /// On an error, print its backtrace too (where one was captured; as NETSTAGE_BACKTRACE=1).
    #[arg(long)]
    backtrace: bool,
}

/// `NAME=N` of `--quota`, checked against the quotas' names.
fn checked_quota(spec: &str) -> Result<String, String> {
    Quotas::default().set_from(spec)?;
    Ok(spec.to_string())
}

/// Runs; an error is printed once, with its causes (see
/// [`netstage_platform::cli::exit_code`]).
fn main() -> std::process::ExitCode {
    netstage_platform::cli::exit_code("netstage-xenstored", run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let domain_dir = match args.domain_dir {
        Some(d) => d,
        None => args
            .socket
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    let mut quotas = Quotas::default();
    for spec in &args.quotas {
        quotas.set_from(spec).map_err(anyhow::Error::msg)?;
    }
    let xs = Xenstored::start_with_quotas(
        XenstoredConfig {
            socket: args.socket.clone(),
            domain_dir,
        },
        quotas,
    )
    .with_context(|| format!("cannot serve XenStore on {}", args.socket.display()))?;
    println!("dom0: {}", xs.socket().display());
    for d in args.introduce {
        let p = xs
            .introduce(d)
            .with_context(|| format!("cannot open the socket of domain {d}"))?;
        println!("dom{d}: {}", p.display());
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    xs.shutdown();
    Ok(())
}
