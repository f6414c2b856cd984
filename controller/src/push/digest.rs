//! Content digests that decide what a proxy is sent: one of its configuration
//! (the snapshot without its version, its source names and its endpoints, plus
//! what the snapshot does not show: certificate and key PEM, inline JWKS and the
//! mesh config) and one of its endpoints. Equal digests mean the proxy would build
//! the same thing again, so nothing is sent.

use std::fmt;
use std::io::Write;

use serde::Serialize;
use strait_config::snapshot::Endpoints;
use strait_config::Snapshot;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Feeds what is written into a SHA-256 context: serialized values are hashed as
/// they are produced, never held whole in memory.
struct Hasher(ring::digest::Context);

impl Hasher {
    fn new() -> Hasher {
        Hasher(ring::digest::Context::new(&ring::digest::SHA256))
    }

    fn value(&mut self, value: &impl Serialize) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *self, value)?;
        // A separator, so that two values cannot run into each other.
        self.0.update(b"\0");
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        Digest(out)
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of a proxy's configuration: `snapshot` as `/config_dump` shows it,
/// without what differs between equal configurations (the version, the source
/// names), plus `opaque` (the texts of the documents whose content the snapshot
/// does not show, such as Secrets) and the mesh config's text.
pub fn config<'a>(
    snapshot: &Snapshot,
    opaque: impl Iterator<Item = &'a str>,
    mesh: Option<&str>,
) -> Result<Digest, serde_json::Error> {
    // Every field named: a new one fails to compile here until it is hashed or skipped.
    let Snapshot {
        version: _,
        sources: _,
        listeners,
        clusters,
        certificates,
        policies,
        acme,
        acme_answers,
        tracing_cluster,
    } = snapshot;
    let mut h = Hasher::new();
    h.value(listeners)?;
    h.value(clusters)?;
    h.value(certificates)?;
    h.value(policies)?;
    h.value(acme)?;
    // Its ALPN certificates are not serialized: the Secret's text (opaque) covers them.
    h.value(acme_answers)?;
    h.value(tracing_cluster)?;
    for text in opaque {
        h.bytes(text.as_bytes());
    }
    h.bytes(mesh.unwrap_or_default().as_bytes());
    h.bytes(&[u8::from(mesh.is_some())]);
    Ok(h.finish())
}

/// The digest of an endpoint table.
pub fn endpoints(endpoints: &Endpoints) -> Result<Digest, serde_json::Error> {
    let mut h = Hasher::new();
    h.value(endpoints)?;
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::bundle::{load_text, Loaded};
    use strait_config::testing::ingress_scope;

    fn build(text: &str, version: u64) -> strait_config::Built {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "a.yaml", text);
        strait_config::build(&loaded, &ingress_scope("default"), version).expect("builds")
    }

    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n---\n";

    fn vs(prefix: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: backend}}}}]\n")
    }

    #[test]
    fn equal_configurations_have_equal_digests_whatever_their_version() {
        let a = build(&format!("{GW}{}", vs("/a")), 1);
        let b = build(&format!("{GW}{}", vs("/a")), 7);
        let c = build(&format!("{GW}{}", vs("/b")), 7);
        let none = std::iter::empty();
        let d = |built: &strait_config::Built| config(&built.snapshot, std::iter::empty(), None).expect("hashes");
        assert_eq!(d(&a), d(&b));
        assert_ne!(d(&a), d(&c), "a route change changes the digest");
        assert_ne!(
            d(&a),
            config(&a.snapshot, ["secret text"].into_iter(), None).expect("hashes"),
            "so does a Secret's text"
        );
        assert_ne!(
            config(&a.snapshot, none, Some("")).expect("hashes"),
            d(&a),
            "an empty mesh config is not an absent one"
        );
        assert_eq!(endpoints(&a.endpoints).ok(), endpoints(&c.endpoints).ok());
        let moved = build(&format!("{}{}", GW.replace("10.0.0.1", "10.0.0.2"), vs("/a")), 1);
        assert_eq!(d(&a), d(&moved), "endpoints are not part of the configuration's digest");
        assert_ne!(endpoints(&a.endpoints).ok(), endpoints(&moved.endpoints).ok());
    }
}
