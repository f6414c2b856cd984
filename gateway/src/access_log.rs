//! Access logs as Istio configures Envoy's: on when the mesh config's `accessLogFile`
//! is set (usually `/dev/stdout`), in Istio's default text format or, with
//! `accessLogEncoding: JSON`, as one JSON object per line with Istio's keys. Lines are
//! handed to a writer thread through a bounded queue: a slow disk or terminal drops
//! lines (counted in the log) rather than slowing requests.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use serde::Serialize;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Istio's default text format.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    encoding: Encoding,
    tx: SyncSender<Message>,
    dropped: AtomicU64,
}

/// What is logged of one request (Istio's fields, by their JSON names).
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// Start, RFC 3339 in UTC with milliseconds.
    pub start_time: String,
    /// Method.
    pub method: &'a str,
    /// Path as the client sent it.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'a str,
    /// Status sent (0: none).
    pub response_code: u16,
    /// Envoy's response flags, `-` when none.
    pub response_flags: String,
    /// Why this answer: `via_upstream`, or the gateway's reason.
    pub response_code_details: &'a str,
    /// Request body bytes.
    pub bytes_received: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// Milliseconds from start to end.
    pub duration: u64,
    /// `x-forwarded-for` as received.
    pub x_forwarded_for: Option<&'a str>,
    /// `user-agent`.
    pub user_agent: Option<&'a str>,
    /// `x-request-id` (the gateway's when the client sent none).
    pub request_id: Option<&'a str>,
    /// Host / :authority.
    pub authority: Option<&'a str>,
    /// The endpoint of the last try.
    pub upstream_host: Option<SocketAddr>,
    /// The cluster, in Istio's naming.
    pub upstream_cluster: Option<&'a str>,
    /// The gateway's address the client reached.
    pub downstream_local_address: Option<SocketAddr>,
    /// The client's address.
    pub downstream_remote_address: Option<SocketAddr>,
    /// SNI of the connection.
    pub requested_server_name: Option<&'a str>,
    /// The matched rule's name.
    pub route_name: Option<&'a str>,
    /// Why the upstream's TLS handshake failed (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub upstream_transport_failure_reason: Option<&'a str>,
}

impl AccessLog {
    /// Opens `path` (`/dev/stdout` writes to the process's standard output).
    pub fn open(path: &str, encoding: Encoding) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = if path == "/dev/stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        let (tx, rx) = sync_channel::<Message>(QUEUE);
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut buf = Vec::new();
            while let Ok(first) = rx.recv() {
                let mut flushed = Vec::new();
                // Whatever else is queued goes out in the same write.
                for message in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                    match message {
                        Message::Line(line) => buf.extend_from_slice(line.as_bytes()),
                        Message::Flush(done) => flushed.push(done),
                    }
                }
                if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                    return;
                }
                buf.clear();
                for done in flushed {
                    let _ = done.send(());
                }
            }
        })?;
        Ok(AccessLog {
            encoding,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues one line.
    pub fn log(&self, e: &Entry<'_>) {
        let line = match self.encoding {
            Encoding::Text => text(e),
            Encoding::Json => match serde_json::to_string(e) {
                Ok(mut j) => {
                    j.push('\n');
                    j
                }
                Err(_) => return,
            },
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Message::Line(line)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                log::warn!("access log: the writer is behind, {} lines dropped", n + 1);
            }
        }
    }
}

/// What the writer thread gets.
enum Message {
    /// A line to write.
    Line(String),
    /// Answer once everything before it is written.
    Flush(SyncSender<()>),
}

impl AccessLog {
    /// Waits (at most `within`) until every line queued so far is written.
    pub fn flush(&self, within: std::time::Duration) {
        let (done, written) = sync_channel(1);
        if self.tx.send(Message::Flush(done)).is_ok() && written.recv_timeout(within).is_err() {
            log::warn!("access log: not flushed within {within:?}");
        }
    }
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Istio's default format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%
/// %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
/// %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
/// "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%"
/// "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
/// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
/// %REQUESTED_SERVER_NAME% %ROUTE_NAME%`
fn text(e: &Entry<'_>) -> String {
    format!(
        "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}\n",
        e.start_time,
        e.method,
        e.path,
        e.protocol,
        e.response_code,
        e.response_flags,
        e.response_code_details,
        or_dash(e.upstream_transport_failure_reason),
        e.bytes_received,
        e.bytes_sent,
        e.duration,
        or_dash(e.x_forwarded_for),
        or_dash(e.user_agent),
        or_dash(e.request_id),
        or_dash(e.authority),
        or_dash(e.upstream_host),
        or_dash(e.upstream_cluster),
        or_dash(e.downstream_local_address),
        or_dash(e.downstream_remote_address),
        or_dash(e.requested_server_name),
        or_dash(e.route_name),
    )
}
