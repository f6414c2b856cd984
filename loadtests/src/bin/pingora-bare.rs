//! `pingora-bare`: the engine floor. A pass-through Pingora proxy with no routing:
//! every request goes to one upstream, on one thread, optionally over TLS.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// Bare Pingora pass-through proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Plain HTTP listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream address.
    #[arg(long)]
    upstream: SocketAddr,
    /// TLS listen address (needs --cert and --key).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Certificate chain PEM file.
    #[arg(long)]
    cert: Option<String>,
    /// Private key PEM file.
    #[arg(long)]
    key: Option<String>,
}

/// The allocator Strait's gateway ships with, so the floor differs from it only by
/// what Strait does per request.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
strait_gateway::jemalloc_options!();

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream: cli.upstream });
    service.add_tcp(&cli.listen.to_string());
    if let (Some(addr), Some(cert), Some(key)) = (cli.tls_listen, cli.cert.as_deref(), cli.key.as_deref()) {
        let mut tls = TlsSettings::intermediate(cert, key)?;
        tls.enable_h2();
        service.add_tls_with_settings(&addr.to_string(), None, tls);
    }
    server.add_service(service);
    server.run_forever()
}
