//! Demo echo backend: answers every request with a JSON description of what it received.
//!
//! Used by the demo and by end-to-end tests to observe what the gateway forwarded
//! (method, path, host, protocol, headers, body size) and which backend answered.
//!
//! Tests steer it from the query string (or the `x-echo-*` headers):
//! - `status=503`: answer with that status;
//! - `delay_ms=200`: wait before answering (at most 60 s);
//! - `key=k1`: count requests per key; the count is reported as `seen`, and the
//!   previous request with that key (method, path, host, content length) as `previous`;
//!   with `peek=1` the request reports them without being counted itself;
//! - `fail=2&key=k1`: the first 2 requests with that key get `fail_status` (503);
//! - `reset=1`: close the connection without answering;
//! - `stall=1`: never answer (the client has to give up).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Request header that selects the response status.
const STATUS_HEADER: &str = "x-echo-status";
/// Request header asking the backend to wait this many milliseconds (at most 60 s) before answering.
const DELAY_HEADER: &str = "x-echo-delay-ms";
/// Response header naming the backend that answered.
const NAME_HEADER: &str = "x-echo-name";

/// Settings of one echo backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoConfig {
    /// Server name reported in the body and in `x-echo-name`.
    pub name: String,
    /// Version reported in the body.
    pub version: String,
}

/// A running echo server; dropping it does not stop it, call `shutdown`.
#[derive(Debug)]
pub struct EchoServer {
    /// Address actually bound (with the real port when 0 was requested).
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Per-server state shared by all connections.
struct Shared {
    config: EchoConfig,
    // Validated once at start so a bad name fails loudly instead of on every request.
    name_header: HeaderValue,
    /// Requests seen per `key`, and the last of them.
    seen: std::sync::Mutex<std::collections::HashMap<String, (u64, serde_json::Value)>>,
}

/// The answer the request asked for.
#[derive(Debug, Default, PartialEq)]
struct Controls {
    status: Option<u16>,
    delay_ms: u64,
    key: Option<String>,
    fail: u64,
    fail_status: Option<u16>,
    reset: bool,
    stall: bool,
    peek: bool,
}

impl Controls {
    fn from_request(uri: &http::Uri, headers: &http::HeaderMap) -> Controls {
        let mut c = Controls::default();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        c.status = header(STATUS_HEADER).and_then(|v| v.parse().ok());
        c.delay_ms = header(DELAY_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
        for pair in uri.query().unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "status" => c.status = v.parse().ok(),
                "delay_ms" => c.delay_ms = v.parse().unwrap_or(0),
                "key" => c.key = Some(v.to_string()),
                "fail" => c.fail = v.parse().unwrap_or(0),
                "fail_status" => c.fail_status = v.parse().ok(),
                "reset" => c.reset = v != "0",
                "stall" => c.stall = v != "0",
                "peek" => c.peek = v != "0",
                _ => {}
            }
        }
        c.delay_ms = c.delay_ms.min(60_000);
        c
    }
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("reset requested")]
struct ResetRequested;

impl EchoServer {
    /// Binds `addr` (port 0 allowed) and serves in the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: EchoConfig) -> std::io::Result<EchoServer> {
        let name_header = HeaderValue::from_str(&config.name).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("echo server name {:?} is not a valid header value: {e}", config.name),
            )
        })?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            name_header,
            seen: Default::default(),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
        Ok(EchoServer { addr, shutdown, task })
    }

    /// Stops accepting and ends the accept loop.
    pub async fn shutdown(self) {
        // The loop may already be gone (e.g. it panicked); there is nothing left to stop then.
        let _ = self.shutdown.send(());
        if let Err(e) = self.task.await {
            log::warn!("echo server {} accept loop failed: {e}", self.addr);
        }
    }
}

/// Accepts connections until a shutdown message arrives, then drops the listener.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let builder = Arc::new(builder);
    // A dropped EchoServer closes the channel; that must not stop serving, so stop watching it.
    let mut watching = true;
    loop {
        tokio::select! {
            res = &mut shutdown, if watching => match res {
                Ok(()) => break,
                Err(_) => watching = false,
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve(stream, peer, Arc::clone(&builder), Arc::clone(&shared)));
                }
                Err(e) => {
                    // Typically fd exhaustion; back off instead of spinning on the error.
                    log::warn!("echo: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Serves one accepted connection until the client or the protocol ends it.
async fn serve(stream: TcpStream, peer: SocketAddr, builder: Arc<auto::Builder<TokioExecutor>>, shared: Arc<Shared>) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("echo: set_nodelay for {peer} failed: {e}");
    }
    let service = service_fn(move |req| handle(req, peer, Arc::clone(&shared)));
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        log::debug!("echo: connection from {peer} ended with error: {e}");
    }
}

