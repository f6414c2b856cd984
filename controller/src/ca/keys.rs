//! CA private keys from PEM, in the three forms Secrets hold them: PKCS#8
//! (`PRIVATE KEY`, what Strait writes), PKCS#1 (`RSA PRIVATE KEY`, what istiod
//! writes into `istio-ca-secret` and Istio's sample `cacerts` hold) and SEC1
//! (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes). ring signs with
//! PKCS#8 only, so the other two are wrapped as PKCS#8 first.

use rustls::pki_types::PrivateKeyDer;

use super::der::{elements, read, sequence, tlv};

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No private key block in the PEM.
    #[error("no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)")]
    Missing,
    /// The PEM or the key inside it is malformed.
    #[error("malformed private key: {0}")]
    Malformed(String),
    /// A key of a kind or curve the CA cannot sign with.
    #[error("unsupported private key: {0} (RSA, ECDSA P-256 or P-384, and Ed25519 are)")]
    Unsupported(String),
}

/// `rsaEncryption` with its NULL parameters.
const RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// `id-ecPublicKey`.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// The named curves ring signs with: OID, and the private key's length.
const CURVES: &[(&[u8], usize)] = &[
    (&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], 32),
    (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 48),
];

/// The key pair of the first private key in `pem`.
pub fn key_pair(pem: &str) -> Result<rcgen::KeyPair, Error> {
    let key = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| Error::Malformed(e.to_string()))?
        .ok_or(Error::Missing)?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(der) => pkcs8(RSA, der.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(der) => sec1_as_pkcs8(der.secret_sec1_der())?,
        _ => return Err(Error::Unsupported("an unknown key encoding".into())),
    };
    rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(|e| Error::Unsupported(e.to_string()))
}

/// A PKCS#8 PrivateKeyInfo (version 0) of `key` under `algorithm`.
fn pkcs8(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    sequence(&[&[0x02, 0x01, 0x00], algorithm, &tlv(0x04, key)])
}

/// A SEC1 ECPrivateKey as PKCS#8: the curve moves from the key's own `[0]`
/// parameters (which ring refuses inside PKCS#8) to the algorithm identifier.
fn sec1_as_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, Error> {
    let malformed = || Error::Malformed("not a SEC1 ECPrivateKey".into());
    let (tag, body, rest) = read(sec1).ok_or_else(malformed)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(malformed());
    }
    let fields = elements(body).ok_or_else(malformed)?;
    let private_len = match fields.get(1) {
        Some((0x04, private)) => private.len(),
        _ => return Err(malformed()),
    };
    // The curve named in `[0]`, else the one whose keys have this length.
    let named = fields.iter().find(|(tag, _)| *tag == 0xa0).map(|(_, oid)| *oid);
    let curve = match named {
        Some(oid) => CURVES
            .iter()
            .find(|(known, _)| *known == oid)
            .ok_or_else(|| Error::Unsupported("an EC key on a curve other than P-256 or P-384".into()))?,
        None => CURVES
            .iter()
            .find(|(_, len)| *len == private_len)
            .ok_or_else(|| Error::Unsupported(format!("an EC key of {private_len} bytes")))?,
    };
    let kept: Vec<Vec<u8>> = fields
        .iter()
        .filter(|(tag, _)| *tag != 0xa0)
        .map(|(tag, content)| tlv(*tag, content))
        .collect();
    let kept: Vec<&[u8]> = kept.iter().map(Vec::as_slice).collect();
    let algorithm = sequence(&[EC_PUBLIC_KEY, curve.0]);
    Ok(pkcs8(&algorithm, &sequence(&kept)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key`'s PKCS#8 DER re-encoded as `label` (the DER inside a PKCS#8 for PKCS#1
    /// and SEC1: the last OCTET STRING of the PrivateKeyInfo).
    fn as_pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    fn inner_key(pkcs8: &[u8]) -> Vec<u8> {
        let (_, body, _) = read(pkcs8).expect("PrivateKeyInfo");
        let fields = elements(body).expect("fields");
        fields[2].1.to_vec()
    }

    #[test]
    fn pkcs8_sec1_with_and_without_the_curve_and_pkcs1_read() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = rcgen::KeyPair::generate_for(alg).expect("key");
            let public = key.public_key_der();
            assert_eq!(key_pair(&key.serialize_pem()).expect("PKCS#8").public_key_der(), public);
            // SEC1 as ring writes it inside PKCS#8 has no [0]; openssl's has one.
            let sec1 = inner_key(&key.serialize_der());
            let read_back = key_pair(&as_pem("EC PRIVATE KEY", &sec1)).expect("SEC1 without curve");
            assert_eq!(read_back.public_key_der(), public);
            let (_, body, _) = read(&sec1).expect("sec1");
            let fields = elements(body).expect("fields");
            let curve = CURVES[usize::from(alg == &rcgen::PKCS_ECDSA_P384_SHA384)].0;
            let mut with_curve: Vec<Vec<u8>> = fields.iter().map(|(t, c)| tlv(*t, c)).collect();
            with_curve.insert(2, tlv(0xa0, curve));
            let with_curve: Vec<&[u8]> = with_curve.iter().map(Vec::as_slice).collect();
            let read_back = key_pair(&as_pem("EC PRIVATE KEY", &sequence(&with_curve))).expect("SEC1 with curve");
            assert_eq!(read_back.public_key_der(), public);
        }
        let rsa = include_str!("../../tests/fixtures/ca/rsa-pkcs1-key.pem");
        assert!(rsa.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let key = key_pair(rsa).expect("PKCS#1");
        assert_eq!(key.algorithm(), &rcgen::PKCS_RSA_SHA256);
        assert!(matches!(key_pair("no key here"), Err(Error::Missing)));
        assert!(key_pair(&as_pem("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01])).is_err());
    }
}
