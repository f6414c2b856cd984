//! The command-line flags every role's binary shares (`strait-gateway`,
//! `strait-sidecar run`): the proxy's own ports, client limits and timeouts, and how
//! they and the mesh config make the `Serving` of a server.

use std::net::IpAddr;
use std::time::Duration;

use strait_config::mesh::MeshConfig;

use crate::downstream::{Limits, Underscores};
use crate::server::Serving;

/// The gateway's default for `--max-requests-per-connection`: nginx's
/// `keepalive_requests`, so a client's connection is rebalanced now and then.
pub const GATEWAY_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// Flags shared by the proxies' binaries (each also readable from its env var).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the listeners bind to.
    #[arg(long, env = "STRAIT_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Admin port (`/ready`, `/config_dump`); 0 disables.
    #[arg(long, env = "STRAIT_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Health port (`/healthz/ready`); 0 disables.
    #[arg(long, env = "STRAIT_HEALTH_PORT", default_value_t = 15021)]
    pub health_port: u16,
    /// Metrics port (Prometheus `/stats/prometheus`, Istio's 15020); 0 disables.
    #[arg(long, env = "STRAIT_METRICS_PORT", default_value_t = 15020)]
    pub metrics_port: u16,
    /// Seconds a client may stay silent while sending request headers.
    #[arg(long, env = "STRAIT_REQUEST_HEADER_TIMEOUT", default_value_t = 10)]
    pub request_header_timeout: u64,
    /// Most request headers accepted (431 beyond).
    #[arg(long, env = "STRAIT_MAX_REQUEST_HEADERS", default_value_t = 100)]
    pub max_request_headers: usize,
    /// Most KiB of request headers accepted (431 beyond).
    #[arg(long, env = "STRAIT_MAX_REQUEST_HEADERS_KB", default_value_t = 60)]
    pub max_request_headers_kb: usize,
    /// Request headers with `_` in their names: reject (400), drop, or allow.
    #[arg(long, env = "STRAIT_HEADERS_WITH_UNDERSCORES", value_enum, default_value = "reject")]
    pub headers_with_underscores: Underscores,
    /// Seconds a request may see no traffic (reading or writing) before it is ended.
    #[arg(long, env = "STRAIT_STREAM_IDLE_TIMEOUT", default_value_t = 300)]
    pub stream_idle_timeout: u64,
    /// Requests one client connection may carry, HTTP/1 or HTTP/2; then the client is
    /// asked to reconnect. 0: no limit. Default: 1000 for the gateway (nginx's
    /// `keepalive_requests`), no limit for a sidecar (as Envoy's sidecars).
    #[arg(long, env = "STRAIT_MAX_REQUESTS_PER_CONNECTION")]
    pub max_requests_per_connection: Option<u32>,
    /// Seconds between fetches of a RequestAuthentication's jwksUri (Istio's default:
    /// 20 minutes); a failed fetch is retried sooner, with backoff.
    #[arg(long, env = "STRAIT_JWKS_REFRESH_INTERVAL", default_value_t = 1200)]
    pub jwks_refresh_interval: u64,
    /// Worker threads per listener (default: one per core).
    #[arg(long, env = "STRAIT_THREADS")]
    pub threads: Option<usize>,
    /// The path of HTTP/1 requests: `lean` (pingora-core sessions directly, for the
    /// routes it serves) or `full` (Pingora's proxy for every request).
    #[arg(long, env = "STRAIT_HTTP1_PATH", value_enum, default_value = "lean")]
    pub http1_path: crate::lean_path::Http1Path,
}

impl ServeArgs {
    /// How the engine is served: these flags, the longest `drain` on SIGTERM, and the
    /// mesh config's settings for clients, the access log and traces.
    pub fn serving(&self, mesh: &MeshConfig, drain: Duration) -> Serving {
        Serving {
            port_map: Default::default(),
            bind: self.bind_address,
            admin_port: self.admin_port,
            health_port: self.health_port,
            metrics_port: self.metrics_port,
            drain,
            header_timeout_secs: self.request_header_timeout.max(1),
            // A binary runs one server.
            work_stealing: false,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            limits: Limits {
                max_headers: self.max_request_headers,
                max_header_bytes: self.max_request_headers_kb * 1024,
                underscores: self.headers_with_underscores,
                stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout.max(1)),
                normalization: mesh.path_normalization,
                trusted_hops: mesh.num_trusted_proxies,
                ..Limits::default()
            },
            max_requests_per_connection: self
                .max_requests_per_connection
                .unwrap_or(GATEWAY_MAX_REQUESTS_PER_CONNECTION),
            access_log: mesh.access_log_file.clone().map(|f| {
                let encoding = if mesh.access_log_json {
                    crate::access_log::Encoding::Json
                } else {
                    crate::access_log::Encoding::Text
                };
                (f, encoding)
            }),
            tracing: mesh.tracing.clone(),
            capture: Default::default(),
            http1_path: self.http1_path,
        }
    }

    /// Time between fetches of a remote JWKS.
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_interval.max(1))
    }
}

/// Reads Istio's mesh config file (the `mesh` key of the istio ConfigMap) once, at
/// start; without one, the defaults. Returns its notes beside it; its diagnostics
/// when it is invalid.
pub fn mesh_config(
    path: Option<&std::path::Path>,
) -> Result<(MeshConfig, Vec<strait_config::Diagnostic>), Vec<strait_config::Diagnostic>> {
    match path {
        None => Ok((MeshConfig::default(), Vec::new())),
        Some(path) => strait_config::mesh::load(path),
    }
}