/// Builds the echo response for one request.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, ResetRequested> {
    if is_websocket(&req) {
        return Ok(websocket(req, &shared));
    }
    let (parts, body) = req.into_parts();
    let controls = Controls::from_request(&parts.uri, &parts.headers);
    let summary = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        "host": parts.headers.get(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        "content_length": parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
    });
    let (seen, previous) = match controls.key.as_ref() {
        Some(k) => {
            let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
            let entry = seen.entry(k.clone()).or_insert((0, serde_json::Value::Null));
            if controls.peek {
                (Some(entry.0), entry.1.clone())
            } else {
                entry.0 += 1;
                let previous = std::mem::replace(&mut entry.1, summary);
                (Some(entry.0), previous)
            }
        }
        None => (None, serde_json::Value::Null),
    };
    if controls.reset {
        return Err(ResetRequested);
    }
    if controls.stall {
        std::future::pending::<()>().await;
    }
    let body_bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &shared,
                serde_json::json!({ "error": format!("reading request body: {e}") }),
            ))
        }
    };

    if controls.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(controls.delay_ms)).await;
    }

    let failing = seen.is_some_and(|n| n <= controls.fail);
    let status = if failing {
        Some(controls.fail_status.unwrap_or(503))
    } else {
        controls.status
    };
    let status = status
        // Only final statuses make sense here; 1xx would confuse the connection state.
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);

    let host = parts
        .headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();

    let path = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");

    let mut headers = BTreeMap::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), joined);
    }

    let body = serde_json::json!({
        "name": shared.config.name,
        "version": shared.config.version,
        "method": parts.method.as_str(),
        "path": path,
        "host": host,
        "protocol": protocol(parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
        "peer": peer.to_string(),
        "seen": seen,
        "previous": previous,
    });
    Ok(json_response(status, &shared, body))
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Accepts a WebSocket upgrade and echoes each text message as `<name>: <text>`
/// (binary messages unchanged) until the client closes.
fn websocket(mut req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};

    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            shared,
            serde_json::json!({ "error": "websocket upgrade without sec-websocket-key" }),
        );
    };
    let name = shared.config.name.clone();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                log::debug!("echo: websocket upgrade failed: {e}");
                return;
            }
        };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(text) => Message::text(format!("{name}: {}", text.as_str())),
                Message::Binary(bytes) => Message::Binary(bytes),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    headers.insert(NAME_HEADER, shared.name_header.clone());
    response
}

/// Renders `body` as an `application/json` response carrying the server name header.
fn json_response(status: StatusCode, shared: &Shared, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(NAME_HEADER, shared.name_header.clone());
    response
}

/// Names the HTTP version the way HTTP/1 status lines do, so tests can compare strings.
fn protocol(version: Version) -> &'static str {
    if version == Version::HTTP_09 {
        "HTTP/0.9"
    } else if version == Version::HTTP_10 {
        "HTTP/1.0"
    } else if version == Version::HTTP_11 {
        "HTTP/1.1"
    } else if version == Version::HTTP_2 {
        "HTTP/2.0"
    } else if version == Version::HTTP_3 {
        "HTTP/3.0"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn config() -> EchoConfig {
        EchoConfig {
            name: "stable".to_owned(),
            version: "v1".to_owned(),
        }
    }

    #[tokio::test]
    async fn echoes_request_with_requested_status() -> TestResult {
        let server = EchoServer::start(([127, 0, 0, 1], 0).into(), config()).await?;
        let mut stream = TcpStream::connect(server.addr).await?;
        let body = "hello";
        let request = format!(
            "POST /a/b?x=1 HTTP/1.1\r\nHost: demo.example.com\r\nX-Custom: one\r\nX-Custom: two\r\n\
             x-echo-status: 503\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let raw = String::from_utf8(raw)?;

        let (head, json) = raw.split_once("\r\n\r\n").ok_or("no header terminator")?;
        let mut lines = head.lines();
        let status_line = lines.next().ok_or("empty response")?;
        assert!(status_line.starts_with("HTTP/1.1 503"), "{status_line}");
        let head_lower = head.to_ascii_lowercase();
        assert!(head_lower.contains("\r\nx-echo-name: stable"), "{head}");
        assert!(head_lower.contains("\r\ncontent-type: application/json"), "{head}");

        let json: serde_json::Value = serde_json::from_str(json)?;
        assert_eq!(json["name"], "stable");
        assert_eq!(json["version"], "v1");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["path"], "/a/b?x=1");
        assert_eq!(json["host"], "demo.example.com");
        assert_eq!(json["protocol"], "HTTP/1.1");
        assert_eq!(json["headers"]["x-custom"], "one, two");
        assert_eq!(json["headers"]["x-echo-status"], "503");
        assert_eq!(json["body_bytes"], 5);

        server.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() -> TestResult {
        let server = EchoServer::start(([127, 0, 0, 1], 0).into(), config()).await?;
        let addr = server.addr;
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());
        Ok(())
    }

    #[test]
    fn rejects_name_that_is_not_a_header_value() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bad = EchoConfig {
            name: "bad\nname".to_owned(),
            version: "v1".to_owned(),
        };
        let result = runtime.block_on(EchoServer::start(([127, 0, 0, 1], 0).into(), bad));
        assert!(result.is_err());
    }
}
