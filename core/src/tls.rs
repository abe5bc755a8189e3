//! TLS towards a backend (`https://`): a private CA trusted beside the system's roots and a
//! client certificate for a backend that requires one. A config section every binary's
//! HTTP clients share; PEM files, read and checked at start.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::{Errors, Validate};

/// `tls: { ca_file, cert_file, key_file }` of a client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA certificates to trust beside the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to a backend that requires client certificates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Validate for ClientTls {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if let Err(e) = ClientFiles::load(self) {
            errors.add(path, e);
        }
    }
}

/// The PEM certificates in `path`, at least one; errors name the file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The PEM private key in `path` (PKCS#8, PKCS#1 or SEC1); errors name the file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// The files of a [`ClientTls`], read and checked.
pub struct ClientFiles {
    /// The CA file's PEM text.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain's and its key's PEM text.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientFiles {
    /// Reads and parses the files; errors name the file at fault.
    pub fn load(tls: &ClientTls) -> Result<ClientFiles, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let ca = match &tls.ca_file {
            Some(path) => {
                certificates(path)?;
                Some(read(path)?)
            }
            None => None,
        };
        let identity = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                certificates(cert)?;
                private_key(key)?;
                Some((read(cert)?, read(key)?))
            }
            (None, None) => None,
            _ => {
                return Err(
                    "cert_file and key_file go together (a client certificate and its key)".into(),
                );
            }
        };
        Ok(ClientFiles { ca, identity })
    }

    /// `builder` trusting the CA and presenting the client certificate.
    pub fn reqwest(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(|e| e.to_string())?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            builder =
                builder.identity(reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?);
        }
        Ok(builder)
    }
}

/// A reqwest builder with `tls` applied, if any.
pub fn reqwest_builder(
    builder: reqwest::ClientBuilder,
    tls: Option<&ClientTls>,
) -> Result<reqwest::ClientBuilder, String> {
    match tls {
        Some(tls) => ClientFiles::load(tls)?.reqwest(builder),
        None => Ok(builder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_is_refused_and_missing_files_are_named() {
        let half = ClientTls {
            cert_file: Some("/nonexistent/client.pem".into()),
            ..Default::default()
        };
        let err = ClientFiles::load(&half).err().expect("refused");
        assert!(err.contains("go together"), "{err}");
        let missing = ClientTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = ClientFiles::load(&missing).err().expect("refused");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(ClientFiles::load(&ClientTls::default()).is_ok());
    }
}
