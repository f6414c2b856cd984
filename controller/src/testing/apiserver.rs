//! `etcd` and `kube-apiserver` as child processes of the test, with the flags of
//! scripts/kube-apiserver-smoke.sh (its comments say why each is there).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use kube::Client;
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{crds, Error, Tools};

/// How long kube-apiserver may take to answer /readyz (a cold start on a busy
/// two-core machine takes some 10 s).
const READY: Duration = Duration::from_secs(120);

/// Attempts at a start that loses a race for its port.
const ATTEMPTS: usize = 5;

/// API servers running at once in one test binary (`STRAIT_KUBE_PARALLEL`, default
/// 2): each costs a few hundred MB and seconds of CPU to start, and test threads
/// would otherwise start one each at the same moment.
static SLOTS: Semaphore = Semaphore::const_new(0);
static SLOTS_INIT: Once = Once::new();

/// Ports handed out in this process, so two servers starting at once never pick
/// the same one.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A running etcd + kube-apiserver with the CRDs installed. `stop` (or drop) kills
/// both, by PID, and removes their folder.
pub struct ApiServer {
    tools: Tools,
    dir: Option<TempDir>,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_url: String,
    port: u16,
    kubeconfig: PathBuf,
    client: Client,
    _slot: SemaphorePermit<'static>,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver on free loopback ports, waits for /readyz,
    /// and installs Istio's and the Gateway API's CRDs (Established, and served
    /// in every version they declare).
    pub async fn start() -> Result<ApiServer, Error> {
        let tools = Tools::find().await?;
        SLOTS_INIT.call_once(|| {
            let n = std::env::var("STRAIT_KUBE_PARALLEL")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(2);
            SLOTS.add_permits(n);
        });
        let slot = SLOTS
            .acquire()
            .await
            .map_err(|_| Error::Tools("the API server slots were closed".into()))?;
        let dir = tempfile::Builder::new()
            .prefix("strait-kube-")
            .tempdir()
            .map_err(Error::io("creating the API server's folder"))?;
        let base = dir.path().to_path_buf();
        let (etcd, etcd_url) = start_etcd(&tools, &base).await?;
        // Until the server is built, a failure must not leave etcd behind.
        let mut etcd = KillOnDrop(Some(etcd));
        let token = format!(
            "{:016x}{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..)
        );
        write(
            &base.join("tokens.csv"),
            &format!("{token},strait-admin,strait-admin,\"system:masters\"\n"),
        )?;
        let key = rcgen::KeyPair::generate()
            .map_err(|e| Error::Tools(format!("cannot generate the service-account key: {e}")))?;
        // The server verifies tokens with the public key (it does not derive it from
        // a PKCS#8 private key) and signs them with the private one.
        write(&base.join("sa.key"), &key.serialize_pem())?;
        write(&base.join("sa.pub"), &key.public_key_pem())?;
        let (apiserver, port) = start_apiserver(&tools, &base, &etcd_url, None).await?;
        let mut apiserver = KillOnDrop(Some(apiserver));
        let kubeconfig = base.join("kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(port, &base.join("certs/apiserver.crt"), &token),
        )?;
        let client = crate::kube_source::client_from_kubeconfig(&kubeconfig).await?;
        let started = Instant::now();
        wait_ready(&client, apiserver.child(), &base).await?;
        log::info!("kube-apiserver ready on 127.0.0.1:{port} after {:?}", started.elapsed());
        crds::install(&client, &[&tools.istio_crds, &tools.gateway_api_crds]).await?;
        Ok(ApiServer {
            tools,
            dir: Some(dir),
            etcd: etcd.0.take(),
            apiserver: apiserver.0.take(),
            etcd_url,
            port,
            kubeconfig,
            client,
            _slot: slot,
        })
    }

