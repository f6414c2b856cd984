//! A small mesh for real: pods as network namespaces on a bridge (the bridge lives in
//! a namespace of its own, so nothing of the host's network changes), each with an
//! application, and a sidecar where the test asks for one, set up by
//! `strait-sidecar init` and served by `strait-sidecar run` under the proxy's uid, as
//! an injected pod runs them. The workload certificates come from a test CA, in
//! Istio's file-mounted layout.
//!
//! Everything is removed on drop (processes killed, namespaces deleted), also when a
//! test panics.

// Shared by the mesh tests in files and on a cluster: each uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, SanType};
use strait_netns::{Bridge, Netns};

const BINARY: &str = env!("CARGO_BIN_EXE_strait-sidecar");
/// The proxy's uid and gid, which the capture rules exempt.
pub const PROXY_UID: u32 = 1337;

/// The mesh's CA: a root that signs each workload's SPIFFE certificate.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    /// A new root.
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "cluster.local");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("root");
        Ca { key, cert }
    }

    /// Writes the certificate of `spiffe` valid for `life` into `dir` (Istio's
    /// file-mounted layout), readable by the proxy.
    pub fn issue(&self, dir: &Path, spiffe: &str, life: Duration) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe.try_into().expect("uri"))];
        params.distinguished_name = DistinguishedName::new();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::try_from(life).expect("life");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        std::fs::create_dir_all(dir).expect("identity dir");
        // Written key first and chain last: the sidecar looks for a changed chain.
        write_public(&dir.join("key.pem"), key.serialize_pem().as_bytes());
        write_public(&dir.join("root-cert.pem"), self.cert.pem().as_bytes());
        write_public(&dir.join("cert-chain.pem"), cert.pem().as_bytes());
    }
}

