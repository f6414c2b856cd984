//! `strait-controller`: reads Istio resources from a Kubernetes cluster and/or a
//! folder, builds each connected proxy's configuration with the pipeline the proxies
//! use, and pushes it to them (port 15010); metrics and proxy status on port 15014;
//! the sidecar injection webhook on port 15017. On a cluster, its CA signs workload
//! certificates, served with the push service over TLS on port 15012, and the
//! replica holding the Lease `strait-controller` writes status on the Istio
//! resources.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use strait_controller::controller::{Controller, Options};
use strait_controller::folder_source::FolderSource;
use strait_controller::kube_source::{client_from_kubeconfig, KubeSource};
use strait_controller::store::Store;

/// Strait's controller: pushes configuration to the gateways and sidecars that
/// follow it (`strait-gateway --controller HOST:PORT`).
#[derive(Parser, Debug)]
#[command(name = "strait-controller", version, about)]
struct Cli {
    /// Folder of YAML/JSON resources to serve (read as `strait-gateway --config-dir`
    /// reads one); watched for changes.
    #[arg(long, env = "STRAIT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Istio mesh config file (the `mesh` key of the istio ConfigMap), sent to the
    /// proxies with their configuration; watched for changes. With `--kubernetes`,
    /// the cluster's `istio-system/istio` ConfigMap is read instead.
    #[arg(long, env = "STRAIT_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Read the resources from a Kubernetes cluster: the one `--kubeconfig` names,
    /// else `$KUBECONFIG` or `~/.kube/config`, else the Pod's service account.
    #[arg(long, env = "STRAIT_KUBERNETES")]
    kubernetes: bool,
    /// Kubeconfig file of the cluster to read (implies `--kubernetes`).
    #[arg(long, env = "STRAIT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address the ports listen on.
    #[arg(long, env = "STRAIT_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Push port (gRPC, plaintext) proxies connect to.
    #[arg(long, env = "STRAIT_PUSH_PORT", default_value_t = strait_push::DEFAULT_PUSH_PORT)]
    push_port: u16,
    /// HTTP port: Prometheus `/metrics`, `/debug/proxies` (proxy status), `/ready`;
    /// 0 disables.
    #[arg(long, env = "STRAIT_METRICS_PORT", default_value_t = 15014)]
    metrics_port: u16,
    /// Quiet time after a change before it is built and pushed (changes come in bursts).
    #[arg(long, env = "STRAIT_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// The sidecar injection webhook.
    #[command(flatten)]
    webhook: strait_controller::webhook::Flags,
    /// The CA and the TLS port.
    #[command(flatten)]
    ca: strait_controller::ca::CaFlags,
    /// The election among replicas (Kubernetes mode): the Lease strait-controller
    /// in --namespace.
    #[command(flatten)]
    leader: strait_controller::leader::LeaderFlags,
    /// Gateways deployed for Gateway API Gateways (Kubernetes mode, by the leader).
    #[command(flatten)]
    deploy: strait_controller::gateway_deployment::DeployFlags,
    /// ACME on a cluster (Kubernetes mode, by the leader).
    #[command(flatten)]
    acme: strait_controller::acme::AcmeFlags,
    /// Write status on the Istio resources (Kubernetes mode, by the leader):
    /// Reconciled, Programmed, validationMessages.
    #[arg(long, env = "STRAIT_WRITE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    write_status: bool,
}

fn main() -> ExitCode {
    // kube-runtime's reconciler (the CA's root ConfigMaps) logs every namespace it
    // visits at info: its warnings are what matters.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,kube_runtime::controller=warn"))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strait-controller: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait-controller: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let kubernetes = cli.kubernetes || cli.kubeconfig.is_some();
    if cli.config_dir.is_none() && !kubernetes {
        bail!("no source of configuration: give --kubernetes (or --kubeconfig FILE) and/or --config-dir DIR");
    }
    if kubernetes && cli.mesh_config.is_some() {
        bail!(
            "--mesh-config is for folder mode: with --kubernetes the mesh config is the istio-system/istio ConfigMap"
        );
    }
    // The client first: a cluster that cannot be reached is an error before any
    // port is bound.
    let client = match (kubernetes, &cli.kubeconfig) {
        (false, _) => None,
        (true, Some(path)) => Some(client_from_kubeconfig(path).await?),
        (true, None) => Some(
            kube::Client::try_default()
                .await
                .context("no Kubernetes cluster: neither a kubeconfig nor an in-cluster service account was found")?,
        ),
    };
    let options = Options {
        push: SocketAddr::new(cli.bind_address, cli.push_port),
        http: (cli.metrics_port != 0).then(|| SocketAddr::new(cli.bind_address, cli.metrics_port)),
    };
    let store = Store::new(Duration::from_millis(cli.debounce_ms));
    // Before the servers start: the source holds the store until it has listed
    // every kind, so no proxy is sent a half-read cluster.
    let kube = client.clone().map(|client| KubeSource::new(client, store.clone()));
    let mut controller = Controller::start(store.clone(), &options).await?;
    // Sidecar injection (src/webhook): served when a certificate is given.
    strait_controller::webhook::start(&cli.webhook, cli.bind_address, client.clone(), &mut controller).await?;
    if let Some(kube) = kube {
        controller.add_source("kubernetes", kube.run_until(controller.stop_signal()));
    }
    // Replicas all serve pushes; the one holding the Lease writes status.
    if let Some(client) = &client {
        let identity = strait_controller::leader::identity();
        controller.elect(client.clone(), &cli.ca.namespace, identity.clone(), &cli.leader)?;
        if cli.write_status {
            strait_controller::istio_status::start(
                &mut controller,
                client.clone(),
                &cli.ca.namespace,
                identity,
                &cli.leader,
            );
            strait_controller::gateway_api_status::start(
                &mut controller,
                client.clone(),
                strait_controller::istio_status::INTERVAL,
            );
        }
        if cli.deploy.deploy_gateways {
            strait_controller::gateway_deployment::start(
                &mut controller,
                client.clone(),
                &cli.deploy,
                &cli.webhook.inject.proxy_image,
            )?;
        }
        // Certificates for Gateways annotated strait.io/acme, kept in their Secrets.
        strait_controller::acme::start(&mut controller, client.clone(), &cli.ca.namespace, &cli.acme)?;
    }
    // The CA and the TLS port: on a cluster only (TokenReview, the CA's Secret).
    match &client {
        Some(client) => {
            strait_controller::ca::start(&mut controller, client.clone(), &cli.ca, cli.bind_address).await?
        }
        None if cli.ca.secure_port != 0 => log::info!("no CA and no TLS port: they need --kubernetes"),
        None => {}
    }
    if let Some(dir) = cli.config_dir {
        let folder = FolderSource {
            dir,
            mesh_config: cli.mesh_config,
        };
        controller.add_source("folder", folder.run(store, controller.stop_signal()));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let outcome = tokio::select! {
        ended = controller.wait() => ended.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    log::info!("stopping");
    controller.stop().await;
    outcome
}
