//! What several integration tests share.
#![allow(dead_code, unreachable_pub)] // each test uses its own part

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A test CA and a certificate for `localhost` it signed, written to files.
pub struct Pki {
    pub roots: rustls::RootCertStore,
    dir: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ip2p-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pki = Self { roots: rustls::RootCertStore::empty(), dir };
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
        std::fs::write(self.key(), key.serialize_pem()).unwrap();
        self.roots = rustls::RootCertStore::empty();
        self.roots.add(ca.der().clone()).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