    /// A client of the server, as its admin (in `system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A kubeconfig file for the server (admin token, the server's CA), for binaries
    /// started with `--kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig for the server that authenticates with `token` (a
    /// ServiceAccount's, say, to run a binary with exactly that account's rights).
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> Result<PathBuf, Error> {
        let path = self.base().join(format!("kubeconfig-{name}"));
        write(
            &path,
            &kubeconfig_yaml(self.port, &self.base().join("certs/apiserver.crt"), token),
        )?;
        Ok(path)
    }

    /// Runs `kubectl <args>` against the server with `stdin` (e.g. `apply -f -` and
    /// YAML, as a user applies it); its standard output, or an error with both
    /// outputs when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> Result<String, Error> {
        let kubectl = self
            .tools
            .kubectl
            .as_ref()
            .ok_or_else(|| Error::Tools("kubectl is not known (STRAIT_KUBECTL)".into()))?;
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("starting kubectl"))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(Error::io("writing to kubectl"))?;
        }
        let out = child.wait_with_output().map_err(Error::io("running kubectl"))?;
        if !out.status.success() {
            return Err(Error::Kubectl {
                args: args.join(" "),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The tools it runs (kubectl and helm, for tests that use them too).
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// Kills kube-apiserver and starts it again on the same port with the same etcd
    /// data (watches break, as in a real restart); returns once it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<(), Error> {
        if let Some(mut old) = self.apiserver.take() {
            check_running(&mut old, "kube-apiserver", &self.base().join("apiserver.log"))?;
            kill(&mut old);
        }
        let base = self.base().to_path_buf();
        let (child, _) = start_apiserver(&self.tools, &base, &self.etcd_url, Some(self.port)).await?;
        let mut child = KillOnDrop(Some(child));
        wait_ready(&self.client, child.child(), &base).await?;
        self.apiserver = child.0.take();
        Ok(())
    }

    /// Kills both processes and removes the folder; an error if either had exited
    /// by itself before (a crash the test would otherwise not see).
    pub fn stop(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn base(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/nonexistent"), |d| d.path())
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        let mut result = Ok(());
        let base = self.base().to_path_buf();
        for (child, name, log) in [
            (self.apiserver.take(), "kube-apiserver", "apiserver.log"),
            (self.etcd.take(), "etcd", "etcd.log"),
        ] {
            let Some(mut child) = child else { continue };
            if let Err(e) = check_running(&mut child, name, &base.join(log)) {
                result = result.and(Err(e));
            }
            kill(&mut child);
        }
        if let Some(dir) = self.dir.take() {
            let shown = dir.path().display().to_string();
            if let Err(e) = dir.close() {
                result = result.and(Err(Error::Io {
                    what: format!("removing {shown}"),
                    source: e,
                }));
            }
        }
        result
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            // A second panic while the test unwinds would abort the whole run.
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// A child killed (by PID) if dropped before it is taken.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child until taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill(child);
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An error if `child` has already exited.
fn check_running(child: &mut Child, process: &'static str, log: &Path) -> Result<(), Error> {
    match child.try_wait() {
        Ok(Some(status)) => Err(Error::Exited {
            process,
            status,
            log: tail(log),
        }),
        _ => Ok(()),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}

/// The last 40 lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A loopback port nothing listens on, below the kernel's ephemeral range (so no
/// outgoing connection takes it before the server binds it).
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 11_000)
        .unwrap_or(32_768);
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = fastrand::u16(10_000..low);
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> Result<Child, Error> {
    let out = File::create(log).map_err(Error::io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(Error::io("duplicating a log file"))?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(Error::io(format!("starting {}", binary.display())))
}

/// Polls `ready` every 100 ms until it holds; fails as soon as `child` exits, or
/// after `within`.
async fn wait_up(
    child: &mut Child,
    process: &'static str,
    log: &Path,
    what: &str,
    within: Duration,
    mut ready: impl AsyncFnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + within;
    loop {
        if ready().await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Start {
                process,
                reason: format!("exited ({status}) while waiting for {what}"),
                log: tail(log),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Start {
                process,
                reason: format!("no {what} after {within:?}"),
                log: tail(log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a start failed because another process took its port first.
fn lost_port_race(e: &Error) -> bool {
    matches!(e, Error::Start { log, .. } if log.contains("address already in use"))
}

async fn start_etcd(tools: &Tools, base: &Path) -> Result<(Child, String), Error> {
    let log = base.join("etcd.log");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = base.join("etcd");
        let _ = std::fs::remove_dir_all(&data);
        let args = [
            "--name=default".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut child = spawn(&tools.etcd, &args, &log)?;
        let health = wait_up(
            &mut child,
            "etcd",
            &log,
            "/health",
            Duration::from_secs(30),
            async || etcd_healthy(client),
        )
        .await;
        match health {
            Ok(()) => return Ok((child, url)),
            Err(e) => {
                kill(&mut child);
                if !(lost_port_race(&e) && attempt < ATTEMPTS) {
                    return Err(e);
                }
            }
        }
    }
}

/// Whether etcd's `/health` on loopback `port` says healthy (HTTP/1.0 by hand:
/// no client needed for one line).
fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") && answer.contains("\"health\":\"true\"")
}

/// Starts kube-apiserver on `port` (a free one when None) and waits for its serving
/// certificate; `wait_ready` waits for the rest.
async fn start_apiserver(
    tools: &Tools,
    base: &Path,
    etcd_url: &str,
    fixed_port: Option<u16>,
) -> Result<(Child, u16), Error> {
    let log = base.join("apiserver.log");
    let certs = base.join("certs");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = fixed_port.unwrap_or_else(free_port);
        std::fs::create_dir_all(&certs).map_err(Error::io("creating the cert folder"))?;
        let sa_key = base.join("sa.key");
        let args = [
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", certs.display()),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            format!("--service-account-issuer=https://127.0.0.1:{port}"),
            format!("--service-account-key-file={}", base.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--authorization-mode=RBAC".to_string(),
            format!("--token-auth-file={}", base.join("tokens.csv").display()),
            "--allow-privileged=true".to_string(),
            "--disable-admission-plugins=ServiceAccount".to_string(),
            // As envtest: no request queuing by priority (one client, and less work).
            "--enable-priority-and-fairness=false".to_string(),
        ];
        let mut child = spawn(&tools.kube_apiserver, &args, &log)?;
        let cert = certs.join("apiserver.crt");
        let up = wait_up(
            &mut child,
            "kube-apiserver",
            &log,
            "serving certificate",
            READY,
            async || std::fs::metadata(&cert).is_ok_and(|m| m.len() > 0),
        )
        .await;
        match up {
            Ok(()) => return Ok((child, port)),
            Err(e) => {
                kill(&mut child);
                // A fixed port (a restart) cannot be swapped for another.
                let retry = lost_port_race(&e) && attempt < ATTEMPTS && fixed_port.is_none();
                if !retry {
                    return Err(e);
                }
            }
        }
    }
}

/// Waits until kube-apiserver answers `/readyz` with 200.
async fn wait_ready(client: &Client, child: &mut Child, base: &Path) -> Result<(), Error> {
    let log = base.join("apiserver.log");
    wait_up(child, "kube-apiserver", &log, "/readyz", READY, async || {
        let request = http::Request::get("/readyz").body(Vec::new());
        match request {
            Ok(request) => client.request_text(request).await.is_ok(),
            Err(_) => false,
        }
    })
    .await
}

fn kubeconfig_yaml(port: u16, ca: &Path, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: strait-test
  cluster: {{server: "https://127.0.0.1:{port}", certificate-authority: "{ca}"}}
users:
- name: admin
  user: {{token: "{token}"}}
contexts:
- name: strait-test
  context: {{cluster: strait-test, user: admin, namespace: default}}
current-context: strait-test
"#,
        ca = ca.display()
    )
}
