//! Pods as network namespaces: a "pod" and a "peer" joined by a veth pair, with
//! listeners and clients inside them, for testing `strait-sidecar init` for real.
//!
//! Everything stays inside the two namespaces the test made (deleted on drop, also
//! when a test panics). Listeners and the root client run in this process, on
//! threads that entered the namespace (setns affects only the calling thread); a
//! client under another uid/gid runs as a small perl script (perl-base is essential
//! on Debian) under `setpriv`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
pub use strait_netns::Netns;

/// The pod's address on its veth (a /16 shared with the peer).
pub const POD_IP: &str = "10.200.0.1";
/// The peer's address.
pub const PEER_IP: &str = "10.200.0.2";
/// A second address of the peer, in another /24, for CIDR exclusions.
pub const PEER_OTHER_IP: &str = "10.200.1.2";
/// The pod's IPv6 address (dual-stack pods only).
pub const POD_IP6: &str = "fd20::1";
/// The peer's IPv6 address (dual-stack pods only).
pub const PEER_IP6: &str = "fd20::2";

const TIMEOUT: Duration = Duration::from_secs(5);
const BINARY: &str = env!("CARGO_BIN_EXE_strait-sidecar");

/// Fails the test, loudly, unless it can make network namespaces.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the capture tests need root and network namespaces (`ip netns`, iptables): run them as root, as CI does"
    );
}

/// A namespace named `name`; its making failing fails the test.
fn add(name: String) -> Netns {
    Netns::add(name).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -n NAME ARGS`; its failure fails the test.
fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs a program inside `ns` (`ip netns exec`), whatever its outcome.
pub fn exec(ns: &Netns, program: &str, args: &[&str]) -> Output {
    ns.output(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` on a thread inside `ns`; sockets it makes stay in it.
fn enter<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    ns.enter(f).unwrap_or_else(|e| panic!("{e}"))
}

/// The nat table of `ns` as iptables-save (or ip6tables-save) prints it, without
/// the lines that change from one save to the next (dates, counters).
pub fn nat(ns: &Netns, save: &str) -> String {
    let output = exec(ns, save, &["-t", "nat"]);
    assert!(
        output.status.success(),
        "{save}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match line.find(" [") {
            Some(at) if line.starts_with(':') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pod and a peer joined by a veth pair (`eth0` on both sides).
pub struct Pods {
    /// The pod: where init runs.
    pub pod: Netns,
    /// A host outside the pod.
    pub peer: Netns,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Pods {
    /// IPv4 only.
    pub fn new() -> Pods {
        require_root();
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pods = Pods {
            pod: add(format!("strait-pod-{id}")),
            peer: add(format!("strait-peer-{id}")),
        };
        ip(
            &pods.pod,
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pods.peer.name,
            ],
        );
        ip(&pods.pod, &["addr", "add", &format!("{POD_IP}/16"), "dev", "eth0"]);
        ip(&pods.peer, &["addr", "add", &format!("{PEER_IP}/16"), "dev", "eth0"]);
        ip(
            &pods.peer,
            &["addr", "add", &format!("{PEER_OTHER_IP}/16"), "dev", "eth0"],
        );
        ip(&pods.pod, &["link", "set", "eth0", "up"]);
        ip(&pods.peer, &["link", "set", "eth0", "up"]);
        pods
    }

    /// IPv4 and IPv6.
    pub fn dual_stack() -> Pods {
        let pods = Pods::new();
        // nodad: usable at once, not after duplicate address detection.
        ip(
            &pods.pod,
            &["addr", "add", &format!("{POD_IP6}/64"), "dev", "eth0", "nodad"],
        );
        ip(
            &pods.peer,
            &["addr", "add", &format!("{PEER_IP6}/64"), "dev", "eth0", "nodad"],
        );
        pods
    }

    /// Runs `strait-sidecar init ARGS` in the pod, whatever its outcome.
    pub fn init(&self, args: &[&str]) -> Output {
        let mut all = vec!["init"];
        all.extend(args);
        exec(&self.pod, BINARY, &all)
    }

    /// Runs `strait-sidecar init ARGS` in the pod; its failure fails the test.
    pub fn init_ok(&self, args: &[&str]) -> Output {
        let output = self.init(args);
        assert!(
            output.status.success(),
            "init {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// What a listener says to each client.
#[derive(Clone, Copy)]
pub enum Reply {
    /// `captured by PORT for ORIGINAL-DESTINATION` (a capture port, 15001/15006).
    Capture,
    /// `direct to LOCAL-ADDRESS` (a real service).
    Direct,
}

/// A listener on a thread, stopped on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listens on `addr` inside `ns` (an IPv6 listener takes IPv6 only, so it can sit
/// beside an IPv4 one on the same port) and answers each connection once.
pub fn serve(ns: &Netns, addr: &str, reply: Reply) -> Server {
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let listener = enter(ns, move || bind(addr));
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, reply),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server {
        stop,
        thread: Some(thread),
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("a socket");
    if addr.is_ipv6() {
        socket.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&addr.into()).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.listen(16).expect("listen");
    socket.set_nonblocking(true).expect("non-blocking");
    socket.into()
}

fn answer(mut stream: TcpStream, reply: Reply) {
    let _ = stream.set_nonblocking(false);
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|e| e.to_string());
    let text = match reply {
        Reply::Direct => format!("direct to {local}"),
        Reply::Capture => {
            let socket = SockRef::from(&stream);
            let original = if local.starts_with('[') {
                socket.original_dst_v6()
            } else {
                socket.original_dst_v4()
            };
            let original = match original.map(|a| a.as_socket()) {
                Ok(Some(addr)) => addr.to_string(),
                Ok(None) => "an unknown address".to_string(),
                Err(e) => format!("no original destination ({e})"),
            };
            let port = local.rsplit(':').next().unwrap_or_default();
            format!("captured by {port} for {original}")
        }
    };
    let _ = stream.write_all(text.as_bytes());
}

/// Connects from inside `ns` as root (the app) and returns what the server said, or
/// the error.
pub fn ask(ns: &Netns, addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    enter(ns, move || {
        let mut stream = match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => stream,
            Err(e) => return format!("error: connect {addr}: {e}"),
        };
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let mut text = String::new();
        match stream.read_to_string(&mut text) {
            Ok(_) => text,
            Err(e) => format!("error: read from {addr}: {e}"),
        }
    })
}

/// The client under another user: connects (from `source` when given) and prints
/// what the server said.
const PERL_CLIENT: &str = r#"
use IO::Socket::IP;
my ($host, $port, $source) = @ARGV;
my $s = IO::Socket::IP->new(PeerHost => $host, PeerPort => $port, Timeout => 5,
    ($source ? (LocalHost => $source) : ())) or die "error: connect $host:$port: $@\n";
local $/;
print <$s>;
"#;

/// Connects from inside `ns` as `uid`:`gid` (no supplementary groups), optionally
/// from `source`, and returns what the server said, or the error.
pub fn ask_as(ns: &Netns, uid: u32, gid: u32, host: &str, port: u16, source: Option<&str>) -> String {
    let (uid, gid, port) = (format!("--reuid={uid}"), format!("--regid={gid}"), port.to_string());
    let mut args = vec![
        "10",
        "setpriv",
        &uid,
        &gid,
        "--clear-groups",
        "perl",
        "-e",
        PERL_CLIENT,
        host,
        &port,
    ];
    args.extend(source);
    let output = exec(ns, "timeout", &args);
    if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        format!(
            "error ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    }
}
