//! A small mesh out of network namespaces: pods on a bridge that lives in a namespace
//! of its own (nothing of the host's network changes), each pod a namespace with an
//! address, its application and, where asked, `strait-sidecar init` and
//! `strait-sidecar run` under the proxy's uid, as an injected pod has them (or another
//! proxy behind the same capture rules, for comparison). Workload certificates come
//! from a CA made here, written in Istio's file-mounted layout; the configuration is a
//! folder of Services, EndpointSlices, Pods and PeerAuthentications.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, SanType};

use crate::netns::{self, Netns, NetnsError, Process};

/// The proxy's uid and gid, which the capture rules exempt.
pub const PROXY_UID: u32 = 1337;

/// The /24 the pods are on (a private range; it exists only inside the namespaces).
pub const SUBNET: [u8; 3] = [10, 213, 0];

/// Errors building or probing the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A namespace or process could not be set up.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A namespace could not be set up or entered.
    #[error(transparent)]
    Namespace(#[from] strait_netns::Error),
    /// A certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A certificate's validity could not be expressed.
    #[error("certificate validity: {0}")]
    Validity(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process did not become ready in time.
    #[error("{name} is not ready after {seconds} s; its log:\n{log}")]
    NotReady {
        /// The process.
        name: String,
        /// How long it was given.
        seconds: u64,
        /// Its log.
        log: String,
    },
    /// A process exited while it should be serving.
    #[error("{name} exited ({status}); its log:\n{log}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log.
        log: String,
    },
}

/// Writes `bytes` to `path`, readable by the proxy's uid.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), MeshError> {
    let write_error = |source| MeshError::Write {
        path: path.into(),
        source,
    };
    std::fs::write(path, bytes).map_err(write_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(write_error)
}

/// Creates the folder `path`, readable by the proxy's uid.
pub fn public_dir(path: &Path) -> Result<(), MeshError> {
    let write_error = |source| MeshError::Write {
        path: path.into(),
        source,
    };
    std::fs::create_dir_all(path).map_err(write_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(write_error)
}

/// The mesh's CA: a root that signs each workload's SPIFFE certificate.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    /// A new root.
    pub fn new() -> Result<Ca, MeshError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "cluster.local");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key)?;
        Ok(Ca { key, cert })
    }

    /// Writes a day-long certificate for `spiffe` into `dir` (`cert-chain.pem`,
    /// `key.pem`, `root-cert.pem`), readable by the proxy.
    pub fn issue(&self, dir: &Path, spiffe: &str) -> Result<(), MeshError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            spiffe
                .try_into()
                .map_err(|e: rcgen::Error| MeshError::Validity(e.to_string()))?,
        )];
        params.distinguished_name = DistinguishedName::new();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(1);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        public_dir(dir)?;
        // Key first, chain last: the sidecar looks for a changed chain.
        write_public(&dir.join("key.pem"), key.serialize_pem().as_bytes())?;
        write_public(&dir.join("root-cert.pem"), self.cert.pem().as_bytes())?;
        write_public(&dir.join("cert-chain.pem"), cert.pem().as_bytes())
    }
}

/// The bridge the pods are plugged into, in a namespace of its own.
pub struct Bridge(netns::Bridge);

impl Bridge {
    /// An empty bridge.
    pub fn new() -> Result<Bridge, MeshError> {
        Ok(Bridge(netns::Bridge::new(netns::name("switch"), SUBNET)?))
    }

    /// A pod named `name` on the bridge, with a default route through its interface
    /// so that connections to service addresses (which no one owns) reach its capture
    /// rules.
    pub fn pod(&mut self, name: &str) -> Result<Pod, MeshError> {
        let ns = Netns::add(netns::name(name))?;
        let ip = self.0.plug(&ns)?;
        Ok(Pod {
            processes: Vec::new(),
            ns,
            name: name.into(),
            ip,
        })
    }
}

/// What a sidecar is started with.
pub struct SidecarSpec<'a> {
    /// The `strait-sidecar` binary.
    pub binary: &'a Path,
    /// Configuration folder.
    pub config_dir: &'a Path,
    /// Identity folder.
    pub identity_dir: &'a Path,
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Service account.
    pub service_account: &'a str,
    /// Labels, `k=v,...`.
    pub labels: &'a str,
    /// `--threads` (worker threads per listener); the engine's default when `None`.
    pub threads: Option<usize>,
    /// More flags for `run`.
    pub extra: &'a [String],
    /// Core to pin it to.
    pub core: usize,
    /// Its log file.
    pub log: &'a Path,
}

/// One pod: its namespace, address and processes (stopped before the namespace goes).
pub struct Pod {
    /// What runs in it, sidecar and application.
    pub processes: Vec<Process>,
    /// Its namespace.
    pub ns: Netns,
    /// Its name.
    pub name: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

impl Pod {
    /// Starts `program args` in the pod pinned to `core` and waits until something
    /// listens on `port` there; returns the process's index in `processes`.
    pub fn app(
        &mut self,
        name: &str,
        core: usize,
        program: &Path,
        args: &[String],
        port: u16,
        log: &Path,
    ) -> Result<usize, MeshError> {
        let process = netns::spawn(&self.ns, name, core, program, args, &[], log)?;
        self.processes.push(process);
        let index = self.processes.len() - 1;
        self.wait(index, Duration::from_secs(20), |pod| {
            pod.connects(SocketAddr::from(([127, 0, 0, 1], port)))
        })?;
        Ok(index)
    }

