//! `strait-sidecar run`: the engine in sidecar mode beside one workload. It captures
//! nothing itself (`init` made the rules); it serves the capture ports they
//! redirect to, with the configuration of a folder or a controller, and the
//! workload's identity from the controller's CA or a mounted folder.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use strait_config::{Role, Scope, Workload};
use strait_gateway::engine::{Engine, EngineSettings};
use strait_gateway::serve_args::{mesh_config, ServeArgs};
use strait_gateway::server::{build, CapturePorts, Gateway, Options, Serving, StartError};
use strait_gateway::sources::controller::{first_config, Client, ControllerSource, ControllerTls};
use strait_push::proto;

/// Flags of `strait-sidecar run` (each also readable from its env var; the pod's
/// own facts from the downward API's, as the injector sets them).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Folder of YAML/JSON resources to serve; watched for changes. Either this or
    /// --controller.
    #[arg(long, env = "STRAIT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Follow a Strait controller: `HOST:PORT` of its push port (15010, plaintext), or
    /// `https://HOST:PORT` of its TLS port (15012), which also signs the workload's
    /// certificate (with --token-file), checked against --ca-root.
    #[arg(long, env = "STRAIT_CONTROLLER", value_name = "ADDRESS")]
    controller: Option<String>,
    /// The mesh's root certificate (the `istio-ca-root-cert` ConfigMap, mounted), for
    /// an `https://` controller.
    #[arg(
        long,
        env = "STRAIT_CA_ROOT",
        default_value = "/var/run/secrets/strait/root-cert.pem"
    )]
    ca_root: PathBuf,
    /// The name the controller's certificate is checked for (default: the host of
    /// --controller).
    #[arg(long, env = "STRAIT_CONTROLLER_SERVER_NAME")]
    controller_server_name: Option<String>,
    /// The pod's service account token (projected, audience `istio-ca`), sent to the CA.
    #[arg(
        long,
        env = "STRAIT_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/strait-token"
    )]
    token_file: PathBuf,
    /// The mesh's trust domain (the SPIFFE IDs' authority).
    #[arg(long, env = "STRAIT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Validity asked of the CA for the workload certificate, in seconds (renewed at
    /// half of it).
    #[arg(long, env = "STRAIT_WORKLOAD_CERT_TTL", default_value_t = 86_400)]
    workload_cert_ttl: u64,
    /// Istio mesh config file, read at start (folder mode; a controller sends its own).
    #[arg(long, env = "STRAIT_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Folder with the workload's certificate in Istio's file-mounted layout
    /// (`cert-chain.pem`, `key.pem`, `root-cert.pem`), looked at every few seconds
    /// for a rotated one.
    #[arg(long, env = "STRAIT_IDENTITY_DIR")]
    identity_dir: Option<PathBuf>,
    /// The pod's name.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod_name: String,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The pod's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The pod's IP addresses.
    #[arg(long, env = "INSTANCE_IP", value_delimiter = ',')]
    pod_ip: Vec<IpAddr>,
    /// The pod's labels, `KEY=VALUE,...` (selectors of policies match them).
    #[arg(long, env = "STRAIT_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// A downward API file of the pod's labels (`key="value"` lines), read at start.
    #[arg(long, env = "STRAIT_LABELS_FILE")]
    labels_file: Option<PathBuf>,
    /// Where the capture rules send what the application calls.
    #[arg(long, env = "STRAIT_OUTBOUND_PORT", default_value_t = 15001)]
    outbound_port: u16,
    /// Where the capture rules send what reaches the application.
    #[arg(long, env = "STRAIT_INBOUND_PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// Longest wait for in-flight requests after SIGTERM, in seconds (Istio's
    /// terminationDrainDuration).
    #[arg(long, env = "STRAIT_DRAIN_SECONDS", default_value_t = 5)]
    drain_seconds: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Labels from `KEY=VALUE` items and a downward API file.
fn labels(args: &RunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(path) = &args.labels_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("{}: {line:?} is not key=\"value\"", path.display()))?;
            out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    for item in args.labels.iter().filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("--labels entry {item:?} is not KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn scope(args: &RunArgs, mesh: strait_config::mesh::MeshConfig) -> anyhow::Result<Scope> {
    Ok(Scope {
        role: Role::Sidecar,
        workload: Workload {
            namespace: args.namespace.clone(),
            labels: labels(args)?,
            service_account: Some(args.service_account.clone()),
            ips: args.pod_ip.clone(),
        },
        mesh,
    })
}

