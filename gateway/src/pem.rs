//! PEM material of the snapshot (certificates, keys, roots, CRLs), read from the
//! bundle or from files, and the errors that reject a configuration over it.

use std::path::Path;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use strait_config::snapshot::PemSource;
use thiserror::Error;

/// Why PEM material cannot be used; shown in the diagnostic that rejects the config.
#[derive(Debug, Error)]
pub enum PemError {
    /// A file named by the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not PEM of the expected kind.
    #[error("{name}: bad {what} PEM: {source}")]
    Malformed {
        /// The material's name (`secret ns/name key` or a path).
        name: String,
        /// What it should hold.
        what: &'static str,
        /// The parser's complaint.
        source: std::io::Error,
    },
    /// The PEM holds no block of the expected kind.
    #[error("{name}: no {what} in PEM")]
    Missing {
        /// The material's name.
        name: String,
        /// What it should hold.
        what: &'static str,
    },
    /// A certificate whose DER does not parse.
    #[error("{name}: unreadable certificate: {reason}")]
    Unreadable {
        /// The material's name.
        name: String,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls refuses the material (a key type it cannot sign with, an unusable root).
    #[error("{name}: unusable {what}: {source}")]
    Unusable {
        /// The material's name.
        name: String,
        /// What it is.
        what: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The certificate was not issued for the key.
    #[error("{name}: certificate and key do not match")]
    Mismatch {
        /// The certificate's name.
        name: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// Roots and CRLs that do not make a verifier.
    #[error("client certificate roots: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A self-signed stand-in certificate could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// PEM bytes and the name they are reported under.
#[derive(Debug)]
pub struct Pem {
    /// `secret ns/name key`, or the file path.
    pub name: String,
    /// The text.
    pub bytes: Vec<u8>,
}

impl Pem {
    /// The PEM of `source`, from the bundle or read from its file.
    pub fn read(source: &PemSource) -> Result<Pem, PemError> {
        match source {
            PemSource::Inline { name, pem } => Ok(Pem {
                name: name.clone(),
                bytes: pem.clone(),
            }),
            PemSource::File { path } => Pem::file(path),
        }
    }

    /// The PEM in the file at `path`.
    pub fn file(path: impl AsRef<Path>) -> Result<Pem, PemError> {
        let path = path.as_ref();
        std::fs::read(path)
            .map(|bytes| Pem {
                name: path.display().to_string(),
                bytes,
            })
            .map_err(|source| PemError::Read {
                path: path.display().to_string(),
                source,
            })
    }

    /// Every certificate in it (at least one).
    pub fn certificates(&self, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut self.bytes.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| self.malformed(what, source))?;
        if certs.is_empty() {
            return Err(self.missing(what));
        }
        Ok(certs)
    }

    /// Every certificate in it (at least one), each checked to parse: Pingora's
    /// wrapper of upstream certificates panics on bad DER.
    pub fn parsed_certificates(&self, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let certs = self.certificates(what)?;
        for cert in &certs {
            x509_parser::parse_x509_certificate(cert).map_err(|e| PemError::Unreadable {
                name: self.name.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(certs)
    }

    /// The first private key in it.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PemError> {
        rustls_pemfile::private_key(&mut self.bytes.as_slice())
            .map_err(|source| self.malformed("private key", source))?
            .ok_or_else(|| self.missing("private key"))
    }

    /// Every CRL in it (at least one).
    pub fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
        let list: Vec<_> = rustls_pemfile::crls(&mut self.bytes.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| self.malformed("CRL", source))?;
        if list.is_empty() {
            return Err(self.missing("CRL"));
        }
        Ok(list)
    }

    /// An error about this PEM that rustls raised.
    pub fn unusable(&self, what: &'static str, source: rustls::Error) -> PemError {
        PemError::Unusable {
            name: self.name.clone(),
            what,
            source,
        }
    }

    fn malformed(&self, what: &'static str, source: std::io::Error) -> PemError {
        PemError::Malformed {
            name: self.name.clone(),
            what,
            source,
        }
    }

    fn missing(&self, what: &'static str) -> PemError {
        PemError::Missing {
            name: self.name.clone(),
            what,
        }
    }
}

/// The DNS names among a certificate's subjectAltNames, lowercase.
pub use strait_acme::dns_names;
