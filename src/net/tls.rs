//! TLS for SIP (RFC 3261 §26.2, RFC 5630): the rustls configurations the SIP driver uses.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3. Outbound connections check the peer's
//! certificate chain against the configured CAs (a PEM file, or the system bundle when none is
//! given: callplane ships no CA list of its own) and its name against the server name (SNI):
//! the target's host name, the trunk's `tls_server_name`, or the IP address when the target is
//! an IP literal. Inbound connections (the TLS listener) present the configured certificate
//! chain and key; clients are not asked for certificates.
//!
//! This module takes PEM bytes; reading the files is the caller's (`main`, which may read the
//! files its flags name).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The system CA bundle (Debian's `ca-certificates`), used when no CA file is configured.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The default bound on a TLS handshake (connect included for outbound connections).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file held no certificate, or one rustls refused.
    #[error("CA file {what}: {detail}")]
    Ca {
        /// Which file.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The certificate chain file held no certificate or did not parse.
    #[error("certificate file: {0}")]
    Certificate(String),
    /// The key file held no private key or did not parse.
    #[error("private key file: {0}")]
    Key(String),
    /// rustls refused the combination (key does not match the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS side of the SIP driver: how to connect out, and (with a listener) how to accept.
#[derive(Clone)]
pub struct TlsContext {
    /// Outbound connections.
    pub client: Arc<ClientConfig>,
    /// Inbound connections (`None`: no certificate, so no listener).
    pub server: Option<Arc<ServerConfig>>,
    /// The longest a connect plus handshake may take; past it the connection fails and the
    /// messages queued on it are transport errors of their transactions.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("server", &self.server.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the CA certificates in `ca_pem` (`what` names the file in
/// errors). Certificates rustls cannot use are skipped; none usable is an error.
pub fn client_config(ca_pem: &[u8], what: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut bad = 0usize;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        match cert {
            Ok(c) => {
                if roots.add(c).is_err() {
                    bad += 1;
                }
            }
            Err(e) => {
                return Err(TlsError::Ca {
                    what: what.to_owned(),
                    detail: e.to_string(),
                });
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Ca {
            what: what.to_owned(),
            detail: format!("no usable CA certificate ({bad} refused)"),
        });
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration presenting the chain in `cert_pem` (leaf first) with the key in
/// `key_pem` (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The server name to verify (and send as SNI) for `name`: a DNS name, or an IP address
/// written as text (then no SNI is sent and the certificate must list that IP).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let trimmed = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(trimmed.to_owned())
        .map_err(|e| format!("bad TLS server name {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_garbage_pem_is_refused_with_the_file_named() {
        let e = client_config(b"", "ca.pem").expect_err("no CA");
        assert!(e.to_string().contains("ca.pem"), "{e}");
        assert!(server_config(b"nothing", b"nothing").is_err());
    }

    #[test]
    fn server_names_take_dns_names_and_ip_literals() {
        assert!(matches!(
            server_name("sip.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name!").is_err());
    }
}
