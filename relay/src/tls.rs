//! TURN over TLS (RFC 8656 §3.3, `turns:`): the rustls server
//! configuration, with a certificate that [`Tls::reload`] replaces (on
//! SIGHUP) for new handshakes while connections already up keep theirs.
//!
//! TLS 1.2 and 1.3 with rustls's default cipher suites (ECDHE with AES-GCM
//! or ChaCha20-Poly1305 only), ALPN `stun.turn` (RFC 7443), and no
//! plaintext fallback: a TLS listener speaks TLS or closes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol ID of TURN over TLS (RFC 7443).
pub const ALPN: &[u8] = b"stun.turn";

/// The TLS setup of a node: its certificate files and the configuration
/// every TLS listener hands to new connections.
#[derive(Debug, Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<Resolver>,
    config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Loads the certificate chain and private key (PEM files).
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does
    /// not suit the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(Resolver(RwLock::new(certified_key(&provider, cert, key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), resolver, config: Arc::new(config) })
    }

    /// Reads the certificate files again; new handshakes use what they
    /// hold. On error the old certificate stays.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn reload(&self) -> Result<(), String> {
        let provider = self.config.crypto_provider().clone();
        let key = certified_key(&provider, &self.cert, &self.key)?;
        *self.resolver.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        Ok(())
    }

    /// The certificate and key files.
    #[must_use]
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// The configuration for new connections.
    #[must_use]
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

fn certified_key(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unusable private key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(Arc::new(certified))
}

/// Hands every handshake the current certificate.
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}
