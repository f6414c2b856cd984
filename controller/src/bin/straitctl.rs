//! `straitctl`: the command line for Strait users. `analyze` checks configuration
//! files as `istioctl analyze` does; `proxy-config` and `proxy-status` read running
//! proxies through their admin ports, as `istioctl proxy-config` / `proxy-status` do,
//! and `proxy-status --controller` reads what the controller knows of its proxies.
//! `kube-inject` adds the sidecar to manifests offline, as `istioctl kube-inject`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use strait_config::Scope;
use strait_controller::admin_client::Target;
use strait_controller::analyze::{analyze, any_errors, load, Input};
use strait_controller::controller_status;
use strait_controller::proxy_config::{self, Section};
use strait_controller::proxy_status::{self, SyncStatus};

/// Strait's command line.
#[derive(Parser, Debug)]
#[command(name = "straitctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reports problems in Istio resources with Istio's analyzer codes; exits 1 on errors.
    Analyze(AnalyzeArgs),
    /// Prints one part of a proxy's running configuration, read from its admin port.
    #[command(name = "proxy-config", visible_alias = "pc")]
    ProxyConfig(ProxyConfigArgs),
    /// Shows which configuration each proxy runs and whether it is up to date.
    ///
    /// With `--controller`, as the controller knows it: each connected proxy's last
    /// version sent, the last it acknowledged, and SYNCED, STALE (not acknowledged
    /// yet, or held back because the controller cannot build it) or NACK (it refused
    /// the last one and keeps its previous configuration; its diagnostics follow the
    /// table).
    ///
    /// With admin addresses instead, the proxies are compared with each other: the one
    /// with the highest config version is the reference; a proxy serving the same
    /// configuration (same digest) is SYNCED, another one STALE. LAST UPDATE says
    /// whether the proxy accepted its latest configuration attempt. Exits 1 when a
    /// target does not answer.
    #[command(name = "proxy-status", visible_alias = "ps")]
    ProxyStatus(ProxyStatusArgs),
    /// Adds Strait's sidecar to the pods and pod templates of manifests, as the
    /// controller's injection webhook would, and prints them (for `kubectl apply -f -`).
    ///
    /// Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
    /// ReplicationControllers, Jobs and CronJobs are injected; other documents are
    /// printed unchanged, in order. A pod template labeled or annotated
    /// `sidecar.istio.io/inject: "false"` is left out (said on stderr); namespace
    /// labels play no part here.
    #[command(name = "kube-inject")]
    KubeInject(KubeInjectArgs),
}

#[derive(Args, Debug)]
struct KubeInjectArgs {
    /// The manifests (YAML or JSON, several documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    settings: strait_controller::inject::Settings,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SectionArg {
    /// Ports, protocols, SNI names, certificates and where traffic goes.
    Listeners,
    /// Virtual hosts, matches and actions.
    Routes,
    /// Upstream clusters: endpoints, load balancing, TLS.
    Clusters,
    /// Server certificates: DNS names, expiry, fingerprint (never keys).
    Secrets,
}

impl From<SectionArg> for Section {
    fn from(s: SectionArg) -> Section {
        match s {
            SectionArg::Listeners => Section::Listeners,
            SectionArg::Routes => Section::Routes,
            SectionArg::Clusters => Section::Clusters,
            SectionArg::Secrets => Section::Secrets,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// Aligned columns.
    Table,
    /// The admin API's JSON.
    Json,
    /// The same, as YAML.
    Yaml,
}

#[derive(Args, Debug)]
struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    section: SectionArg,
    /// The proxy's admin address, HOST[:PORT] (port 15000 when left out).
    target: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Args, Debug)]
struct ProxyStatusArgs {
    /// Admin addresses of the proxies, HOST[:PORT] (port 15000 when left out).
    #[arg(required_unless_present = "controller", conflicts_with = "controller", num_args = 1..)]
    targets: Vec<String>,
    /// The controller's HTTP address, HOST[:PORT] (port 15014 when left out): show
    /// the proxies connected to it.
    #[arg(long, value_name = "ADDR")]
    controller: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Args, Debug)]