    /// `strait-sidecar init` (capture everything, as Istio's defaults), then
    /// `strait-sidecar run` under the proxy's uid; waits until it is ready. Returns
    /// the sidecar's index in `processes`.
    pub fn sidecar(&mut self, s: &SidecarSpec<'_>) -> Result<usize, MeshError> {
        let binary = s.binary.to_string_lossy().to_string();
        self.capture(s.binary)?;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config-dir".into(),
            s.config_dir.to_string_lossy().into(),
            "--identity-dir".into(),
            s.identity_dir.to_string_lossy().into(),
            "--namespace".into(),
            s.namespace.into(),
            "--service-account".into(),
            s.service_account.into(),
            "--pod-name".into(),
            self.name.clone(),
            "--pod-ip".into(),
            self.ip.to_string(),
            "--labels".into(),
            s.labels.into(),
        ];
        if let Some(n) = s.threads {
            args.extend(["--threads".into(), n.to_string()]);
        }
        args.extend(s.extra.iter().cloned());
        let index = self.as_proxy(&format!("{} sidecar", self.name), s.core, &binary, args, s.log)?;
        self.wait(index, Duration::from_secs(30), |pod| {
            pod.get(SocketAddr::from(([127, 0, 0, 1], 15021)), "/healthz/ready")
                .is_ok_and(|(code, _)| code == 200)
        })?;
        Ok(index)
    }

    /// `strait-sidecar init`: the pod's traffic captured as Istio's defaults do
    /// (outbound to 15001, inbound to 15006, the proxy's uid exempt).
    pub fn capture(&mut self, sidecar: &Path) -> Result<(), MeshError> {
        self.ns.exec(&sidecar.to_string_lossy(), &["init"])?;
        Ok(())
    }

    /// Runs another proxy (`program args`) in the pod under the proxy's uid, so
    /// [`Pod::capture`]'s rules leave its own connections alone, and waits until it
    /// accepts on 127.0.0.1:`port`. Returns its index in `processes`.
    pub fn proxy(
        &mut self,
        name: &str,
        core: usize,
        program: &Path,
        args: Vec<String>,
        port: u16,
        log: &Path,
    ) -> Result<usize, MeshError> {
        let index = self.as_proxy(name, core, &program.to_string_lossy(), args, log)?;
        self.wait(index, Duration::from_secs(20), |pod| {
            pod.connects(SocketAddr::from(([127, 0, 0, 1], port)))
        })?;
        Ok(index)
    }

    /// Starts `program args` under the proxy's uid and gid, pinned to `core`.
    fn as_proxy(
        &mut self,
        name: &str,
        core: usize,
        program: &str,
        args: Vec<String>,
        log: &Path,
    ) -> Result<usize, MeshError> {
        let mut all = vec![
            format!("--reuid={PROXY_UID}"),
            format!("--regid={PROXY_UID}"),
            "--clear-groups".into(),
            program.into(),
        ];
        all.extend(args);
        let process = netns::spawn(&self.ns, name, core, Path::new("setpriv"), &all, &[], log)?;
        self.processes.push(process);
        Ok(self.processes.len() - 1)
    }

    /// Polls `ready` until it holds, failing early when process `index` exits.
    fn wait(&mut self, index: usize, limit: Duration, ready: impl Fn(&Pod) -> bool) -> Result<(), MeshError> {
        let deadline = Instant::now() + limit;
        loop {
            if ready(self) {
                return Ok(());
            }
            let process = &mut self.processes[index];
            if let Some(status) = process.exited() {
                return Err(MeshError::Exited {
                    name: process.name.clone(),
                    status: status.to_string(),
                    log: process.log_text(),
                });
            }
            if Instant::now() > deadline || crate::interrupt::interrupted() {
                return Err(MeshError::NotReady {
                    name: process.name.clone(),
                    seconds: limit.as_secs(),
                    log: process.log_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a TCP connection from inside the pod to `addr` succeeds.
    pub fn connects(&self, addr: SocketAddr) -> bool {
        self.ns
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
            .unwrap_or(false)
    }

    /// `GET path` from inside the pod (as root: through the capture rules) to `addr`,
    /// HTTP/1.0; returns the status and body.
    pub fn get(&self, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        self.ns
            .enter(move || -> std::io::Result<(u16, String)> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(request.as_bytes())?;
                let raw = read_response(&mut stream)?;
                if raw.is_empty() {
                    return Err(std::io::Error::other("the connection was closed without a response"));
                }
                let text = String::from_utf8_lossy(&raw);
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let code = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
                Ok((code, body.to_string()))
            })
            .map_err(std::io::Error::other)?
    }

    /// The sidecar's Prometheus text (port 15020).
    pub fn metrics(&self) -> std::io::Result<String> {
        let (code, body) = self.get(SocketAddr::from(([127, 0, 0, 1], 15020)), "/stats/prometheus")?;
        if code != 200 {
            return Err(std::io::Error::other(format!("metrics answered {code}")));
        }
        Ok(body)
    }
}

/// Reads one response: up to its content-length when it has one, else to the end.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|len| raw.len() >= end + 4 + len) {
            return Ok(raw);
        }
    }
}

/// A Service with a cluster IP and the pods behind it.
pub struct ServiceSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its cluster IP (reachable only through a sidecar: there is no kube-proxy).
    pub vip: Ipv4Addr,
    /// Its port (and the pods' target port).
    pub port: u16,
    /// Its pods, by name and address.
    pub endpoints: Vec<(&'a str, Ipv4Addr)>,
}

/// A Pod resource: name (also its service account), address, labels (`k: v, ...`)
/// and whether it has a sidecar (then it is labeled `security.istio.io/tlsMode:
/// istio`, so clients' sidecars speak mTLS to it).
pub struct PodSpec<'a> {
    /// Its name and service account.
    pub name: &'a str,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its labels in YAML flow form.
    pub labels: &'a str,
    /// Whether it has a sidecar.
    pub meshed: bool,
}

