//! What the controller's integration tests share: free loopback ports, a plain HTTP
//! GET, polling, `kubectl` output as JSON, the `strait-controller` binary as a
//! process killed on drop, a proxy speaking the push protocol as the test says, and
//! the Istio resources several tests apply.

// Each test binary includes this module (`mod common;`) and uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_controller::testing::ApiServer;
use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;
use tokio::sync::mpsc;

/// The istio-system Namespace.
pub const ISTIO_SYSTEM: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";

/// Gateway `gw` of istio-system: HTTP on port 80 for every host, on the ingress
/// gateways (`istio: ingressgateway`).
pub const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";

/// ServiceEntry `backend` of istio-system: backend.example.com at 10.0.0.1:80.
pub const BACKEND: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend, namespace: istio-system}\nspec:\n  hosts: [backend.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n";

/// VirtualService `name` of istio-system on [`GATEWAY`] for `host`, routed to
/// `destination`.
pub fn virtual_service(name: &str, host: &str, destination: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: {destination}}}}}]\n")
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on a loopback port: (status, body); None when it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// Polls `check` every 100 ms until it finds something; fails the test after
/// `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl ARGS -o json`, parsed; kubectl failing fails the test.
pub fn json_of(server: &ApiServer, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = server.kubectl(&args, "").unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).expect("JSON")
}

/// `kubectl ARGS -o jsonpath=PATH`; None when kubectl fails (the object is not
/// there yet, say).
pub fn jsonpath(server: &ApiServer, args: &[&str], path: &str) -> Option<String> {
    let mut args = args.to_vec();
    let path = format!("jsonpath={path}");
    args.extend(["-o", &path]);
    server.kubectl(&args, "").ok()
}

/// A kubeconfig with a token of the strait-controller ServiceAccount of istio-system
/// (TokenRequest): a controller using it has exactly that account's rights.
pub fn controller_kubeconfig(server: &ApiServer) -> PathBuf {
    let token = server
        .kubectl(&["create", "token", "strait-controller", "-n", "istio-system"], "")
        .expect("a token");
    server
        .kubeconfig_with_token("strait-controller", token.trim())
        .expect("a kubeconfig")
}

/// The holder of the controllers' Lease, "" when it has none (or there is no Lease).
pub fn lease_holder(server: &ApiServer) -> String {
    jsonpath(
        server,
        &["get", "lease", "strait-controller", "-n", "istio-system"],
        "{.spec.holderIdentity}",
    )
    .unwrap_or_default()
}

/// The CA root the controller published in `namespace`, once it is there.
pub fn published_root(server: &ApiServer, namespace: &str) -> Option<String> {
    jsonpath(
        server,
        &["get", "configmap", "istio-ca-root-cert", "-n", namespace],
        "{.data.root-cert\\.pem}",
    )
    .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
}

/// The ports a controller listens on (loopback).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The push (gRPC) port.
    pub push: u16,
    /// The HTTP port: /ready, /metrics, /debug.
    pub http: u16,
    /// The CA's TLS port (served on a cluster only).
    pub secure: u16,
}

impl Ports {
    /// Three free ports.
    pub fn free() -> Ports {
        Ports {
            push: free_port(),
            http: free_port(),
            secure: free_port(),
        }
    }

    /// The binary on these ports and loopback only, reacting fast (a 20 ms debounce);
    /// its output on the test's stderr. The caller adds its sources and flags.
    pub fn command(&self) -> Command {
        let mut command = Controller::binary();
        command
            .args(["--bind-address", "127.0.0.1", "--debounce-ms", "20"])
            .arg(format!("--push-port={}", self.push))
            .arg(format!("--metrics-port={}", self.http))
            .arg(format!("--secure-port={}", self.secure));
        command
    }
}

/// A `strait-controller` process, killed (by PID) and reaped when dropped.
pub struct Controller {
    child: Child,
    /// The push (gRPC) port.
    pub push: u16,
    /// The HTTP port: /ready, /metrics, /debug.
    pub http: u16,
    /// The CA's TLS port (0 when it is off).
    pub secure: u16,
}

impl Controller {
    /// The `strait-controller` binary, its stdout dropped and its stderr the test's.
    pub fn binary() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strait-controller"));
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        command
    }

    /// Starts `command`, a controller listening on `ports`; does not wait.
    pub fn spawn(command: &mut Command, ports: Ports) -> Controller {
        let child = command.spawn().expect("spawn strait-controller");
        Controller {
            child,
            push: ports.push,
            http: ports.http,
            secure: ports.secure,
        }
    }

    /// Starts the binary on free ports with `args` (its sources and flags); returns
    /// once it is ready (it has a first configuration).
    pub fn start<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Controller {
        let ports = Ports::free();
        let mut controller = Controller::spawn(ports.command().args(args), ports);
        controller.wait_ready(Duration::from_secs(30));
        controller
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("strait-controller exited: {status}");
        }
    }

    /// Whether /ready answers 200; a process that exited fails the test.
    pub fn is_ready(&mut self) -> bool {
        self.assert_running();
        http_get(self.http, "/ready").is_some_and(|(s, _)| s == 200)
    }

    /// Waits (at most `within`) until /ready answers 200.
    pub fn wait_ready(&mut self, within: Duration) {
        wait_for("the controller ready", within, || self.is_ready().then_some(()));
    }

    /// Its metrics text.
    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics").expect("metrics").1
    }

    /// Sends it SIGTERM (a graceful stop) and waits for it to exit.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        wait_for("the controller stopped on SIGTERM", Duration::from_secs(20), || {
            self.child.try_wait().expect("waits")
        });
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway of istio-system (`istio: ingressgateway`) on a controller's push port,
/// answering as the test says.
pub struct Proxy {
    inbound: tonic::Streaming<proto::ControllerMessage>,
    answers: mpsc::Sender<proto::ProxyMessage>,
}

impl Proxy {
    /// Connects to the plaintext push port `port` as `name`.
    pub async fn connect(port: u16, name: &str) -> Proxy {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("an address")
            .connect()
            .await
            .expect("connects");
        Proxy::over(channel, name).await
    }

    /// Says Hello as `name` over `channel` (TLS, say).
    pub async fn over(channel: tonic::transport::Channel, name: &str) -> Proxy {
        let (answers, outbound) = mpsc::channel(4);
        let hello = proto::Hello {
            proxy_id: name.into(),
            role: proto::Role::Gateway.into(),
            namespace: "istio-system".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        };
        answers
            .send(proto::ProxyMessage {
                kind: Some(Outgoing::Hello(hello)),
            })
            .await
            .expect("queued");
        let inbound = proto::push_client::PushClient::new(channel)
            .stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await
            .expect("a stream")
            .into_inner();
        Proxy { inbound, answers }
    }

    /// The next message (within 20 s).
    pub async fn receive(&mut self) -> Incoming {
        tokio::time::timeout(Duration::from_secs(20), self.inbound.message())
            .await
            .expect("a message in time")
            .expect("no error")
            .and_then(|m| m.kind)
            .expect("a message")
    }

    /// The next message, which must be a configuration.
    pub async fn config(&mut self) -> proto::Config {
        match self.receive().await {
            Incoming::Config(config) => config,
            other => panic!("a configuration: {other:?}"),
        }
    }

    /// Sends `kind`.
    pub async fn answer(&self, kind: Outgoing) {
        self.answers
            .send(proto::ProxyMessage { kind: Some(kind) })
            .await
            .expect("open");
    }
}

/// The files of a configuration, in its order.
pub fn files(config: &proto::Config) -> Vec<&str> {
    config.documents.iter().map(|d| d.file.as_str()).collect()
}
