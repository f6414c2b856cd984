//! `strait-echo`: the demo echo backend as a standalone process.

use std::net::SocketAddr;

use clap::Parser;
use strait_gateway::echo::{EchoConfig, EchoServer};
use tokio::signal::unix::{signal, SignalKind};

/// Command line of strait-echo.
#[derive(Debug, Parser)]
#[command(version, about = "HTTP/1.1 + h2c echo backend for the Strait demo and tests")]
struct Cli {
    /// Address to listen on (HTTP/1.1 and h2c prior knowledge on the same port).
    #[arg(long, env = "STRAIT_ECHO_LISTEN", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Server name, reported in the body and in the x-echo-name header.
    #[arg(long, env = "STRAIT_ECHO_NAME", default_value = "echo")]
    name: String,
    /// Application version reported in the body (`--version` is clap's own flag).
    #[arg(long, env = "STRAIT_ECHO_APP_VERSION", default_value = "v1")]
    app_version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();

    // Install handlers before announcing readiness so a signal right after the banner is not lost.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    let config = EchoConfig {
        name: cli.name.clone(),
        version: cli.app_version.clone(),
    };
    let server = EchoServer::start(cli.listen, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.listen))?;
    println!(
        "strait-echo {} ({}) listening on {}",
        cli.name, cli.app_version, server.addr
    );

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
