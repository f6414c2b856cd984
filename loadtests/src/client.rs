//! An open-loop HTTP/1.1 load client. Each connection sends on a fixed schedule.
//! When a request could not go out on time because the previous response was late,
//! its latency counts from the scheduled time, so a slow proxy is charged for the
//! queueing it causes (no coordinated omission); otherwise it counts from the
//! actual send, so the timer's millisecond granularity adds no noise. Without a
//! rate it runs closed-loop, for saturation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to send, how fast, for how long.
#[derive(Clone)]
pub struct LoadSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Host header (and SNI with TLS).
    pub host: String,
    /// Path with query.
    pub path: String,
    /// Extra header lines, each `name: value`.
    pub headers: Vec<String>,
    /// TLS client settings; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests per second over all connections; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// Open a new connection for every request (TLS handshake cost).
    pub new_connection_per_request: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// 2xx responses.
    pub ok: u64,
    /// Errors and non-2xx responses.
    pub errors: u64,
    /// Latency in microseconds (see the module doc for where it starts).
    pub latency_us: Histogram<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Completed requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs `spec` to completion.
pub async fn run(spec: &LoadSpec) -> LoadResult {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..spec.connections {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move { connection(spec, i, started).await }));
    }
    let mut total = LoadResult {
        ok: 0,
        errors: 0,
        latency_us: new_histogram(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok(r) = t.await {
            total.ok += r.ok;
            total.errors += r.errors;
            let _ = total.latency_us.add(&r.latency_us);
        }
    }
    total.elapsed = started
        .elapsed()
        .min(spec.duration + Duration::from_millis(500))
        .max(spec.duration);
    total
}

fn new_histogram() -> Histogram<u64> {
    // 1 us to 60 s, 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

async fn connect(spec: &LoadSpec) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(spec.addr).await?;
    tcp.set_nodelay(true)?;
    match &spec.tls {
        None => Ok(Box::new(tcp)),
        Some(cfg) => {
            let name = ServerName::try_from(spec.host.clone()).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp).await?;
            Ok(Box::new(tls))
        }
    }
}

async fn connection(spec: LoadSpec, index: usize, started: Instant) -> LoadResult {
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        latency_us: new_histogram(),
        elapsed: Duration::ZERO,
    };
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", spec.path, spec.host);
    for h in &spec.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let interval = spec.rate.map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    // Spread the connections' schedules evenly over one interval.
    let mut next = started + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(index as f64 / spec.connections as f64));
    let end = started + spec.duration;
    let mut conn: Option<Box<dyn Io>> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut previous_done = started;
    loop {
        let scheduled = match interval {
            Some(iv) => {
                let at = next;
                next += iv;
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        if scheduled >= end {
            break;
        }
        // Backlogged: the previous exchange ended after this request was due.
        let origin = if previous_done > scheduled {
            scheduled
        } else {
            Instant::now()
        };
        if conn.is_none() || spec.new_connection_per_request {
            conn = match connect(&spec).await {
                Ok(c) => Some(c),
                Err(_) => {
                    result.errors += 1;
                    continue;
                }
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        let outcome = exchange(c.as_mut(), request.as_bytes(), &mut buf).await;
        previous_done = Instant::now();
        if matches!(outcome, Ok((_, true))) {
            // The server asked to close (a proxy's requests-per-connection limit).
            conn = None;
        }
        match outcome {
            Ok((status, _)) if (200..300).contains(&status) => {
                result.ok += 1;
                let us = u64::try_from(previous_done.duration_since(origin).as_micros()).unwrap_or(u64::MAX);
                let _ = result.latency_us.record(us.max(1));
            }
            Ok(_) => result.errors += 1,
            Err(_) => {
                result.errors += 1;
                conn = None;
            }
        }
    }
    result
}

/// Sends one request and reads one response; returns its status and whether the
/// server closes the connection after it (`connection: close`).
async fn exchange(conn: &mut dyn Io, request: &[u8], buf: &mut [u8]) -> std::io::Result<(u16, bool)> {
    conn.write_all(request).await?;
    let mut filled = 0;
    loop {
        let n = conn.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head)) => {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .ok_or_else(|| std::io::Error::other("response without content-length"))?;
                let close = resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && std::str::from_utf8(h.value).is_ok_and(|v| v.trim().eq_ignore_ascii_case("close"))
                });
                let mut have = filled - head;
                while have < length {
                    let want = (length - have).min(buf.len());
                    let n = conn.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    have += n;
                }
                return Ok((status, close));
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            Ok(httparse::Status::Partial) => return Err(std::io::Error::other("response head too large")),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_gateway::echo::{EchoConfig, EchoServer};

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_counts_responses() {
        let echo = EchoServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            EchoConfig {
                name: "e".into(),
                version: "v".into(),
            },
        )
        .await
        .expect("echo");
        let spec = LoadSpec {
            addr: echo.addr,
            host: "backend".into(),
            path: "/".into(),
            headers: vec!["x-test: 1".into()],
            tls: None,
            connections: 4,
            rate: Some(400.0),
            duration: Duration::from_millis(500),
            new_connection_per_request: false,
        };
        let r = run(&spec).await;
        assert_eq!(r.errors, 0);
        assert!((190..=201).contains(&r.ok), "400 rps for 0.5 s sent {} requests", r.ok);
        assert_eq!(r.latency_us.len(), r.ok);

        let failing = LoadSpec {
            headers: vec!["x-echo-status: 503".into()],
            rate: Some(100.0),
            ..spec
        };
        let r = run(&failing).await;
        assert_eq!((r.ok, r.errors > 40), (0, true), "non-2xx answers are errors");
        echo.shutdown().await;
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;

    /// Answers two requests per connection, the second with `connection: close`,
    /// then closes, as a proxy at its requests-per-connection limit does.
    async fn closing_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for i in 0..2 {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let close = if i == 1 { "connection: close\r\n" } else { "" };
                        let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{close}\r\nok");
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_replaced_without_errors() {
        let spec = LoadSpec {
            addr: closing_server().await,
            host: "backend".into(),
            path: "/".into(),
            headers: Vec::new(),
            tls: None,
            connections: 2,
            rate: Some(200.0),
            duration: Duration::from_millis(300),
            new_connection_per_request: false,
        };
        let r = run(&spec).await;
        assert_eq!(r.errors, 0, "a closed connection is not an error");
        assert!(r.ok >= 55, "{} requests answered", r.ok);
    }
}
