//! `sidecar-bench`: what a Strait sidecar costs. Pods are network namespaces on a
//! bridge (in a namespace of its own); a `client` pod and a `server` pod each have a
//! sidecar (`strait-sidecar init` + `run` under uid 1337, mTLS under a STRICT
//! PeerAuthentication), and the server runs `bench-backend` on 8080. The same open
//! loop load is sent from inside the client pod to the service's cluster IP (through
//! the capture rules and both sidecars) and, for the direct path, from a pod without
//! a sidecar to a pod without one running the same backend. Sidecars run on core 0,
//! the load client and the backends on core 1; points are measured in interleaved
//! repetitions and reported as medians with their range. When nginx is installed, a
//! third pair of pods runs it in the sidecars' place (same capture rules, mTLS between
//! its halves): the same-machine reference for what a pair of proxies costs here.
//!
//! Needs root (network namespaces, iptables in them). Everything it creates is
//! removed when it ends, also on error or Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use strait_loadtests::client::{run, LoadResult, LoadSpec};
use strait_loadtests::interrupt;
use strait_loadtests::mesh::{self, Bridge, Ca, Pod, PodSpec, ServiceSpec, SidecarSpec};
use strait_loadtests::netns::{self, Netns};
use strait_loadtests::procstat::{
    core_busy_ns, cpu_ns, idle_activity, peak_rss_kib, rss_kib, rss_split_kib, settled_rss_kib,
};
use strait_loadtests::report::{Results, Table};
use strait_loadtests::targets;

/// Core the sidecars run on; the load client and the backends use the other.
const SIDECAR_CORE: usize = 0;
const CLIENT_CORE: usize = 1;
/// The service's (and the backends') port.
const PORT: u16 = 8080;
/// Where the capture rules send a pod's outbound and inbound connections.
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
/// The Kubernetes namespace of the pods.
const NAMESPACE: &str = "bench";

/// The issue's goals and Istio's published figures, compared against in the report.
const GOAL_IDLE_MB: f64 = 15.0;
const GOAL_PAIR_CPU_US: f64 = 150.0;
const GOAL_ADDED_P99_MS: f64 = 0.3;
const ISTIO_ENVOY_VCPU_PER_1K: f64 = 0.20;
const ISTIO_ENVOY_MB_PER_1K: f64 = 60.0;
const ISTIO_ZTUNNEL_MB: f64 = 12.0;
/// What Istio's docs (1.8 to 1.16) say the sidecars add to the 90th percentile.
const ISTIO_ENVOY_ADDED_P90_MS: f64 = 2.65;
/// Above this share of a core taken by other work during runs, the report warns.
const OTHER_WORK_WARNING_PCT: f64 = 10.0;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// About a minute: 3 repetitions of 2 s.
    Quick,
    /// About 3 minutes: 5 repetitions of 5 s.
    Full,
}

/// Sidecar footprint benchmark.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// How long to run.
    #[arg(long, value_enum, default_value = "quick")]
    mode: Mode,
    /// Where to write sidecar-latest.json and sidecar-latest.md.
    #[arg(long, default_value = "loadtests/results")]
    out: PathBuf,
    /// A flag added to every sidecar's `strait-sidecar run` (repeatable), e.g.
    /// `--sidecar-arg=--max-requests-per-connection=0`; the report lists them.
    #[arg(long = "sidecar-arg", allow_hyphen_values = true, value_name = "FLAG")]
    sidecar_args: Vec<String>,
}

struct Plan {
    duration: Duration,
    warmup: Duration,
    reps: usize,
    rates: Vec<f64>,
    connections: usize,
}

/// A sidecar setting under test; each gets a pair of pods of its own.
struct Variant {
    /// Short name in pod and service names.
    key: &'static str,
    /// `--threads` of both sidecars.
    threads: usize,
    /// What it is, in the report.
    about: &'static str,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        key: "t1",
        threads: 1,
        about: "--threads 1: one worker thread per listener",
    },
    Variant {
        key: "t2",
        threads: 2,
        about: "--threads 2: the engine's default on this 2-core machine without pinning (one per core)",
    },
];

/// What carries a pair's traffic.
#[derive(Clone, Copy)]
enum Proxies {
    /// Strait's sidecars in one setting.
    Strait(&'static Variant),
    /// nginx in both pods, behind the same capture rules: the same-machine reference
    /// for the cost of a plain HTTP/1 proxy pair with mTLS between its halves.
    Nginx,
}

impl Proxies {
    /// Short name in pod and service names.
    fn key(self) -> &'static str {
        match self {
            Proxies::Strait(v) => v.key,
            Proxies::Nginx => "ng",
        }
    }

    fn label(self) -> String {
        match self {
            Proxies::Strait(v) => format!("mesh, threads {}", v.threads),
            Proxies::Nginx => NGINX_PAIR.into(),
        }
    }

    fn side_label(self, side: &str) -> String {
        match self {
            Proxies::Strait(v) => format!("{side} sidecar, threads {}", v.threads),
            Proxies::Nginx => format!("{side} nginx (reference)"),
        }
    }
}

/// The reference pair's label in the report.
const NGINX_PAIR: &str = "nginx pair (reference)";

/// Two meshed pods and the service that leads from one to the other.
struct Pair {
    proxies: Proxies,
    client: Pod,
    server: Pod,
    vip: Ipv4Addr,
    client_sidecar: usize,
    server_sidecar: usize,
    /// Requests answered through this pair, warm-ups and checks included.
    answered: u64,
}

