//! `controller-bench`: what the controller costs. (1) The build of a gateway's
//! configuration (parse, translate, and everything a push needs: digests and
//! messages) for 1k and 10k VirtualServices with 50k endpoints in all, in this
//! process with the controller's library. (2) With a `strait-controller` process
//! serving such a folder and 1,000 proxies connected (streams this bench opens; they
//! ACK what they receive without building it, so the figure is the controller's):
//! the time from a file change until every proxy has ACKed it, for a route change
//! (a full configuration) and for an endpoint change, and the controller's memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use prost::Message as _;
use strait_controller::push::builds::prepare;
use strait_controller::push::identity::Identity;
use strait_controller::store::{Document, Store};
use strait_loadtests::procstat::rss_kib;
use strait_push::parts::Parts;
use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;
use tokio::sync::mpsc;

/// Controller benchmark: translate time, push convergence to many proxies, memory.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The `strait-controller` binary (default: beside this one).
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// Proxies connected for the push measurements.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Endpoints in all, spread over the services.
    #[arg(long, default_value_t = 50_000)]
    endpoints: usize,
    /// Builds timed per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// A Gateway, and per VirtualService its own service (a ServiceEntry with
/// `endpoints / vs` addresses), a file for each pair: one document per object or
/// two, as the controller reads a cluster (each object its own document).
fn folder(vs: usize, endpoints: usize) -> Vec<Document> {
    let per = (endpoints / vs.max(1)).max(1);
    let mut docs = vec![Document {
        file: "gateway.yaml".into(),
        text: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n".into(),
    }];
    let mut address = 0u32;
    for i in 0..vs {
        let mut text = format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: bench}}\nspec:\n  hosts: [svc-{i}.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}]\n    route: [{{destination: {{host: svc-{i}.bench.svc.cluster.local}}}}]\n    timeout: 5s\n  - route: [{{destination: {{host: svc-{i}.bench.svc.cluster.local}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  hosts: [svc-{i}.bench.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n");
        for _ in 0..per {
            address += 1;
            text.push_str(&format!(
                "  - {{address: 10.{}.{}.{}}}\n",
                (address >> 16) & 255,
                (address >> 8) & 255,
                address & 255
            ));
        }
        docs.push(Document {
            file: format!("services-{i:05}.yaml"),
            text,
        });
    }
    docs
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Times the build of one gateway's configuration for `vs` VirtualServices.
fn time_builds(vs: usize, endpoints: usize, repeat: usize) -> anyhow::Result<()> {
    let docs = folder(vs, endpoints);
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let (mut parse, mut translate, mut prepared) = (Vec::new(), Vec::new(), Vec::new());
    let (mut config_bytes, mut endpoint_count, mut endpoint_bytes) = (0, 0, 0);
    for round in 0..repeat {
        let store = Store::new(Duration::ZERO);
        // Another version each round: the store publishes only changes.
        let mut round_docs = docs.clone();
        round_docs[0].text.push_str(&format!("# round {round}\n"));
        let start = Instant::now();
        store.replace("folder", round_docs);
        store.publish_now();
        parse.push(start.elapsed());
        let state = store.current();
        let scope = Identity::ingress_gateway("bench").scope(state.mesh.clone());
        let start = Instant::now();
        let built = strait_config::build(&state.loaded, &scope, state.version)
            .map_err(|d| anyhow::anyhow!("the bench's configuration does not build: {:?}", d.first()))?;
        translate.push(start.elapsed());
        if built.snapshot.clusters.len() < vs {
            bail!(
                "only {} clusters for {vs} VirtualServices",
                built.snapshot.clusters.len()
            );
        }
        drop(built);
        let p = prepare(&state, &Identity::ingress_gateway("bench"), Instant::now());
        prepared.push(p.took);
        let ready = p.outcome.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        config_bytes = ready.config.documents.iter().map(|d| d.text.len()).sum::<usize>();
        endpoint_count = proto::EndpointTable::decode(ready.endpoints.table.clone())?
            .clusters
            .iter()
            .map(|c| c.endpoints.len())
            .sum::<usize>();
        endpoint_bytes = ready.endpoints.table.len();
    }
    println!(
        "| {vs} VirtualServices, {endpoints} endpoints ({:.1} MB of YAML) | {} | {} | {} | {:.1} MB, {endpoint_count} endpoints in {:.1} MB |",
        bytes as f64 / 1e6,
        ms(median(parse)),
        ms(median(translate)),
        ms(median(prepared)),
        config_bytes as f64 / 1e6,
        endpoint_bytes as f64 / 1e6,
    );
    Ok(())
}

/// A proxy: ACKs everything and records the last version it received. A stream
/// that fails before its first message is opened again, as a proxy reconnects: a
/// thousand connections at once overflow the controller's accept queue now and then.
async fn proxy(port: u16, id: usize, seen: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match stream(port, id, &seen).await {
            Err(e) if seen.load(Ordering::Relaxed) == 0 && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                if attempt == 20 {
                    return Err(e);
                }
            }
            ended => return ended,
        }
    }
}

/// One stream of `proxy`.
async fn stream(port: u16, id: usize, seen: &AtomicU64) -> anyhow::Result<()> {
    let (answers, outbound) = mpsc::channel(4);
    answers
        .send(proto::ProxyMessage {
            kind: Some(Outgoing::Hello(proto::Hello {
                proxy_id: format!("bench-{id}"),
                role: proto::Role::Gateway.into(),
                namespace: "istio-system".into(),
                labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
                ..Default::default()
            })),
        })
        .await?;
    let client = proto::push_client::PushClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let mut client = client.max_decoding_message_size(256 << 20);
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut parts = Parts::default();
    while let Some(message) = inbound.message().await? {
        let version = match message.kind.and_then(|kind| parts.add(kind)) {
            Some(Incoming::Config(c)) => c.version,
            Some(Incoming::Endpoints(e)) => e.version,
            None => continue,
        };
        answers
            .send(proto::ProxyMessage {
                kind: Some(Outgoing::Ack(proto::Ack { version })),
            })
            .await?;
        seen.store(version, Ordering::Relaxed);
    }
    Ok(())
}

/// Waits until every proxy has seen a version above `above`, sampling the
/// controller's memory; returns the time and the peak RSS (KiB).
async fn all_above(seen: &[Arc<AtomicU64>], above: u64, pid: u32, limit: Duration) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(&[pid]));
        if seen.iter().all(|s| s.load(Ordering::Relaxed) > above) {
            return Ok((start.elapsed(), peak));
        }
        if start.elapsed() > limit {
            let behind = seen.iter().filter(|s| s.load(Ordering::Relaxed) <= above).count();
            bail!("{behind} proxies still behind after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_folder(dir: &Path, docs: &[Document]) -> anyhow::Result<()> {
    for d in docs {
        std::fs::write(dir.join(&d.file), &d.text)?;
    }
    Ok(())
}

/// Replaces a file at once (a rename), as editors and ConfigMaps do.
fn replace(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, text)?;
    std::fs::rename(temporary, dir.join(name))?;
    Ok(())
}

/// The push measurements for one folder size.
async fn time_pushes(cli: &Cli, binary: &Path, vs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let docs = folder(vs, cli.endpoints);
    write_folder(dir.path(), &docs)?;
    let (push, http) = (free_port()?, free_port()?);
    let child = Command::new(binary)
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--bind-address", "127.0.0.1", "--debounce-ms", "10"])
        .arg(format!("--push-port={push}"))
        .arg(format!("--metrics-port={http}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let controller = Killed(child);
    let pid = controller.0.id();
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", push)).is_err() {
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("the controller did not listen");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let idle = rss_kib(&[pid]);
    let seen: Vec<Arc<AtomicU64>> = (0..cli.proxies).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (i, s) in seen.iter().enumerate() {
        let s = s.clone();
        tokio::spawn(async move {
            if let Err(e) = proxy(push, i, s).await {
                eprintln!("proxy {i}: {e}");
            }
        });
    }
    let (connected, connect_peak) = all_above(&seen, 0, pid, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let synced = rss_kib(&[pid]);
    let version = seen.iter().map(|s| s.load(Ordering::Relaxed)).max().unwrap_or(0);

    // A route change: one VirtualService (a delta once the proxies hold a version).
    let first = &docs[1];
    replace(
        dir.path(),
        &first.file,
        &first.text.replacen("prefix: /api", "prefix: /v2/api", 1),
    )?;
    let (route, route_peak) = all_above(&seen, version, pid, Duration::from_secs(120)).await?;
    let version = seen.iter().map(|s| s.load(Ordering::Relaxed)).max().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An endpoint change: endpoints only.
    replace(
        dir.path(),
        &first.file,
        &first.text.replacen("prefix: /api", "prefix: /v2/api", 1).replacen(
            "address: 10.0.0.1}",
            "address: 10.99.0.1}",
            1,
        ),
    )?;
    let (endpoints, endpoints_peak) = all_above(&seen, version, pid, Duration::from_secs(120)).await?;
    println!(
        "| {vs} VS, {} endpoints | {} | {} | {} | {} | {} MB | {} MB | {} MB |",
        cli.endpoints,
        cli.proxies,
        ms(connected),
        ms(route),
        ms(endpoints),
        idle / 1024,
        synced / 1024,
        connect_peak.max(route_peak).max(endpoints_peak) / 1024
    );
    drop(controller);
    // Let the proxies' streams end before the next size.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = match &cli.controller_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder for this binary")?
            .join("strait-controller"),
    };
    println!("## Build of one gateway's configuration (median of {})\n", cli.repeat);
    println!("| folder | parse (store) | translate | build + digests + messages | a gateway's messages |");
    println!("| --- | --- | --- | --- | --- |");
    for vs in [1_000, 10_000] {
        time_builds(vs, cli.endpoints, cli.repeat.max(1))?;
    }
    println!(
        "\n## Pushes to {} proxies (a `strait-controller` process, debounce 10 ms)\n",
        cli.proxies
    );
    println!("| folder | proxies | all connected and ACKed | route change ACKed by all | endpoint change ACKed by all | RSS idle | RSS synced | RSS peak |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for vs in [100, 1_000] {
        runtime.block_on(time_pushes(&cli, &binary, vs))?;
    }
    Ok(())
}