#[group(id = "input", required = true, multiple = false)]
struct Inputs {
    /// Resource files (YAML or JSON, several documents each).
    #[arg(short = 'f', long = "filename", num_args = 1.., value_name = "FILE")]
    files: Vec<PathBuf>,
    /// A folder of resource files, read as `strait-gateway --config-dir` reads it.
    // Not read from STRAIT_CONFIG_DIR: set in a gateway's pod, it would clash with `-f`.
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct AnalyzeArgs {
    #[command(flatten)]
    input: Inputs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Labels of the gateway to translate for, matched by Gateway `selector`s.
    #[arg(
        long,
        env = "STRAIT_LABELS",
        value_delimiter = ',',
        default_value = "app=istio-ingressgateway,istio=ingressgateway"
    )]
    labels: Vec<String>,
    /// Namespace of the gateway to translate for (where TLS Secrets are looked up
    /// after the Gateway's own).
    #[arg(short, long, env = "STRAIT_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// Istio's mesh config the gateway runs with (outbound policy, extension
    /// providers that CUSTOM AuthorizationPolicies name).
    #[arg(long)]
    mesh_config: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// One line per finding, as istioctl prints them.
    Text,
    /// A JSON array of findings.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => run_analyze(&args),
        Command::ProxyConfig(args) => run_proxy_config(&args),
        Command::ProxyStatus(args) => run_proxy_status(&args),
        Command::KubeInject(args) => run_kube_inject(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("straitctl: {e:#}");
        ExitCode::from(2)
    })
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("--labels entry {s:?} is not KEY=VALUE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn run_analyze(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let mesh = match &args.mesh_config {
        None => strait_config::mesh::MeshConfig::default(),
        Some(path) => match strait_config::mesh::load(path) {
            Ok((mesh, _notes)) => mesh,
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                return Ok(ExitCode::from(1));
            }
        },
    };
    let scope = Scope::gateway(&args.namespace, parse_labels(&args.labels)?, mesh);
    let (input, what) = match &args.input.config_dir {
        Some(dir) => (Input::Dir(dir.clone()), format!("files in {}", dir.display())),
        None => {
            let n = args.input.files.len();
            let what = format!("{n} file{}", if n == 1 { "" } else { "s" });
            (Input::Files(args.input.files.clone()), what)
        }
    };
    let loaded = load(&input)?;
    let reports = analyze(&loaded, &scope);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Output::Text if reports.is_empty() => println!("\u{2714} No validation issues found when analyzing {what}."),
        Output::Text => {
            for r in &reports {
                println!("{r}");
            }
        }
    }
    Ok(if any_errors(&reports) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_proxy_config(args: &ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let section = Section::from(args.section);
    let dump = proxy_config::fetch(&target, section)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&dump)?),
        Format::Yaml => print!("{}", strait_controller::yaml::to_yaml(&dump)),
        Format::Table => print!("{}", proxy_config::table(section, &dump).render()),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_controller_status(controller: &str, output: Format) -> anyhow::Result<ExitCode> {
    let target = controller_status::target(controller)?;
    let report = controller_status::fetch(&target)?;
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Yaml => print!("{}", strait_controller::yaml::to_yaml(&serde_json::to_value(&report)?)),
        Format::Table => print!("{}", controller_status::render(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_proxy_status(args: &ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(controller) = &args.controller {
        return run_controller_status(controller, args.output);
    }
    let targets = args
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let statuses = proxy_status::collect(&targets);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&statuses)?),
        Format::Yaml => print!(
            "{}",
            strait_controller::yaml::to_yaml(&serde_json::to_value(&statuses)?)
        ),
        Format::Table => print!("{}", proxy_status::table(&statuses).render()),
    }
    Ok(if statuses.iter().any(|s| s.sync == SyncStatus::Unreachable) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_kube_inject(args: &KubeInjectArgs) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let (text, what) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        (text, "standard input".to_string())
    } else {
        let text =
            std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
        (text, args.file.display().to_string())
    };
    let injected = strait_controller::inject::manifest::kube_inject(&text, &args.settings)
        .with_context(|| format!("cannot inject {what}"))?;
    for note in &injected.skipped {
        eprintln!("straitctl: not injected: {note}");
    }
    print!("{}", injected.yaml);
    Ok(ExitCode::SUCCESS)
}