impl Pair {
    fn label(&self) -> String {
        self.proxies.label()
    }

    fn sidecar_label(&self, side: &str) -> String {
        self.proxies.side_label(side)
    }

    fn host(&self) -> String {
        format!("backend-{}:{PORT}", self.proxies.key())
    }

    fn sidecar_pids(&self) -> [Vec<u32>; 2] {
        [
            self.client.processes[self.client_sidecar].pids(),
            self.server.processes[self.server_sidecar].pids(),
        ]
    }
}

/// Everything the run set up; dropped in field order: processes first, then the
/// pods' namespaces, the bridge, the files.
struct Topology {
    pairs: Vec<Pair>,
    direct_client: Pod,
    direct_server: Pod,
    _bridge: Bridge,
    _dir: tempfile::TempDir,
}

impl Topology {
    /// The processes this benchmark runs on each core: the sidecars on core 0; this
    /// harness (the load client) and the backends, its other children, on core 1.
    fn ours(&self) -> [Vec<u32>; 2] {
        let sidecars: Vec<u32> = self
            .pairs
            .iter()
            .flat_map(|pair| pair.sidecar_pids().into_iter().flatten())
            .collect();
        let mut rest = strait_loadtests::procstat::tree(std::process::id());
        rest.retain(|p| !sidecars.contains(p));
        [sidecars, rest]
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("sidecar-bench needs root (network namespaces, iptables inside them): run it with sudo");
    }
    interrupt::install()?;
    pin_to_client_core()?;
    let removed = netns::remove_stale();
    if !removed.is_empty() {
        eprintln!("removed namespaces an earlier, killed run left: {}", removed.join(", "));
    }
    let plan = match cli.mode {
        Mode::Quick => Plan {
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            reps: 3,
            rates: vec![1000.0, 3000.0],
            connections: 16,
        },
        Mode::Full => Plan {
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            reps: 5,
            rates: vec![1000.0, 3000.0],
            connections: 16,
        },
    };
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary folder")?
        .to_path_buf();
    for bin in ["strait-sidecar", "bench-backend"] {
        if !bin_dir.join(bin).exists() {
            bail!(
                "{bin} is not built in {}: scripts/dist.sh -p strait-gateway -p strait-sidecar -p strait-loadtests --bins",
                bin_dir.display()
            );
        }
    }
    let started = Instant::now();
    let mut results = Results::default();
    let nginx = nginx_version();
    if nginx.is_none() {
        results
            .notes
            .push("nginx is not installed (apt-get install nginx-light): no reference pair".into());
    }
    let mut topology = build(&bin_dir, &cli.sidecar_args, nginx.is_some())?;
    eprintln!("pods ready ({:.0} s)", started.elapsed().as_secs_f64());

    // Idle: settled after start, before any request went through.
    for pair in &topology.pairs {
        for (side, pids) in ["client", "server"].iter().zip(pair.sidecar_pids()) {
            let kib = settled_rss_kib(&pids, Duration::from_secs(30));
            let (anon, file) = rss_split_kib(&pids);
            let label = pair.sidecar_label(side);
            results.add("rss_mib", &label, "idle", kib as f64 / 1024.0);
            results.add("rss_anon_mib", &label, "idle", anon as f64 / 1024.0);
            results.add("rss_file_mib", &label, "idle", file as f64 / 1024.0);
        }
        stop_if_interrupted()?;
    }
    // Every sidecar idle at once: what a pod pays while nothing happens.
    let (labels, pids): (Vec<String>, Vec<Vec<u32>>) = topology
        .pairs
        .iter()
        .flat_map(|pair| {
            ["client", "server"]
                .into_iter()
                .zip(pair.sidecar_pids())
                .map(|(side, pids)| (pair.sidecar_label(side), pids))
        })
        .unzip();
    for (label, (cpu, runs)) in labels.iter().zip(idle_activity(&pids, Duration::from_secs(5))) {
        results.add("idle_cpu_us_per_s", label, "idle", cpu);
        results.add("idle_runs_per_s", label, "idle", runs);
    }
    let checks = check_paths(&mut topology, &mut results)?;
    let load_before = loadavg();
    let ours = topology.ours();

