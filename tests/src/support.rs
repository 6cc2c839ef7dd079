//! Test helpers the suite's modules share: a test PKI and a relay
//! process's log.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A test CA and a certificate for `localhost` it signed, written to files.
#[derive(Debug)]
pub struct Pki {
    pub roots: rustls::RootCertStore,
    /// base64(SHA-256) of the leaf's SubjectPublicKeyInfo: what a browser
    /// is told to trust (`--ignore-certificate-errors-spki-list`).
    pub leaf_spki_sha256: String,
    dir: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        // Unique per call: tests on both datapaths use the same names.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ip2p-test-{}-{name}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
        std::fs::write(self.key(), key.serialize_pem()).unwrap();
        let spki = <sha2::Sha256 as sha2::Digest>::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
        self.leaf_spki_sha256 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki);
        self.roots = rustls::RootCertStore::empty();
        self.roots.add(ca.der().clone()).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The `[tls]` table serving this certificate on `listen`.
    pub fn tls_table(&self, listen: &str) -> String {
        format!(
            "[tls]\nlisten = [\"{listen}\"]\ncert = \"{}\"\nkey = \"{}\"",
            self.cert().display(),
            self.key().display()
        )
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

/// A relay process's log (its stderr), line by line. A thread reads it for
/// the process's whole life, so the relay never blocks on a full pipe.
#[derive(Debug)]
pub struct Log(std::sync::mpsc::Receiver<String>);

impl Log {
    /// Takes `child`'s piped stderr.
    pub fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self(rx)
    }

    /// The next line containing `what`, within 10 s.
    pub fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.0.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    /// Waits for the start line and returns the first listen address.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        let line = self.wait_for("started");
        line.split("listen=[").nth(1).unwrap().split([']', ',']).next().unwrap().parse().unwrap()
    }
}
