//! A blocking HTTP/1.1 client for a proxy's admin port: enough for `straitctl`
//! to GET `/config_dump` and `/server_info` without an async runtime.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The admin port Istio's proxies (and Strait's) listen on.
pub const DEFAULT_ADMIN_PORT: u16 = 15000;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target is not `host` or `host:port`.
    #[error("bad target {0:?}: expected HOST or HOST:PORT")]
    BadTarget(String),
    /// Connecting, sending or reading failed.
    #[error("{target}: {source}")]
    Io {
        /// The admin address.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not an HTTP response.
    #[error("{0}: not an HTTP response")]
    Malformed(String),
    /// The proxy answered with an error status.
    #[error("{target}{path}: HTTP {status}: {body}")]
    Status {
        /// The admin address.
        target: String,
        /// The path asked for.
        path: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body is not the JSON expected.
    #[error("{target}{path}: not JSON: {source}")]
    Json {
        /// The admin address.
        target: String,
        /// The path asked for.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// An admin address: `host:port`, with Istio's admin port when only a host is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address;
    /// an `http://` prefix and a trailing `/` are allowed.
    pub fn parse(text: &str) -> Result<Target, Error> {
        let bad = || Error::BadTarget(text.to_string());
        let s = text.trim();
        let s = s.strip_prefix("http://").unwrap_or(s);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() || s.contains('/') {
            return Err(bad());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => DEFAULT_ADMIN_PORT,
                p => p.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            };
            return Ok(Target {
                host: host.to_string(),
                port,
            });
        }
        if s.matches(':').count() > 1 {
            // A bare IPv6 address has no room for a port.
            return Ok(Target {
                host: s.to_string(),
                port: DEFAULT_ADMIN_PORT,
            });
        }
        match s.split_once(':') {
            Some((host, port)) if !host.is_empty() => Ok(Target {
                host: host.to_string(),
                port: port.parse().map_err(|_| bad())?,
            }),
            Some(_) => Err(bad()),
            None => Ok(Target {
                host: s.to_string(),
                port: DEFAULT_ADMIN_PORT,
            }),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` and returns the body of a 2xx answer.
pub fn get(target: &Target, path: &str) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        target: target.to_string(),
        source,
    };
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(io)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| io(last))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let (status, body) = parse_response(&raw).ok_or_else(|| Error::Malformed(target.to_string()))?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        return Err(Error::Status {
            target: target.to_string(),
            path: path.to_string(),
            status,
            body: text.trim().chars().take(300).collect(),
        });
    }
    Ok(body)
}

/// GETs `path` and parses the body as JSON.
pub fn get_json(target: &Target, path: &str) -> Result<serde_json::Value, Error> {
    let body = get(target, path)?;
    serde_json::from_slice(&body).map_err(|source| Error::Json {
        target: target.to_string(),
        path: path.to_string(),
        source,
    })
}

/// Status and body of a whole HTTP/1.1 response (the connection was closed after it).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        return dechunk(body).map(|b| (status, b));
    }
    let body = match length {
        Some(n) => body.get(..n)?,
        None => body,
    };
    Some((status, body.to_vec()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("gw").ok(), Some(t("gw", 15000)));
        assert_eq!(Target::parse("127.0.0.1:9901").ok(), Some(t("127.0.0.1", 9901)));
        assert_eq!(Target::parse("http://gw:1/").ok(), Some(t("gw", 1)));
        assert_eq!(Target::parse("[::1]:15001").ok(), Some(t("::1", 15001)));
        assert_eq!(Target::parse("[::1]").ok(), Some(t("::1", 15000)));
        assert_eq!(Target::parse("::1").ok(), Some(t("::1", 15000)));
        assert_eq!(t("::1", 15000).to_string(), "[::1]:15000");
        for bad in ["", "gw:x", "gw:99999", ":80", "gw/config_dump", "[::1]x"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, b"{}".to_vec())));
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((400, b"abcde".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            None
        );
    }
}
