//! The parts of a TLS ClientHello the gateway looks at before any handshake: the SNI
//! name (TLS passthrough routes on it) and the offered ALPN protocols (ACME's
//! TLS-ALPN-01 validation offers only `acme-tls/1`). Read with a peek, so the
//! handshake that follows sees the bytes untouched.

use pingora::protocols::Stream;

/// Largest ClientHello record read (a TLS record is at most 16 KiB + 5).
const MAX_RECORD: usize = 16 * 1024 + 5;

/// What a ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server_name, lowercase.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in order.
    pub alpn: Vec<Vec<u8>>,
}

/// Reads (without consuming) the ClientHello; None when the peer sent nothing.
pub async fn peek(stream: &mut Stream) -> std::io::Result<Option<ClientHello>> {
    let mut header = [0u8; 5];
    if !stream.try_peek(&mut header).await? {
        return Ok(None);
    }
    if header[0] != 0x16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a TLS handshake",
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut record = vec![0u8; (5 + len).min(MAX_RECORD)];
    stream.try_peek(&mut record).await?;
    Ok(Some(parse(record.get(5..).unwrap_or_default())))
}

/// The SNI and ALPN of a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3,
/// RFC 7301 3.1); whatever cannot be read is left empty.
pub fn parse(hello: &[u8]) -> ClientHello {
    let mut out = ClientHello::default();
    let Some(mut ext) = extensions(hello) else {
        return out;
    };
    while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
        let Some(body) = ext.take(usize::from(len)) else { break };
        match kind {
            0 => out.sni = server_name(body),
            16 => out.alpn = protocols(body).unwrap_or_default(),
            _ => {}
        }
    }
    out
}

fn extensions(hello: &[u8]) -> Option<Reader<'_>> {
    let mut r = Reader(hello);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    r.take(3)?; // length
    r.take(2 + 32)?; // version, random
    let session = r.u8()?;
    r.take(usize::from(session))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let extensions = r.u16()?;
    Some(Reader(r.take(usize::from(extensions))?))
}

fn server_name(body: &[u8]) -> Option<String> {
    let mut names = Reader(body);
    let list = names.u16()?;
    let mut list = Reader(names.take(usize::from(list))?);
    while let Some(name_type) = list.u8() {
        let n = list.u16()?;
        let name = list.take(usize::from(n))?;
        if name_type == 0 {
            return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
        }
    }
    None
}

fn protocols(body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader(body);
    let list = r.u16()?;
    let mut list = Reader(r.take(usize::from(list))?);
    let mut out = Vec::new();
    while let Some(n) = list.u8() {
        out.push(list.take(usize::from(n))?.to_vec());
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn reads_sni_and_alpn_from_a_real_client_hello() {
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("Shop.Example.com").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut wire = Vec::new();
        conn.write_tls(&mut wire).expect("hello");
        assert_eq!(wire[0], 0x16);
        let hello = parse(&wire[5..]);
        assert_eq!(hello.sni.as_deref(), Some("shop.example.com"));
        assert_eq!(hello.alpn, [b"acme-tls/1".to_vec()]);
        assert_eq!(parse(&wire[5..40]), ClientHello::default(), "a truncated hello");
        assert_eq!(parse(b"garbage"), ClientHello::default());
    }
}
