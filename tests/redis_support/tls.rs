//! Certificates for the TLS tests, made with rcgen into a temp directory:
//! a CA, a server certificate for `127.0.0.1`/`localhost` signed by it, and
//! a client certificate signed by it (for mutual TLS and for the helpers'
//! own admin connections).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of one test PKI, in a directory removed on drop.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    pub(crate) dir: PathBuf,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    /// A server certificate for the same names, signed by the same CA,
    /// that expired in 2001.
    pub(crate) expired_cert: PathBuf,
    pub(crate) expired_key: PathBuf,
}

impl TlsFiles {
    /// A fresh CA with a server certificate valid now (and one expired),
    /// and a client certificate, in a new temp directory.
    pub(crate) fn generate() -> Arc<TlsFiles> {
        let dir = super::temp_dir("tls");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tower-session-storage test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = date_time_ymd(2000, 1, 1);
        ca.not_after = date_time_ymd(2090, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |name: &str, sans: Vec<String>, from: i32, to: i32| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.not_before = date_time_ymd(from, 1, 1);
            p.not_after = date_time_ymd(to, 1, 1);
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        // No extended key usage: the server certificate also serves as the
        // client certificate of the cluster bus and of replication.
        let names = || vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let server = leaf("redis-server", names(), 2020, 2090);
        let expired = leaf("redis-server", names(), 2000, 2001);
        let client = leaf("session-store", Vec::new(), 2020, 2090);

        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Arc::new(TlsFiles {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server.0),
            server_key: write("server.key", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
            expired_cert: write("expired.pem", &expired.0),
            expired_key: write("expired.key", &expired.1),
            dir,
        })
    }

    pub(crate) fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// The `redis-server` arguments that serve TLS on `port` (and nothing
    /// in plain text): `--port 0 --tls-port <port> …`.
    pub(crate) fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            self.server_cert.display().to_string(),
            "--tls-key-file".to_owned(),
            self.server_key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            self.ca.display().to_string(),
        ]
        .into()
    }

    /// `redis-cli` arguments to talk TLS to such a server.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        [
            "--tls".to_owned(),
            "--cacert".to_owned(),
            self.ca.display().to_string(),
            "--cert".to_owned(),
            self.client_cert.display().to_string(),
            "--key".to_owned(),
            self.client_key.display().to_string(),
        ]
        .into()
    }

    /// redis-rs's certificates for the helpers' admin connections (the CA
    /// and the client certificate).
    #[cfg(feature = "redis-tls")]
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: Self::read(&self.client_cert),
                client_key: Self::read(&self.client_key),
            }),
            root_cert: Some(Self::read(&self.ca)),
        }
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
