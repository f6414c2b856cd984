//! The proxies under test, each started with a configuration written by the
//! harness and pinned to core 0: bare Pingora, Strait (the example's routing table,
//! or generated tables of many routes), nginx and haproxy. `direct` is the backend
//! itself.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The process could not be spawned.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// Target.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// It did not start listening in time.
    #[error("{name} did not listen on {addr} within 20 s; see {log}")]
    NotReady {
        /// Target.
        name: String,
        /// Address waited for.
        addr: SocketAddr,
        /// Its log.
        log: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Shared setup: work folder, backend address, certificate, binaries.
pub struct Env {
    /// Work folder for configs and logs.
    pub dir: PathBuf,
    /// The backend all proxies forward to.
    pub backend: SocketAddr,
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// Certificate and key PEM for app.example.com.
    pub cert_pem: String,
    /// Key PEM.
    pub key_pem: String,
}

impl Env {
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, TargetError> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| TargetError::Write {
                path: parent.into(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| TargetError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// A running target.
pub struct Target {
    /// Name in the report.
    pub name: String,
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address, if it serves TLS.
    pub https: Option<SocketAddr>,
    /// Host header to send.
    pub host: String,
    /// Path to request (the backend reads `bytes=N` from the query).
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<String>,
    child: Option<Child>,
}

impl Target {
    /// A proxy target that serves app.example.com at `/`, not started yet.
    fn proxy(name: &str, http: SocketAddr, https: Option<SocketAddr>) -> Target {
        Target {
            name: name.into(),
            http,
            https,
            host: "app.example.com".into(),
            path: "/".into(),
            headers: Vec::new(),
            child: None,
        }
    }

    /// Starts `program args` pinned to core 0 as this target and waits until it
    /// listens; on failure the process is stopped (by `Drop`).
    fn launch(mut self, env: &Env, program: &Path, args: &[String]) -> Result<Target, TargetError> {
        let (child, log) = spawn_pinned(env, &self.name, program, args)?;
        self.child = Some(child);
        wait_listening(&self.name, self.http, &log)?;
        Ok(self)
    }

    /// The processes to measure (none for `direct`).
    pub fn pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map(|c| crate::procstat::tree(c.id()))
            .unwrap_or_default()
    }

    /// Whether this is a proxy (not `direct`).
    pub fn is_proxy(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            for pid in crate::procstat::tree(c.id()).into_iter().rev() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            let _ = c.wait();
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_listening(name: &str, addr: SocketAddr, log: &Path) -> Result<(), TargetError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(TargetError::NotReady {
        name: name.into(),
        addr,
        log: log.display().to_string(),
    })
}

/// Spawns `program args` pinned to core 0 (`taskset`), logging to the work folder.
fn spawn_pinned(env: &Env, name: &str, program: &Path, args: &[String]) -> Result<(Child, PathBuf), TargetError> {
    let log = env.dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|source| TargetError::Write {
        path: log.clone(),
        source,
    })?;
    let err = file.try_clone().map_err(|source| TargetError::Write {
        path: log.clone(),
        source,
    })?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|source| TargetError::Spawn {
            name: name.into(),
            source,
        })?;
    Ok((child, log))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The backend itself: the physical limit.
pub fn direct(env: &Env) -> Target {
    Target {
        name: "direct".into(),
        http: env.backend,
        https: None,
        host: "backend".into(),
        path: "/".into(),
        headers: Vec::new(),
        child: None,
    }
}

/// The minimal Pingora pass-through proxy.
pub fn pingora_bare(env: &Env) -> Result<Target, TargetError> {
    let (http, https) = (local(free_port()), local(free_port()));
    let cert = env.write("certs/tls.crt", &env.cert_pem)?;
    let key = env.write("certs/tls.key", &env.key_pem)?;
    let args = [
        "--listen".to_string(),
        http.to_string(),
        "--upstream".into(),
        env.backend.to_string(),
        "--tls-listen".into(),
        https.to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ];
    Target::proxy("pingora-bare", http, Some(https)).launch(env, &env.bin_dir.join("pingora-bare"), &args)
}

/// Strait with the app.example.com example's routing table (`routes = None`) or a
/// generated table of `routes` rules (10 per host), one worker thread.
pub fn strait(env: &Env, examples: &Path, routes: Option<usize>) -> Result<Target, TargetError> {
    let name = routes.map_or("strait".to_string(), |n| format!("strait-{n}-routes"));
    let conf = env.dir.join(format!("{name}-config"));
    let port = env.backend.port().to_string();
    let (host, path, headers) = match routes {
        None => {
            for f in ["gateway.yaml", "virtualservice.yaml", "destinationrule.yaml"] {
                let text = std::fs::read_to_string(examples.join(f)).map_err(|source| TargetError::Write {
                    path: examples.join(f),
                    source,
                })?;
                env.write(&format!("{name}-config/{f}"), &text)?;
            }
            let se = std::fs::read_to_string(examples.join("serviceentry.yaml"))
                .map_err(|source| TargetError::Write {
                    path: examples.join("serviceentry.yaml"),
                    source,
                })?
                .replace("9001", &port)
                .replace("9002", &port)
                .replace("9003", &port);
            env.write(&format!("{name}-config/serviceentry.yaml"), &se)?;
            env.write(
                &format!("{name}-config/secret.yaml"),
                &secret_yaml(&env.cert_pem, &env.key_pem),
            )?;
            // The default rule: two rules tried first, then the 90/10 split.
            ("app.example.com".to_string(), "/".to_string(), Vec::new())
        }
        Some(n) => {
            let hosts = (n / 10).max(1);
            env.write(
                &format!("{name}-config/routes.yaml"),
                &strait_config::testing::large_config(hosts, 10, env.backend.port()),
            )?;
            // The last rule of the last host: the slowest lookup in the table.
            (
                format!("svc{}.example.com", hosts - 1),
                "/r9/x".to_string(),
                vec!["x-tenant: t1".to_string()],
            )
        }
    };
    let (http, https, health) = (local(free_port()), local(free_port()), free_port());
    let args = vec![
        "--config-dir".to_string(),
        conf.display().to_string(),
        "--bind-address".into(),
        "127.0.0.1".into(),
        "--namespace".into(),
        "default".into(),
        format!("--port-map=80={},443={}", http.port(), https.port()),
        "--admin-port=0".into(),
        format!("--health-port={health}"),
        // Every Strait target runs at once: each needs its own metrics port.
        format!("--metrics-port={}", free_port()),
        "--threads=1".into(),
    ];
    Target {
        name,
        http,
        https: routes.is_none().then_some(https),
        host,
        path,
        headers,
        child: None,
    }
    .launch(env, &env.bin_dir.join("strait-gateway"), &args)
}

fn secret_yaml(cert: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-example-com-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

/// nginx from Debian, one worker, upstream keep-alive.
pub fn nginx(env: &Env) -> Result<Target, TargetError> {
    let (http, https) = (local(free_port()), local(free_port()));
    let d = env.dir.join("nginx");
    let cert = env.write("certs/tls.crt", &env.cert_pem)?;
    let key = env.write("certs/tls.key", &env.key_pem)?;
    let conf = nginx_conf(
        &d,
        &env.backend.to_string(),
        &format!(
            "listen {http};\n    listen {https} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
        "http",
        "",
    );
    let path = env.write("nginx/nginx.conf", &conf)?;
    let args = vec![
        "-c".to_string(),
        path.display().to_string(),
        "-p".into(),
        d.display().to_string(),
        "-e".into(),
        d.join("stderr.log").display().to_string(),
    ];
    Target::proxy("nginx", http, Some(https)).launch(env, Path::new("nginx"), &args)
}

/// An nginx configuration for the benchmarks: one worker in the foreground, its files
/// under `dir`, no access log, keep-alive without a request limit both towards the
/// clients and towards `upstream` (`host:port`, reached over `scheme`). `listen` is
/// the server block's listening (and TLS) lines, `proxy_extra` more lines for its one
/// location (the upstream TLS, say).
pub fn nginx_conf(dir: &Path, upstream: &str, listen: &str, scheme: &str, proxy_extra: &str) -> String {
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  upstream backend {{ server {upstream}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    {listen}
    location / {{
      proxy_pass {scheme}://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";{proxy_extra}
    }}
  }}
}}
"#,
        d = dir.display(),
    )
}

/// haproxy from Debian, one thread, connection reuse.
pub fn haproxy(env: &Env) -> Result<Target, TargetError> {
    let (http, https) = (local(free_port()), local(free_port()));
    let combined = env.write("certs/combined.pem", &format!("{}{}", env.cert_pem, env.key_pem))?;
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\nfrontend fe\n  bind {http}\n  bind {https} ssl crt {combined}\n  default_backend be\nbackend be\n  server s1 {backend}\n",
        combined = combined.display(),
        backend = env.backend,
    );
    let path = env.write("haproxy/haproxy.cfg", &conf)?;
    let args = vec!["-f".to_string(), path.display().to_string(), "-db".into()];
    Target::proxy("haproxy", http, Some(https)).launch(env, Path::new("haproxy"), &args)
}

/// Starts the backend (not pinned: it shares the client's core).
pub fn backend(bin_dir: &Path, dir: &Path) -> Result<(Child, SocketAddr), TargetError> {
    let addr = local(free_port());
    let log = dir.join("backend.log");
    let file = std::fs::File::create(&log).map_err(|source| TargetError::Write {
        path: log.clone(),
        source,
    })?;
    let child = Command::new(bin_dir.join("bench-backend"))
        .arg("--listen")
        .arg(addr.to_string())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| TargetError::Spawn {
            name: "bench-backend".into(),
            source,
        })?;
    wait_listening("bench-backend", addr, &log)?;
    Ok((child, addr))
}