    let measuring = Instant::now();
    for rep in 0..plan.reps {
        eprintln!(
            "repetition {} of {} ({:.0} s so far)",
            rep + 1,
            plan.reps,
            started.elapsed().as_secs_f64()
        );
        for rate in &plan.rates {
            let point = format!("{rate:.0} rps");
            let direct_spec = LoadSpec {
                addr: SocketAddr::from((topology.direct_server.ip, PORT)),
                host: format!("backend:{PORT}"),
                path: "/".into(),
                headers: Vec::new(),
                tls: None,
                connections: plan.connections,
                rate: Some(*rate),
                duration: plan.duration,
                new_connection_per_request: false,
            };
            let direct = measure(
                &topology.direct_client.ns,
                direct_spec.clone(),
                plan.warmup,
                Vec::new(),
                ours.clone(),
            )?;
            note_errors(&mut results, "direct", &point, &direct.result);
            record_other(&mut results, "direct", &point, direct.other_pct);
            let direct_p = percentiles(&direct.result);
            record_latency(&mut results, "direct", &point, direct_p, None);
            for pair in &mut topology.pairs {
                stop_if_interrupted()?;
                let spec = LoadSpec {
                    addr: SocketAddr::from((pair.vip, PORT)),
                    host: pair.host(),
                    ..direct_spec.clone()
                };
                let m = measure(
                    &pair.client.ns,
                    spec,
                    plan.warmup,
                    pair.sidecar_pids().to_vec(),
                    ours.clone(),
                )?;
                pair.answered += m.warmup_ok + m.result.ok;
                let label = pair.label();
                note_errors(&mut results, &label, &point, &m.result);
                record_other(&mut results, &label, &point, m.other_pct);
                record_latency(&mut results, &label, &point, percentiles(&m.result), Some(direct_p));
                if m.result.ok > 0 {
                    let per_request = |ns: u64| ns as f64 / 1000.0 / m.result.ok as f64;
                    let (client, server) = (m.cpu_ns[0], m.cpu_ns[1]);
                    results.add("pair_cpu_us", &label, &point, per_request(client + server));
                    results.add(
                        "sidecar_cpu_us",
                        &pair.sidecar_label("client"),
                        &point,
                        per_request(client),
                    );
                    results.add(
                        "sidecar_cpu_us",
                        &pair.sidecar_label("server"),
                        &point,
                        per_request(server),
                    );
                }
                for (side, (kib, anon)) in ["client", "server"].iter().zip(&m.rss_kib) {
                    results.add("rss_mib", &pair.sidecar_label(side), &point, *kib as f64 / 1024.0);
                    results.add("rss_anon_mib", &pair.sidecar_label(side), &point, *anon as f64 / 1024.0);
                }
            }
            stop_if_interrupted()?;
        }
    }
    for pair in &topology.pairs {
        for (side, pids) in ["client", "server"].iter().zip(pair.sidecar_pids()) {
            results.add(
                "rss_mib",
                &pair.sidecar_label(side),
                "peak",
                peak_rss_kib(&pids) as f64 / 1024.0,
            );
        }
    }
    let mtls = check_mutual_tls(&topology, &mut results)?;
    results.notes.push(format!(
        "load average (1 min) before measuring {load_before}, after {}",
        loadavg()
    ));
    let busiest = ["other_core0_pct", "other_core1_pct"]
        .iter()
        .filter_map(|m| results.summary().get(*m).cloned())
        .flat_map(|by_target| by_target.into_values().flat_map(|by_point| by_point.into_values()))
        .map(|s| s.median)
        .fold(0.0, f64::max);
    if busiest > OTHER_WORK_WARNING_PCT {
        results.notes.push(format!(
            "other work took up to {busiest:.0}% of a benchmark core during the runs (see the last tables): latencies, their tails above all, are inflated by it; rerun on a quiet machine"
        ));
    }
    let measured_for = measuring.elapsed();
    drop(topology);

