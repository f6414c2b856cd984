//! `strait-sidecar`: the per-pod sidecar. `init` sets up the pod's traffic capture
//! (iptables, run once by the init container); `run` is the proxy.

mod capture;
mod run;

/// jemalloc, as the gateway: freed memory goes back to the OS (a sidecar per pod).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
strait_gateway::jemalloc_options!();

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Strait's per-pod sidecar.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set up the pod's traffic capture (iptables), as Istio's istio-iptables does.
    ///
    /// Redirects the app's outbound TCP to --outbound-port and inbound TCP to
    /// --inbound-port, never the traffic of --proxy-uid/--proxy-gid. The rules live in
    /// the nat table in Istio's chains (ISTIO_INBOUND, ISTIO_IN_REDIRECT, ISTIO_OUTPUT,
    /// ISTIO_REDIRECT), for IPv4 and, when the pod has an IPv6 address, IPv6. Running it
    /// again replaces them; --cleanup removes them.
    Init(capture::InitArgs),
    /// Run the proxy: serve the capture ports (outbound 15001, inbound 15006) with the
    /// configuration of a folder or a controller and the workload's certificate.
    Run(Box<run::RunArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match &cli.command {
        Command::Init(args) => ("init", capture::init(args).map_err(anyhow::Error::from)),
        Command::Run(args) => {
            if let Err(e) = strait_gateway::admin::logging::init("info") {
                eprintln!("strait-sidecar: logger not installed: {e}");
            }
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                log::warn!("jemalloc background thread not started: {e}");
            }
            ("run", run::run(args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Each error's text already carries its cause (the tool's own stderr).
            eprintln!("strait-sidecar {name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
