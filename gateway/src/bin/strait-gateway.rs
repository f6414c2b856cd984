//! `strait-gateway`: the edge (and egress) gateway.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use strait_config::mesh::MeshConfig;
use strait_config::{Scope, Severity};
use strait_gateway::engine::{Engine, EngineSettings};
use strait_gateway::serve_args::ServeArgs;
use strait_gateway::server::{build, Gateway, Options, Serving, StartError};
use strait_gateway::sources::controller::{first_config, Client, ControllerSource};
use strait_push::proto;

/// jemalloc rather than glibc: with its background thread, memory freed after a
/// config load (the parsed resources) goes back to the OS within seconds, where
/// glibc keeps the fragmented heap at its load-time peak.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
strait_gateway::jemalloc_options!();

/// Strait edge/egress gateway: serves Istio Gateway and VirtualService resources.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Folder of YAML/JSON resources to serve; watched for changes. Either this or
    /// --controller.
    #[arg(long, env = "STRAIT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Follow a Strait controller instead of a folder: HOST:PORT of its push port
    /// (15010). The gateway waits for its first configuration before it listens, then
    /// applies every update, keeps serving when the controller is gone, and
    /// reconnects. The controller sends the mesh config too: --mesh-config is
    /// ignored. ACME is not run in this mode yet.
    #[arg(long, env = "STRAIT_CONTROLLER", value_name = "HOST:PORT")]
    controller: Option<String>,
    /// This proxy's name in the controller's status (with --controller); default
    /// `<hostname>.<namespace>` (in Kubernetes, the pod's name).
    #[arg(long, env = "STRAIT_PROXY_ID")]
    proxy_id: Option<String>,
    /// Gateway port to listening port, e.g. `80=8080,443=8443`.
    #[arg(long, env = "STRAIT_PORT_MAP", value_delimiter = ',')]
    port_map: Vec<String>,
    /// This gateway's labels, matched by Gateway `selector`s; `app` names it in
    /// metrics and traces. The default is the labels of Istio's ingress gateway.
    #[arg(
        long,
        env = "STRAIT_LABELS",
        value_delimiter = ',',
        default_value = "app=istio-ingressgateway,istio=ingressgateway"
    )]
    labels: Vec<String>,
    /// This gateway's namespace (TLS Secrets are looked up here after the Gateway's own).
    #[arg(long, env = "STRAIT_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// Longest wait for in-flight requests after SIGTERM, in seconds.
    #[arg(long, env = "STRAIT_DRAIN_SECONDS", default_value_t = 10)]
    drain_seconds: u64,
    /// Istio mesh config file (the `mesh` key of the istio ConfigMap); read at start.
    /// Ignored with --controller, which sends it.
    #[arg(long, env = "STRAIT_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Where ACME keeps issued certificates (as TLS Secrets, read with the
    /// configuration), account keys and challenge answers; replicas share it.
    /// Default: `acme/` in the config folder.
    #[arg(long, env = "STRAIT_ACME_STORE")]
    acme_store: Option<PathBuf>,
    /// Seconds between looks at the ACME certificates (issue, renew, retry).
    #[arg(long, env = "STRAIT_ACME_CHECK_INTERVAL", default_value_t = 60)]
    acme_check_interval: u64,
    /// Join the mesh: a folder with this gateway's workload certificate in Istio's
    /// file-mounted layout (`cert-chain.pem`, `key.pem`, `root-cert.pem`), looked at
    /// every few seconds for a rotated one. With it, the gateway speaks the mesh's
    /// mTLS to backends that have a sidecar (and to ISTIO_MUTUAL destinations).
    #[arg(long, env = "STRAIT_IDENTITY_DIR")]
    identity_dir: Option<PathBuf>,
    /// Validate the configuration, print diagnostics and exit (1 on errors).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

/// `A=B` entries of a list flag, trimmed; `shape` names the form in errors.
fn pairs<'a>(
    flag: &'a str,
    shape: &'a str,
    items: &'a [String],
) -> impl Iterator<Item = anyhow::Result<(&'a str, &'a str)>> {
    items.iter().filter(|s| !s.is_empty()).map(move |s| {
        let (a, b) = s
            .split_once('=')
            .with_context(|| format!("{flag} entry {s:?} is not {shape}"))?;
        Ok((a.trim(), b.trim()))
    })
}