    let md = markdown(&cli, &plan, &results, nginx.as_deref(), started.elapsed(), measured_for);
    let json = serde_json::json!({
        "mode": format!("{:?}", cli.mode).to_lowercase(),
        "machine": machine(),
        "plan": {
            "duration_s": plan.duration.as_secs_f64(),
            "warmup_s": plan.warmup.as_secs_f64(),
            "repetitions": plan.reps,
            "rates": plan.rates,
            "connections": plan.connections,
        },
        "sidecar_args": cli.sidecar_args,
        "variants": VARIANTS.iter().map(|v| serde_json::json!({"threads": v.threads, "about": v.about})).collect::<Vec<_>>(),
        "reference": nginx,
        "checks": checks.iter().chain(&mtls).collect::<Vec<_>>(),
        "summary": results.summary(),
        "samples": results.samples,
        "notes": results.notes,
    });
    std::fs::create_dir_all(&cli.out)?;
    std::fs::write(cli.out.join("sidecar-latest.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(cli.out.join("sidecar-latest.md"), &md)?;
    println!("{md}");
    eprintln!(
        "wrote {} and sidecar-latest.json",
        cli.out.join("sidecar-latest.md").display()
    );
    Ok(())
}

fn stop_if_interrupted() -> anyhow::Result<()> {
    if interrupt::interrupted() {
        bail!("interrupted: stopping the pods and deleting their namespaces");
    }
    Ok(())
}

/// The pods, their configuration and certificates, the backends and the sidecars.
fn build(bin_dir: &Path, extra: &[String], nginx: bool) -> anyhow::Result<Topology> {
    let dir = tempfile::tempdir()?;
    mesh::public_dir(dir.path())?;
    let config = dir.path().join("config");
    mesh::public_dir(&config)?;
    let mut bridge = Bridge::new()?;
    let mut kinds: Vec<Proxies> = VARIANTS.iter().map(Proxies::Strait).collect();
    if nginx {
        kinds.push(Proxies::Nginx);
    }
    let mut pods = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        pods.push((
            *kind,
            bridge.pod(&format!("client-{}", kind.key()))?,
            bridge.pod(&format!("server-{}", kind.key()))?,
            Ipv4Addr::new(10, 96, 0, 10 + i as u8),
        ));
    }
    let direct_client = bridge.pod("direct-client")?;
    let mut direct_server = bridge.pod("direct-server")?;

    // The mesh's resources, for Strait's pairs (nginx proxies to a fixed address).
    let strait_pods: Vec<_> = pods
        .iter()
        .filter(|(kind, ..)| matches!(kind, Proxies::Strait(_)))
        .collect();
    let names: Vec<(String, String, String, String)> = strait_pods
        .iter()
        .map(|(kind, ..)| {
            let key = kind.key();
            (
                format!("backend-{key}"),
                format!("server-{key}"),
                format!("app: client-{key}"),
                format!("app: backend-{key}"),
            )
        })
        .collect();
    let mut service_specs = Vec::new();
    let mut pod_specs = Vec::new();
    for ((_, client, server, vip), (service, server_name, client_labels, server_labels)) in
        strait_pods.iter().zip(&names)
    {
        service_specs.push(ServiceSpec {
            name: service,
            vip: *vip,
            port: PORT,
            endpoints: vec![(server_name.as_str(), server.ip)],
        });
        pod_specs.push(PodSpec {
            name: &client.name,
            ip: client.ip,
            labels: client_labels,
            meshed: true,
        });
        pod_specs.push(PodSpec {
            name: &server.name,
            ip: server.ip,
            labels: server_labels,
            meshed: true,
        });
    }
    mesh::write_public(
        &config.join("registry.yaml"),
        mesh::registry(NAMESPACE, &service_specs, &pod_specs).as_bytes(),
    )?;
    mesh::write_public(
        &config.join("peer.yaml"),
        mesh::peer_authentication(NAMESPACE, "STRICT").as_bytes(),
    )?;
    drop(service_specs);
    drop(pod_specs);

    let backend = bin_dir.join("bench-backend");
    let sidecar = bin_dir.join("strait-sidecar");
    let listen = vec!["--listen".to_string(), format!("0.0.0.0:{PORT}")];
    direct_server.app(
        "direct backend",
        CLIENT_CORE,
        &backend,
        &listen,
        PORT,
        &dir.path().join("direct-backend.log"),
    )?;
    let ca = Ca::new()?;
    let mut pairs = Vec::new();
    for (kind, mut client, mut server, vip) in pods {
        server.app(
            &format!("{} backend", server.name),
            CLIENT_CORE,
            &backend,
            &listen,
            PORT,
            &dir.path().join(format!("{}-backend.log", server.name)),
        )?;
        let server_ip = server.ip;
        let mut indices = Vec::new();
        for (pod, app, inbound) in [
            (&mut server, format!("backend-{}", kind.key()), true),
            (&mut client, format!("client-{}", kind.key()), false),
        ] {
            let identity = dir.path().join(format!("identity-{}", pod.name));
            ca.issue(
                &identity,
                &format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/{}", pod.name),
            )?;
            let log = dir.path().join(format!("{}-proxy.log", pod.name));
            let index = match kind {
                Proxies::Strait(variant) => {
                    let labels = format!("app={app}");
                    let account = pod.name.clone();
                    pod.sidecar(&SidecarSpec {
                        binary: &sidecar,
                        config_dir: &config,
                        identity_dir: &identity,
                        namespace: NAMESPACE,
                        service_account: &account,
                        labels: &labels,
                        threads: Some(variant.threads),
                        extra,
                        core: SIDECAR_CORE,
                        log: &log,
                    })?
                }
                Proxies::Nginx => {
                    let home = dir.path().join(format!("nginx-{}", pod.name));
                    std::fs::create_dir_all(&home)?;
                    // nginx writes its pid file, logs and buffers there as the proxy's uid.
                    std::os::unix::fs::chown(&home, Some(mesh::PROXY_UID), Some(mesh::PROXY_UID))?;
                    let conf = sidecar_nginx_conf(&home, &identity, if inbound { None } else { Some(server_ip) });
                    let path = home.join("nginx.conf");
                    mesh::write_public(&path, conf.as_bytes())?;
                    pod.capture(&sidecar)?;
                    let args = ["-c", &path.to_string_lossy(), "-p", &home.to_string_lossy(), "-e"]
                        .into_iter()
                        .map(String::from)
                        .chain([home.join("stderr.log").to_string_lossy().into_owned()])
                        .collect();
                    let port = if inbound { INBOUND_PORT } else { OUTBOUND_PORT };
                    pod.proxy(
                        &format!("{} nginx", pod.name),
                        SIDECAR_CORE,
                        Path::new("nginx"),
                        args,
                        port,
                        &log,
                    )?
                }
            };
            indices.push(index);
            stop_if_interrupted()?;
        }
        pairs.push(Pair {
            proxies: kind,
            client,
            server,
            vip,
            client_sidecar: indices[1],
            server_sidecar: indices[0],
            answered: 0,
        });
    }
    Ok(Topology {
        pairs,
        direct_client,
        direct_server,
        _bridge: bridge,
        _dir: dir,
    })
}

/// nginx as a sidecar, one worker, keep-alive both ways: inbound (`upstream` None)
/// terminates mTLS on 15006 (a client certificate of the mesh's CA required) and
/// passes to the app on 127.0.0.1; outbound takes the captured plaintext on 15001 and
/// speaks mTLS to `upstream`'s port 8080 (which that pod's rules send to its 15006).
/// It does not check the server's name: nginx matches DNS names, and the workload
/// certificates carry only a SPIFFE URI; that is once per connection, not per request.
fn sidecar_nginx_conf(home: &Path, identity: &Path, upstream: Option<Ipv4Addr>) -> String {
    let (cert, key, root) = (
        identity.join("cert-chain.pem"),
        identity.join("key.pem"),
        identity.join("root-cert.pem"),
    );
    let (listen, target, tls) = match upstream {
        None => (
            format!(
                "listen {INBOUND_PORT} ssl;\n    ssl_protocols TLSv1.3;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_client_certificate {};\n    ssl_verify_client on;",
                cert.display(),
                key.display(),
                root.display()
            ),
            format!("127.0.0.1:{PORT}"),
            String::new(),
        ),
        Some(ip) => (
            format!("listen {OUTBOUND_PORT};"),
            format!("{ip}:{PORT}"),
            format!(
                "\n      proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_certificate {};\n      proxy_ssl_certificate_key {};\n      proxy_ssl_session_reuse on;",
                cert.display(),
                key.display()
            ),
        ),
    };
    let scheme = if upstream.is_some() { "https" } else { "http" };
    targets::nginx_conf(home, &target, &listen, scheme, &tls)
}

/// Before measuring: each path answers, and the servers' sidecars refuse plaintext
/// (STRICT really is in force). Returns what was checked.
fn check_paths(t: &mut Topology, results: &mut Results) -> anyhow::Result<Vec<String>> {
    let mut checks = Vec::new();
    let probe = |ns: &Netns, addr: SocketAddr, host: String| -> anyhow::Result<(u64, LoadResult)> {
        let spec = LoadSpec {
            addr,
            host,
            path: "/".into(),
            headers: Vec::new(),
            tls: None,
            connections: 2,
            rate: Some(40.0),
            duration: Duration::from_millis(500),
            new_connection_per_request: false,
        };
        let m = measure(
            ns,
            spec,
            Duration::from_millis(100),
            Vec::new(),
            [Vec::new(), Vec::new()],
        )?;
        Ok((m.warmup_ok, m.result))
    };
    let (_, direct) = probe(
        &t.direct_client.ns,
        SocketAddr::from((t.direct_server.ip, PORT)),
        "backend".into(),
    )?;
    if direct.ok == 0 || direct.errors > 0 {
        bail!(
            "the direct path does not answer: {} ok, {} errors",
            direct.ok,
            direct.errors
        );
    }
    for pair in &mut t.pairs {
        let (warm, r) = probe(&pair.client.ns, SocketAddr::from((pair.vip, PORT)), pair.host())?;
        pair.answered += warm + r.ok;
        if r.ok == 0 || r.errors > 0 {
            bail!(
                "{}: client -> {} through both sidecars: {} ok, {} errors\nclient sidecar:\n{}\nserver sidecar:\n{}",
                pair.label(),
                pair.host(),
                r.ok,
                r.errors,
                pair.client.processes[pair.client_sidecar].log_text(),
                pair.server.processes[pair.server_sidecar].log_text()
            );
        }
        let target = SocketAddr::from((pair.server.ip, PORT));
        match t.direct_client.get(target, "/") {
            Ok((200, _)) => bail!(
                "{}: a plaintext client without a sidecar got 200 from {target}: STRICT is not in force",
                pair.label()
            ),
            Ok((code, _)) => checks.push(format!(
                "{}: a plaintext request from a pod without a sidecar to {target} was refused ({code})",
                pair.label()
            )),
            Err(e) => checks.push(format!(
                "{}: a plaintext request from a pod without a sidecar to {target} was refused ({e})",
                pair.label()
            )),
        }
    }
    results
        .notes
        .extend(checks.iter().map(|c| format!("STRICT check: {c}")));
    Ok(checks)
}

/// After measuring: the server sidecar counted every request it served as mutual
/// TLS from the client's identity, none as plaintext.
fn check_mutual_tls(t: &Topology, results: &mut Results) -> anyhow::Result<Vec<String>> {
    let mut checks = Vec::new();
    for pair in &t.pairs {
        if matches!(pair.proxies, Proxies::Nginx) {
            // No metrics to count with; its server side takes no connection without a
            // client certificate of the mesh's CA (`ssl_verify_client on`).
            continue;
        }
        let metrics = pair
            .server
            .metrics()
            .with_context(|| format!("{}: server sidecar metrics", pair.label()))?;
        let source = format!(
            "source_principal=\"spiffe://cluster.local/ns/{NAMESPACE}/sa/{}\"",
            pair.client.name
        );
        let mtls = mesh::requests_total(
            &metrics,
            &[
                "reporter=\"destination\"",
                "connection_security_policy=\"mutual_tls\"",
                &source,
            ],
        );
        let other = mesh::requests_total(&metrics, &["reporter=\"destination\""]) - mtls;
        let line = format!(
            "{}: the server sidecar counted {mtls:.0} requests with connection_security_policy=\"mutual_tls\" from {}, {other:.0} otherwise; the client saw {} answered",
            pair.label(),
            pair.client.name,
            pair.answered
        );
        if mtls < pair.answered as f64 || other > 0.0 {
            bail!("mTLS check failed: {line}");
        }
        results.notes.push(format!("mTLS check: {line}"));
        checks.push(line);
    }
    Ok(checks)
}

/// What one run measured: the load's outcome, each process group's CPU time over the
/// run and its RSS (total, private) three quarters into it, and how busy each core
/// was with work other than this benchmark's processes (percent of the core).
struct Measured {
    warmup_ok: u64,
    result: LoadResult,
    cpu_ns: Vec<u64>,
    rss_kib: Vec<(u64, u64)>,
    other_pct: [f64; 2],
}

/// Warms up, then runs `spec` from a thread inside `ns` (root, so through the pod's
/// capture rules), reading the CPU time and RSS of each of `groups`, and the cores'
/// busy time beyond that of `ours` (the processes this benchmark runs on each core).
fn measure(
    ns: &Netns,
    spec: LoadSpec,
    warmup: Duration,
    groups: Vec<Vec<u32>>,
    ours: [Vec<u32>; 2],
) -> anyhow::Result<Measured> {
    let measured = ns.enter(move || -> std::io::Result<Measured> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let warm = run(&LoadSpec {
                duration: warmup,
                ..spec.clone()
            })
            .await;
            let sampled = groups.clone();
            let at = spec.duration.mul_f64(0.75);
            let sampler = tokio::spawn(async move {
                tokio::time::sleep(at).await;
                sampled
                    .iter()
                    .map(|g| (rss_kib(g), rss_split_kib(g).0))
                    .collect::<Vec<_>>()
            });
            let cores = |ours: &[Vec<u32>; 2]| [0, 1].map(|c| (core_busy_ns(c), cpu_ns(&ours[c])));
            let started = Instant::now();
            let cores_before = cores(&ours);
            let before: Vec<u64> = groups.iter().map(|g| cpu_ns(g)).collect();
            let result = run(&spec).await;
            let after: Vec<u64> = groups.iter().map(|g| cpu_ns(g)).collect();
            let cores_after = cores(&ours);
            let wall = started.elapsed().as_nanos() as f64;
            let other_pct = [0, 1].map(|c| {
                let busy = cores_after[c].0.saturating_sub(cores_before[c].0);
                let own = cores_after[c].1.saturating_sub(cores_before[c].1);
                busy.saturating_sub(own) as f64 / wall * 100.0
            });
            Ok(Measured {
                warmup_ok: warm.ok,
                result,
                cpu_ns: after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect(),
                rss_kib: sampler.await.unwrap_or_default(),
                other_pct,
            })
        })
    })??;
    Ok(measured)
}

