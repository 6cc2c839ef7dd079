//! A test PKI: a CA and a certificate for `localhost`, in files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::TempDir;

/// A test CA and a certificate for `localhost` it signed, written to files.
#[derive(Debug)]
pub struct Pki {
    pub roots: rustls::RootCertStore,
    /// base64(SHA-256) of the leaf's SubjectPublicKeyInfo: what a browser
    /// is told to trust (`--ignore-certificate-errors-spki-list`).
    pub leaf_spki_sha256: String,
    dir: TempDir,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let mut pki = Self { roots: rustls::RootCertStore::empty(), leaf_spki_sha256: String::new(), dir };
        pki.issue();
        pki
    }

    /// Issues a new CA and leaf, replacing the files; only the new CA is trusted.
    pub fn issue(&mut self) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(self.cert(), leaf.pem()).unwrap();
        std::fs::write(self.ca(), ca.pem()).unwrap();
        std::fs::write(self.key(), key.serialize_pem()).unwrap();
        let spki = <sha2::Sha256 as sha2::Digest>::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
        self.leaf_spki_sha256 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki);
        self.roots = rustls::RootCertStore::empty();
        self.roots.add(ca.der().clone()).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The `[tls]` table serving this certificate on `listen`.
    pub fn tls_table(&self, listen: &str) -> String {
        format!(
            "[tls]\nlisten = [\"{listen}\"]\ncert = \"{}\"\nkey = \"{}\"",
            self.cert().display(),
            self.key().display()
        )
    }

    /// The CA's certificate (PEM), which signs the leaf.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}