fn parse_map(items: &[String]) -> anyhow::Result<HashMap<u16, u16>> {
    pairs("--port-map", "FROM=TO", items)
        .map(|pair| {
            let (a, b) = pair?;
            Ok((
                a.parse().with_context(|| format!("bad port {a:?}"))?,
                b.parse().with_context(|| format!("bad port {b:?}"))?,
            ))
        })
        .collect()
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs("--labels", "KEY=VALUE", items)
        .map(|pair| pair.map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn main() -> ExitCode {
    // RUST_LOG's directives (default info) at start; `/logging` changes them later.
    if let Err(e) = strait_gateway::admin::logging::init("info") {
        eprintln!("strait-gateway: logger not installed: {e}");
    }
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        log::warn!("jemalloc background thread not started, freed memory is returned later: {e}");
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strait-gateway: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config_dir = match (&cli.config_dir, &cli.controller) {
        (Some(_), Some(_)) => bail!("give --config-dir or --controller, not both"),
        (None, None) => bail!("give --config-dir DIR or --controller HOST:PORT"),
        (None, Some(address)) => return run_with_controller(&cli, address),
        (Some(dir), None) => dir.clone(),
    };
    // The mesh config is read once, at start: a change needs a restart.
    let (mesh, mesh_notes) = match &cli.mesh_config {
        None => (MeshConfig::default(), Vec::new()),
        Some(path) => match strait_config::mesh::load(path) {
            Ok(loaded) => loaded,
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                bail!("the mesh config {} is not valid", path.display());
            }
        },
    };
    let scope = Scope::gateway(&cli.namespace, parse_labels(&cli.labels)?, mesh.clone());
    let acme_store = cli.acme_store.clone().unwrap_or_else(|| config_dir.join("acme"));
    if cli.check {
        let mut diags = mesh_notes;
        diags.extend(strait_gateway::sources::folder::check(
            &[config_dir.clone(), acme_store],
            &scope,
        ));
        for d in &diags {
            println!("{d}");
        }
        let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
        let warnings = diags.iter().filter(|d| d.severity == Severity::Warning).count();
        println!("{}: {errors} errors, {warnings} warnings", config_dir.display());
        return Ok(if errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    for d in &mesh_notes {
        log::info!("{d}");
    }
    let opts = Options {
        config_dir,
        acme_store,
        scope,
        jwks_refresh: cli.serve.jwks_refresh(),
        acme_issuers: mesh.acme_issuers.clone(),
        acme_check: Duration::from_secs(cli.acme_check_interval.max(1)),
        serving: serving(&cli, &mesh)?,
    };
    match build(&opts) {
        Ok(mut gateway) => {
            join_mesh(&cli, &mut gateway);
            gateway.run();
            Ok(ExitCode::SUCCESS)
        }
        Err(StartError::Config { dir, diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            bail!("the configuration in {} is invalid; nothing started", dir.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// How the engine is served: the shared flags, this binary's, and the mesh config.
fn serving(cli: &Cli, mesh: &MeshConfig) -> anyhow::Result<Serving> {
    let mut serving = cli.serve.serving(mesh, Duration::from_secs(cli.drain_seconds));
    serving.port_map = parse_map(&cli.port_map)?;
    Ok(serving)
}

/// With --identity-dir, the gateway's workload certificate, kept up to date.
fn join_mesh(cli: &Cli, gateway: &mut Gateway) {
    if let Some(dir) = &cli.identity_dir {
        gateway.identity_from_files(dir);
    }
}

/// Serves what the controller at `address` pushes: waits for its first
/// configuration (the listeners are made from it), then follows it.
fn run_with_controller(cli: &Cli, address: &str) -> anyhow::Result<ExitCode> {
    if cli.check {
        bail!("--check checks a folder: use it with --config-dir");
    }
    if cli.mesh_config.is_some() {
        log::warn!("--mesh-config is ignored with --controller: the controller sends the mesh config");
    }
    let labels = parse_labels(&cli.labels)?;
    let proxy_id = cli.proxy_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        format!(
            "{}.{}",
            if host.is_empty() { "strait-gateway" } else { host },
            cli.namespace
        )
    });
    let client = Client {
        tls: None,
        address: address.to_string(),
        hello: proto::Hello {
            proxy_id,
            role: proto::Role::Gateway.into(),
            namespace: cli.namespace.clone(),
            labels: labels.clone().into_iter().collect(),
            strait_version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        },
    };
    let settings = EngineSettings {
        jwks_refresh: cli.serve.jwks_refresh(),
        // ACME does not run in this mode; challenge answers would be kept here.
        acme_store: cli
            .acme_store
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("strait-acme")),
    };
    log::info!("waiting for a configuration from the controller at {address}");
    let started = first_config(&client, |built, mesh| {
        let scope = Scope::gateway(&cli.namespace, labels.clone(), mesh.clone());
        Engine::start(built, scope, &settings)
    })
    .context("cannot wait for the controller")?;
    let engine = started.value;
    for d in engine.current().warnings.iter() {
        log::warn!("{d}");
    }
    if !started.mesh.acme_issuers.is_empty() {
        log::info!(
            "the mesh config names ACME issuers: with --controller, the controller orders the certificates (in Kubernetes mode) and this gateway answers the challenges it publishes"
        );
    }
    // Settings read from the mesh config at start (limits, access log, tracing) stay
    // until a restart, as with --mesh-config.
    let mut gateway = Gateway::new(engine.clone(), &serving(cli, &started.mesh)?, None)?;
    gateway.add_background(
        "controller",
        ControllerSource {
            engine,
            client,
            started_with: started.digest,
        },
    );
    join_mesh(cli, &mut gateway);
    gateway.run();
    Ok(ExitCode::SUCCESS)
}