fn record_other(results: &mut Results, target: &str, point: &str, pct: [f64; 2]) {
    results.add("other_core0_pct", target, point, pct[0]);
    results.add("other_core1_pct", target, point, pct[1]);
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn percentiles(r: &LoadResult) -> [f64; 3] {
    [0.5, 0.9, 0.99].map(|q| r.latency_us.value_at_quantile(q) as f64)
}

fn record_latency(results: &mut Results, target: &str, point: &str, p: [f64; 3], direct: Option<[f64; 3]>) {
    for (i, label) in ["p50", "p90", "p99"].iter().enumerate() {
        results.add(&format!("latency_{label}_us"), target, point, p[i]);
        if let Some(d) = direct {
            results.add(&format!("added_{label}_us"), target, point, p[i] - d[i]);
        }
    }
}

fn note_errors(results: &mut Results, target: &str, point: &str, r: &LoadResult) {
    if r.errors > 0 {
        results.notes.push(format!(
            "{target} at {point}: {} errors for {} answered",
            r.errors, r.ok
        ));
    }
}

fn median(results: &Results, metric: &str, target: &str, point: &str) -> Option<f64> {
    results.summary().get(metric)?.get(target)?.get(point).map(|s| s.median)
}

/// The report; `nginx` is the reference pair's version, when it ran.
fn markdown(
    cli: &Cli,
    plan: &Plan,
    results: &Results,
    nginx: Option<&str>,
    took: Duration,
    measured_for: Duration,
) -> String {
    let m = machine();
    let rates: Vec<String> = plan.rates.iter().map(|r| format!("{r:.0} rps")).collect();
    let first = rates.first().cloned().unwrap_or_default();
    let mut md = format!(
        "## Sidecar footprint ({} mode, {})\n\n{}\n\
Two pods with Strait sidecars (`strait-sidecar init` + `run` under uid 1337, one pair per setting below), STRICT PeerAuthentication (mTLS between the sidecars, checked below), `bench-backend` (one-thread hyper) on 8080 in the server pod. \
The load ({} keep-alive HTTP/1.1 connections, open loop, 2-byte responses) comes from a thread inside the client pod's network namespace (root, so through the capture rules) to the service's cluster IP, Host `backend-tN:8080`: client -> 15001 -> mTLS -> 15006 -> backend. \
The direct path sends the same load from a pod without a sidecar to a pod without one running the same backend binary, over the same bridge. \
Sidecars pinned to core 0; the load client and the backends to core 1. CPU is both sidecars' time over the run / requests answered. \
{} interleaved repetitions of {:.1} s after {:.1} s warm-up; median [min-max]. Idle RSS settled after start (under 1% change over 1 s) before any request; load RSS three quarters into a run; peak is VmHWM. Took {:.0} s ({:.0} s measuring).\n\n",
        format!("{:?}", cli.mode).to_lowercase(),
        m["date"].as_str().unwrap_or(""),
        m["summary"].as_str().unwrap_or(""),
        plan.connections,
        plan.reps,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        took.as_secs_f64(),
        measured_for.as_secs_f64(),
    );
    md.push_str("Settings compared:\n");
    for v in &VARIANTS {
        md.push_str(&format!("- threads {}: {}\n", v.threads, v.about));
    }
    if let (Some(version), Some(_)) = (nginx, median(results, "pair_cpu_us", NGINX_PAIR, &first)) {
        md.push_str(&format!(
            "- {NGINX_PAIR}: nginx ({version}) in place of both sidecars, one worker each, pinned and captured the same way (15001 in, mTLS 1.3 with the same workload certificates, 15006 out, keep-alive both ways). It proxies to a fixed address, with no routing, original destination, metrics, policy or added headers: the cost of the plain proxying and TLS on this machine, the floor a sidecar builds on\n"
        ));
    }
    if !cli.sidecar_args.is_empty() {
        md.push_str(&format!(
            "- every sidecar also ran with: `{}`\n",
            cli.sidecar_args.join(" ")
        ));
    }
    md.push('\n');
    md.push_str(&goals(results, &first));

    let kinds: Vec<Proxies> = VARIANTS.iter().map(Proxies::Strait).chain([Proxies::Nginx]).collect();
    let mesh: Vec<String> = kinds.iter().map(|k| k.label()).collect();
    let mut sidecars = Vec::new();
    for kind in &kinds {
        for side in ["client", "server"] {
            sidecars.push(kind.side_label(side));
        }
    }
    let mut rss_points = vec!["idle".to_string()];
    rss_points.extend(rates.iter().cloned());
    let anon_points = rss_points.clone();
    rss_points.push("peak".into());
    let tables = [
        Table {
            metric: "pair_cpu_us",
            title: "CPU per request, both sidecars (client + server)",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "sidecar_cpu_us",
            title: "CPU per request, each sidecar",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "added_p50_us",
            title: "Added latency p50 over direct (both sidecars)",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "added_p90_us",
            title: "Added latency p90 over direct (both sidecars)",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "added_p99_us",
            title: "Added latency p99 over direct (both sidecars)",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "latency_p50_us",
            title: "Latency p50",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "latency_p99_us",
            title: "Latency p99",
            unit: "us",
            points: rates.clone(),
        },
        Table {
            metric: "rss_mib",
            title: "Resident memory of one sidecar (RSS)",
            unit: "MiB",
            points: rss_points,
        },
        Table {
            metric: "rss_anon_mib",
            title: "Private memory of one sidecar (RssAnon: heap and stacks, what one more pod adds; the rest of RSS is file pages, mostly the executable, shared by the sidecars of a node that run the same image)",
            unit: "MiB",
            points: anon_points,
        },
        Table {
            metric: "rss_file_mib",
            title: "File-backed memory of one sidecar (RssFile), idle",
            unit: "MiB",
            points: vec!["idle".into()],
        },
        Table {
            metric: "idle_cpu_us_per_s",
            title: "Idle CPU of one sidecar, every thread, over 5 s before any request",
            unit: "us per second",
            points: vec!["idle".into()],
        },
        Table {
            metric: "idle_runs_per_s",
            title: "Idle wake-ups of one sidecar (times a thread was scheduled), over 5 s before any request",
            unit: "per second",
            points: vec!["idle".into()],
        },
        Table {
            metric: "other_core0_pct",
            title: "Core 0 (sidecars) busy with other work during the run: other processes, interrupts",
            unit: "% of the core",
            points: rates.clone(),
        },
        Table {
            metric: "other_core1_pct",
            title: "Core 1 (client, backends) busy with other work during the run",
            unit: "% of the core",
            points: rates.clone(),
        },
    ];
    let mut names = vec!["direct".to_string()];
    names.extend(mesh);
    names.extend(sidecars);
    md.push_str(&results.markdown(&tables, &names));
    md
}

/// The goals table for the first setting (threads 1) at the first rate (1,000 rps).
fn goals(results: &Results, point: &str) -> String {
    let strait = Proxies::Strait(&VARIANTS[0]);
    let v = VARIANTS[0].threads;
    let mb = |mib: f64| mib * 1024.0 * 1024.0 / 1e6;
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mut md = format!("### Against the goals (threads {v}, {point}, mTLS)\n\n| measure | Strait | goal | {NGINX_PAIR}, same run | Istio (Envoy sidecar) |\n|---|---|---|---|---|\n");
    // The lowest and highest of the two sides' medians.
    let range = |kind: Proxies, metric: &str, point: &str| -> Option<(f64, f64)> {
        let values: Vec<f64> = ["client", "server"]
            .iter()
            .filter_map(|s| median(results, metric, &kind.side_label(s), point))
            .collect();
        Some((
            values.iter().copied().reduce(f64::min)?,
            values.iter().copied().reduce(f64::max)?,
        ))
    };
    let memory = |kind: Proxies, point: &str| -> Option<String> {
        let (lo, hi) = range(kind, "rss_mib", point)?;
        let (alo, ahi) = range(kind, "rss_anon_mib", point)?;
        Some(format!(
            "RSS {lo:.1}-{hi:.1} MiB ({:.1}-{:.1} MB), of it private {alo:.1}-{ahi:.1} MiB",
            mb(lo),
            mb(hi)
        ))
    };
    let idle_cpu = |kind: Proxies| -> Option<String> {
        let (lo, hi) = range(kind, "idle_cpu_us_per_s", "idle")?;
        let (wlo, whi) = range(kind, "idle_runs_per_s", "idle")?;
        Some(format!(
            "{lo:.0}-{hi:.0} us per second, {wlo:.1}-{whi:.1} wake-ups per second"
        ))
    };
    let pair = |kind: Proxies, metric: &str| median(results, metric, &kind.label(), point);
    let reference = |cell: Option<String>| cell.unwrap_or_default();
    if let Some(cell) = memory(strait, "idle") {
        let over = range(strait, "rss_mib", "idle").is_some_and(|(_, hi)| mb(hi) >= GOAL_IDLE_MB);
        md.push_str(&format!(
            "| idle memory, one sidecar | {cell} | < {GOAL_IDLE_MB:.0} MB: {} (RSS) | {} | ztunnel {ISTIO_ZTUNNEL_MB:.0} MB (per node) |\n",
            verdict(!over),
            reference(memory(Proxies::Nginx, "idle"))
        ));
    }
    if let Some(cell) = idle_cpu(strait) {
        md.push_str(&format!(
            "| idle CPU, one sidecar | {cell} | | {} | |\n",
            reference(idle_cpu(Proxies::Nginx))
        ));
    }
    if let Some(cell) = memory(strait, point) {
        md.push_str(&format!(
            "| memory under load, one sidecar | {cell} | | {} | {ISTIO_ENVOY_MB_PER_1K:.0} MB per 1k rps |\n",
            reference(memory(Proxies::Nginx, point))
        ));
    }
    if let Some(cpu) = pair(strait, "pair_cpu_us") {
        let nginx = pair(Proxies::Nginx, "pair_cpu_us");
        md.push_str(&format!(
            "| CPU per request, the pair | {cpu:.0} us{} | < {GOAL_PAIR_CPU_US:.0} us: {} | {} | {:.0} us (2 x {ISTIO_ENVOY_VCPU_PER_1K:.2} vCPU per 1k rps) |\n",
            nginx.map(|n| format!(" ({:.2}x nginx)", cpu / n)).unwrap_or_default(),
            verdict(cpu < GOAL_PAIR_CPU_US),
            reference(nginx.map(|n| format!("{n:.0} us"))),
            2.0 * ISTIO_ENVOY_VCPU_PER_1K * 1000.0
        ));
        md.push_str(&format!(
            "| vCPU per 1k rps, one sidecar (mean of the two) | {:.3} | | {} | {ISTIO_ENVOY_VCPU_PER_1K:.2} |\n",
            cpu / 2.0 / 1000.0,
            reference(nginx.map(|n| format!("{:.3}", n / 2.0 / 1000.0)))
        ));
    }
    for (label, metric) in [
        ("p50", "added_p50_us"),
        ("p90", "added_p90_us"),
        ("p99", "added_p99_us"),
    ] {
        if let Some(us) = pair(strait, metric) {
            let goal = if label == "p99" {
                format!("< {GOAL_ADDED_P99_MS} ms: {}", verdict(us / 1000.0 < GOAL_ADDED_P99_MS))
            } else {
                String::new()
            };
            let istio = if label == "p90" {
                format!("{ISTIO_ENVOY_ADDED_P90_MS} ms")
            } else {
                String::new()
            };
            md.push_str(&format!(
                "| added latency {label}, both sidecars | {:.3} ms | {goal} | {} | {istio} |\n",
                us / 1000.0,
                reference(pair(Proxies::Nginx, metric).map(|n| format!("{:.3} ms", n / 1000.0)))
            ));
        }
    }
    md.push_str("\nIstio's figures are its published ones (istio.io, Performance and Scalability: Envoy sidecar 0.20 vCPU and 60 MB per 1,000 rps through it and ztunnel 12 MB for 1.24; 2.65 ms added to the 90th percentile for 1.8 to 1.16), measured on its own cluster and load, not here: they give the order of magnitude, not a same-machine comparison.\n\n");
    md
}

/// Re-runs this process under `taskset -c 1` unless it already runs on core 1 only;
/// the parent passes signals on and waits, so the child cleans up.
fn pin_to_client_core() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or("");
    if allowed == CLIENT_CORE.to_string() {
        return Ok(());
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("sidecar-bench needs 2 cores: the sidecars on core 0, the client and the backends on core 1");
    }
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(CLIENT_CORE.to_string())
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .spawn()?;
    interrupt::forward_to(child.id());
    let status = child.wait()?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `nginx -v`'s version, e.g. `nginx/1.22.1`; None when nginx does not run.
fn nginx_version() -> Option<String> {
    let out = Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stderr);
    Some(
        text.split_whitespace()
            .find(|w| w.starts_with("nginx/"))
            .unwrap_or("nginx")
            .to_string(),
    )
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cmd = |c: &str, args: &[&str]| {
        Command::new(c)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let lock = cmd("sha256sum", &["Cargo.lock"])
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = cmd("uname", &["-r"]);
    let date = cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = cmd("git", &["rev-parse", "--short", "HEAD"]);
    let summary = format!(
        "Machine: {model}, {cores} cores, Linux {kernel}; commit {commit}, Cargo.lock sha256 {}.\n",
        lock.get(..12).unwrap_or(&lock)
    );
    serde_json::json!({ "cpu": model, "cores": cores, "kernel": kernel, "cargo_lock_sha256": lock, "date": date, "commit": commit, "summary": summary })
}