/// Writes a file others may read (the proxy runs under its own uid).
pub fn write_public(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A folder others may read.
pub fn public_dir(path: &Path) {
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One pod: its namespace, address, and what runs in it.
pub struct Pod {
    /// The namespace.
    pub ns: Netns,
    /// Its address on the bridge.
    pub ip: String,
    /// Its sidecar's log, when it has one.
    pub log: PathBuf,
    children: Vec<Child>,
    stop: Arc<AtomicBool>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pods of one test, on one bridge.
pub struct Net {
    tag: String,
    bridge: Bridge,
    pods: usize,
    /// A folder for the test's files.
    pub dir: tempfile::TempDir,
}

/// The /24 the pods are on (a private range no CI network uses).
const SUBNET: [u8; 3] = [10, 211, 0];

impl Net {
    /// An empty bridge.
    pub fn new() -> Net {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the mesh tests need root and network namespaces (`ip netns`, iptables): run them as root, as CI does"
        );
        let tag = format!("{:x}", std::process::id() ^ fastrand_u32());
        let bridge = Bridge::new(format!("sw-{tag}"), SUBNET).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        public_dir(dir.path());
        Net {
            tag,
            bridge,
            pods: 0,
            dir,
        }
    }

    /// A pod named `name` (no sidecar yet), with a default route on the bridge so
    /// that connections to service addresses reach its capture rules.
    pub fn pod(&mut self, name: &str) -> Pod {
        self.pods += 1;
        let ns = Netns::add(format!("p{}-{}", self.pods + 1, self.tag)).unwrap_or_else(|e| panic!("{e}"));
        let ip = self.bridge.plug(&ns).unwrap_or_else(|e| panic!("{e}")).to_string();
        Pod {
            ns,
            ip,
            log: self.dir.path().join(format!("{name}.log")),
            children: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records the traffic to and from `port` on the bridge's ports while `f` runs; returns the
    /// capture's bytes (pcap).
    pub fn capture<T>(&self, port: u16, f: impl FnOnce() -> T) -> (T, Vec<u8>) {
        let file = self.dir.path().join(format!("capture-{port}.pcap"));
        let path = file.to_string_lossy().to_string();
        let filter = format!("tcp port {port}");
        let mut dump = self
            .bridge
            .switch()
            .command("tcpdump")
            .args(["-i", "any", "--immediate-mode", "-U", "-w", &path, &filter])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (is it installed?)");
        // tcpdump says "listening on" once it captures.
        let mut err = BufReader::new(dump.stderr.take().expect("stderr"));
        let mut line = String::new();
        while err.read_line(&mut line).is_ok_and(|n| n > 0) && !line.contains("listening on") {
            line.clear();
        }
        let out = f();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).output();
        let _ = dump.wait();

        (out, std::fs::read(&file).unwrap_or_default())
    }
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t.rotate_left(7)
}

/// What a sidecar is started with.
pub struct Sidecar<'a> {
    /// Configuration folder.
    pub config_dir: &'a Path,
    /// Identity folder.
    pub identity_dir: &'a Path,
    /// Namespace.
    pub namespace: &'a str,
    /// Service account.
    pub service_account: &'a str,
    /// Labels, `k=v,...`.
    pub labels: &'a str,
    /// Istio's mesh config file, if any.
    pub mesh_config: Option<&'a Path>,
}

impl Pod {
    /// Serves HTTP on `port` inside the pod: a request is answered 200 with a body
    /// naming `name` and echoing the request head (what the application saw);
    /// `/slow` after two seconds, `/flaky` with 503 every other time.
    pub fn app(&mut self, name: &str, port: u16) {
        let name = name.to_string();
        let stop = self.stop.clone();
        let listener = self
            .ns
            .enter(move || TcpListener::bind(("0.0.0.0", port)).expect("app listener"))
            .unwrap_or_else(|e| panic!("{e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let flaky = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let name = name.clone();
                        let flaky = flaky.clone();
                        std::thread::spawn(move || answer(stream, &name, &flaky));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }

    /// `strait-sidecar init` with `args`, then `strait-sidecar run` under the proxy's
    /// uid; waits until it is ready.
    pub fn sidecar(&mut self, init: &[&str], s: &Sidecar<'_>) {
        let mut args = vec!["init"];
        args.extend(init);
        let out = self.exec(BINARY, &args);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let uid = format!("--reuid={PROXY_UID}");
        let gid = format!("--regid={PROXY_UID}");
        let (config, identity) = (s.config_dir.to_string_lossy(), s.identity_dir.to_string_lossy());
        let mut run = vec![
            uid.as_str(),
            &gid,
            "--clear-groups",
            BINARY,
            "run",
            "--config-dir",
            &config,
            "--identity-dir",
            &identity,
            "--namespace",
            s.namespace,
            "--service-account",
            s.service_account,
            "--pod-ip",
            &self.ip,
            "--labels",
            s.labels,
            "--threads",
            "1",
        ];
        let mesh = s.mesh_config.map(|p| p.to_string_lossy().to_string());
        if let Some(mesh) = &mesh {
            run.extend(["--mesh-config", mesh.as_str()]);
        }
        let child = self.spawn("setpriv", &run);
        self.children.push(child);
        self.wait_ready();
    }

    /// Starts `program` with `args` in the pod, its output to the pod's log; it is
    /// killed with the pod.
    pub fn start(&mut self, program: &str, args: &[&str]) {
        let child = self.spawn(program, args);
        self.children.push(child);
    }

    /// The edge gateway (`strait-gateway`, built beside this crate's binary by
    /// `cargo test --workspace`) in this pod, without a sidecar, joining the mesh
    /// with the certificate in `identity_dir`; waits until it is ready.
    pub fn edge_gateway(&mut self, config_dir: &Path, identity_dir: &Path) {
        let gateway = Path::new(BINARY).with_file_name("strait-gateway");
        assert!(
            gateway.exists(),
            "{} is not built: run the tests with `cargo test --workspace` (or build strait-gateway first)",
            gateway.display()
        );
        let child = self.spawn(
            &gateway.to_string_lossy(),
            &[
                "--config-dir",
                &config_dir.to_string_lossy(),
                "--identity-dir",
                &identity_dir.to_string_lossy(),
                "--threads",
                "1",
            ],
        );
        self.children.push(child);
        self.wait_ready();
    }

    /// Runs a program inside the pod, whatever its outcome.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.ns.output(program, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a program inside the pod, its output to the pod's log.
    fn spawn(&self, program: &str, args: &[&str]) -> Child {
        let out = std::fs::File::create(&self.log).expect("log file");
        self.ns
            .command(program)
            .args(args)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.exec(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://127.0.0.1:15021/healthz/ready",
                ],
            );
            if out.stdout == b"200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl` from the application (root, captured) with `args`; returns the
    /// status code and body (`000` when the connection failed).
    pub fn curl(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["-s", "-m", "5", "-w", "\n%{http_code}"];
        all.extend(args);
        let out = self.exec("curl", &all);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        match text.rsplit_once('\n') {
            Some((body, code)) => (code.to_string(), body.to_string()),
            // curl refused its arguments: say why.
            None => (text, String::from_utf8_lossy(&out.stderr).to_string()),
        }
    }

    /// The sidecar's metrics text.
    pub fn metrics(&self) -> String {
        let out = self.exec("curl", &["-s", "http://127.0.0.1:15020/stats/prometheus"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Sends SIGTERM to the sidecar (as the kubelet does once a Job's application has
    /// exited) and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.children.last_mut().expect("a sidecar");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).output();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "the sidecar did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sidecar's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Answers the HTTP/1.1 requests of one connection.
fn answer(stream: TcpStream, name: &str, flaky: &std::sync::atomic::AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut stream = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let mut status = "200 OK";
        if path == "/slow" {
            std::thread::sleep(Duration::from_secs(2));
        } else if path == "/flaky" && flaky.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            status = "503 Service Unavailable";
        }
        let reply = format!("app={name}\n{head}");
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