/// The resources of namespace `namespace` as YAML: Services with their
/// EndpointSlices, then Pods.
pub fn registry(namespace: &str, services: &[ServiceSpec<'_>], pods: &[PodSpec<'_>]) -> String {
    let mut out = String::new();
    for s in services {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {port}, targetPort: {port}}}]\n---\n",
            name = s.name,
            vip = s.vip,
            port = s.port
        ));
        out.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\nports: [{{name: http, port: {port}}}]\nendpoints:\n",
            name = s.name,
            port = s.port
        ));
        for (pod, ip) in &s.endpoints {
            out.push_str(&format!(
                "- addresses: [{ip}]\n  targetRef: {{kind: Pod, name: {pod}, namespace: {namespace}}}\n"
            ));
        }
        out.push_str("---\n");
    }
    for p in pods {
        let tls = if p.meshed {
            ", security.istio.io/tlsMode: istio"
        } else {
            ""
        };
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}{tls}}}}}\nspec: {{serviceAccountName: {name}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n---\n",
            name = p.name,
            labels = p.labels,
            ip = p.ip
        ));
    }
    out
}

/// A namespace-wide PeerAuthentication with mTLS mode `mode` (`STRICT`, `PERMISSIVE`).
pub fn peer_authentication(namespace: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: {namespace}}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

/// Sum of the `istio_requests_total` series in Prometheus text `metrics` whose
/// labels contain every one of `labels` (`key="value"`).
pub fn requests_total(metrics: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_matching_series() {
        let text = "# TYPE istio_requests_total counter\n\
istio_requests_total{reporter=\"destination\",connection_security_policy=\"mutual_tls\",response_code=\"200\"} 1200\n\
istio_requests_total{reporter=\"destination\",connection_security_policy=\"mutual_tls\",response_code=\"503\"} 3\n\
istio_requests_total{reporter=\"destination\",connection_security_policy=\"none\",response_code=\"200\"} 7\n\
istio_requests_total{reporter=\"source\",response_code=\"200\"} 9\n\
istio_request_bytes_sum{reporter=\"destination\",connection_security_policy=\"mutual_tls\"} 50\n";
        let mtls = ["reporter=\"destination\"", "connection_security_policy=\"mutual_tls\""];
        assert_eq!(requests_total(text, &mtls), 1203.0);
        assert_eq!(requests_total(text, &["connection_security_policy=\"none\""]), 7.0);
        assert_eq!(requests_total(text, &["reporter=\"nobody\""]), 0.0);
    }

    #[test]
    fn registry_labels_meshed_pods_for_mtls() {
        let ip = Ipv4Addr::new(10, 213, 0, 3);
        let yaml = registry(
            "bench",
            &[ServiceSpec {
                name: "backend",
                vip: Ipv4Addr::new(10, 96, 0, 10),
                port: 8080,
                endpoints: vec![("server", ip)],
            }],
            &[
                PodSpec {
                    name: "server",
                    ip,
                    labels: "app: backend",
                    meshed: true,
                },
                PodSpec {
                    name: "plain",
                    ip: Ipv4Addr::new(10, 213, 0, 4),
                    labels: "app: plain",
                    meshed: false,
                },
            ],
        );
        assert!(yaml.contains("clusterIP: 10.96.0.10"), "{yaml}");
        assert!(
            yaml.contains("targetRef: {kind: Pod, name: server, namespace: bench}"),
            "{yaml}"
        );
        assert!(
            yaml.contains("labels: {app: backend, security.istio.io/tlsMode: istio}"),
            "{yaml}"
        );
        assert!(yaml.contains("labels: {app: plain}}"), "{yaml}");
    }
}