fn serving(args: &RunArgs, mesh: &strait_config::mesh::MeshConfig) -> Serving {
    let mut serving = args.serve.serving(mesh, Duration::from_secs(args.drain_seconds));
    serving.capture = CapturePorts {
        outbound: args.outbound_port,
        inbound: args.inbound_port,
    };
    // Envoy's sidecars set no limit: on the inbound side, each reconnection a limit
    // asks of a peer's sidecar costs a new mutual TLS handshake on both ends.
    serving.max_requests_per_connection = args.serve.max_requests_per_connection.unwrap_or(0);
    serving
}

/// Runs the sidecar until SIGTERM (drains) or SIGINT.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let (mut gateway, tls) = match (&args.config_dir, &args.controller) {
        (Some(_), Some(_)) => bail!("give --config-dir or --controller, not both"),
        (None, None) => bail!("give --config-dir DIR or --controller ADDRESS"),
        (Some(dir), None) => (from_folder(args, dir)?, None),
        (None, Some(address)) => from_controller(args, address)?,
    };
    match (&args.identity_dir, tls) {
        (Some(dir), _) => gateway.identity_from_files(dir),
        (None, Some(client)) => {
            let spiffe_id = strait_push::csr::spiffe_id(&args.trust_domain, &args.namespace, &args.service_account);
            gateway.identity_from_ca(&client, spiffe_id, &args.token_file, Duration::from_secs(args.workload_cert_ttl));
        }
        (None, None) => log::warn!(
            "no workload certificate (neither --identity-dir nor an https:// --controller): the sidecar speaks plaintext and is never ready"
        ),
    }
    gateway.run();
    Ok(())
}

fn from_folder(args: &RunArgs, dir: &std::path::Path) -> anyhow::Result<Gateway> {
    let (mesh, notes) = match mesh_config(args.mesh_config.as_deref()) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            bail!("the mesh config is not valid");
        }
    };
    for d in &notes {
        log::info!("{d}");
    }
    let opts = Options {
        config_dir: dir.to_path_buf(),
        // Sidecars order no certificates; the store is never written.
        acme_store: dir.join("acme"),
        scope: scope(args, mesh.clone())?,
        jwks_refresh: args.serve.jwks_refresh(),
        acme_issuers: Vec::new(),
        acme_check: Duration::from_secs(3600),
        serving: serving(args, &mesh),
    };
    match build(&opts) {
        Ok(gateway) => Ok(gateway),
        Err(StartError::Config { dir, diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            bail!("the configuration in {} is invalid; nothing started", dir.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// Follows the controller at `address`; with TLS, its client also reaches the CA.
fn from_controller(args: &RunArgs, address: &str) -> anyhow::Result<(Gateway, Option<Client>)> {
    let labels = labels(args)?;
    let tls = if address.starts_with("https://") {
        let tls = ControllerTls::for_address(address, &args.ca_root, args.controller_server_name.as_deref())
            .with_context(|| format!("the mesh root {}", args.ca_root.display()))?;
        Some(tls)
    } else {
        None
    };
    let client = Client {
        tls,
        address: address.to_string(),
        hello: proto::Hello {
            proxy_id: format!("{}.{}", args.pod_name, args.namespace),
            role: proto::Role::Sidecar.into(),
            namespace: args.namespace.clone(),
            labels: labels.into_iter().collect(),
            pod_name: args.pod_name.clone(),
            service_account: args.service_account.clone(),
            ips: args.pod_ip.iter().map(ToString::to_string).collect(),
            strait_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    let settings = EngineSettings {
        jwks_refresh: args.serve.jwks_refresh(),
        acme_store: std::env::temp_dir().join("strait-acme"),
    };
    log::info!("waiting for a configuration from the controller at {address}");
    let started = first_config(&client, |built, mesh| {
        let scope = scope(args, mesh.clone()).map_err(|e| vec![strait_gateway::engine::engine_diag(e.to_string())])?;
        Engine::start(built, scope, &settings)
    })
    .context("cannot wait for the controller")?;
    let engine: Arc<Engine> = started.value;
    for d in engine.current().warnings.iter() {
        log::warn!("{d}");
    }
    let mut gateway = Gateway::new(engine.clone(), &serving(args, &started.mesh), None)?;
    let secure = client.tls.is_some().then(|| client.clone());
    gateway.add_background(
        "controller",
        ControllerSource {
            engine,
            client,
            started_with: started.digest,
        },
    );
    Ok((gateway, secure))
}
