//! TLS to Redis beyond what a `rediss://` URL does by itself: a private CA
//! and client certificates (mutual TLS). Feature `redis-tls`.
//!
//! rustls does the TLS (no system OpenSSL), with the `ring` crypto provider
//! and the Mozilla root certificates compiled in (`webpki-roots`), so a
//! `rediss://` URL to a managed Redis works in a container that has no CA
//! files.

use std::fmt;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::RedisStore;
use crate::error::StoreError;

/// TLS settings for [`RedisStore::connect_tls`] and
/// [`RedisStore::connect_cluster_tls`]: the certificate authorities to trust
/// instead of the public ones, and a client certificate for servers that
/// ask for one (mutual TLS).
///
/// A plain `rediss://` URL needs none of this: [`RedisStore::connect`] and
/// [`RedisStore::connect_cluster`] trust the public web PKI roots (Mozilla's
/// list, compiled in). Use `RedisTls` for a server whose certificate comes
/// from your own CA, or that demands a client certificate
/// (`tls-auth-clients yes`, the `redis-server` default).
///
/// Certificates and keys are PEM text, as found in `.pem`/`.crt`/`.key`
/// files; they are checked when the store connects. `Debug` shows which
/// settings are present, never the certificates or the key.
///
/// # Example
///
/// ```no_run
/// use tower_session_storage::{RedisStore, RedisTls};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = RedisTls::new()
///     .with_root_certificates(std::fs::read("/etc/redis/ca.pem")?)
///     .with_client_certificate(
///         std::fs::read("/etc/redis/client.pem")?,
///         std::fs::read("/etc/redis/client.key")?,
///     );
/// let store = RedisStore::connect_tls("rediss://redis.internal:6380", tls).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RedisTls {
    roots: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = match &self.roots {
            Some(_) => "custom",
            None => "public web PKI",
        };
        f.debug_struct("RedisTls")
            .field("root_certificates", &roots)
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Settings that change nothing: the public web PKI roots, no client
    /// certificate (what a `rediss://` URL gets with
    /// [`RedisStore::connect`]).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::RedisTls;
    ///
    /// let tls = RedisTls::new();
    /// assert!(format!("{tls:?}").contains("public web PKI"));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the certificate authorities in `pem` (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks) *instead of* the public roots:
    /// for a Redis whose certificate your own CA signed. The server's
    /// certificate must name the host of the URL (a DNS name, or the IP
    /// address when the URL has one).
    ///
    /// The default is the public web PKI roots.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::RedisTls;
    ///
    /// # let ca_pem = b"-----BEGIN CERTIFICATE-----\n...".to_vec();
    /// let tls = RedisTls::new().with_root_certificates(ca_pem);
    /// assert!(format!("{tls:?}").contains("custom"));
    /// ```
    pub fn with_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots = Some(pem.into());
        self
    }

    /// Presents a client certificate (mutual TLS): `cert_pem` is the
    /// certificate chain (the client's certificate first), `key_pem` its
    /// private key (PKCS#8, PKCS#1 or SEC1 PEM).
    ///
    /// The default is no client certificate.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::RedisTls;
    ///
    /// # let (cert_pem, key_pem) = (Vec::<u8>::new(), Vec::<u8>::new());
    /// let tls = RedisTls::new().with_client_certificate(cert_pem, key_pem);
    /// assert!(format!("{tls:?}").contains("client_certificate: true"));
    /// ```
    pub fn with_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The settings as redis-rs takes them (`Client::build_with_tls`,
    /// `ClusterClientBuilder::certs`, the Sentinel options), after checking
    /// that each PEM holds what it should: an error names the setting.
    pub(crate) fn certificates(&self) -> Result<TlsCertificates, StoreError> {
        if let Some(pem) = &self.roots {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_pem("with_root_certificates", &e))?;
            if certs.is_empty() {
                return Err(StoreError::other(
                    "RedisTls::with_root_certificates: no certificate in the PEM text \
                     (expected -----BEGIN CERTIFICATE----- blocks)",
                ));
            }
        }
        if let Some((cert, key)) = &self.client {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_pem("with_client_certificate (certificate)", &e))?;
            if certs.is_empty() {
                return Err(StoreError::other(
                    "RedisTls::with_client_certificate: no certificate in the certificate PEM",
                ));
            }
            PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| bad_pem("with_client_certificate (private key)", &e))?;
        }
        install_crypto_provider();
        Ok(TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.roots.clone(),
        })
    }
}

impl RedisStore {
    /// Connects to a standalone Redis over TLS (`rediss://host:port`), with
    /// a private CA or a client certificate from `tls`. Otherwise as
    /// [`connect`](Self::connect): the same reconnection, timeouts and
    /// checks.
    ///
    /// Fails at once, with a [`StoreError`] whose
    /// [`source`](std::error::Error::source) chain names the cause, when
    /// the PEM text is unreadable or the URL is not `rediss://`; and within
    /// a few seconds (three connection attempts of at most 1 s each) when
    /// the TLS handshake fails: a server certificate the CA did not sign,
    /// expired or for another host name, a server that demands a client
    /// certificate and got none, or a port that does not speak TLS.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::{RedisStore, RedisTls};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = RedisTls::new().with_root_certificates(std::fs::read("ca.pem")?);
    /// let store = RedisStore::connect_tls("rediss://redis.internal:6380", tls).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_tls(url: &str, tls: RedisTls) -> Result<Self, StoreError> {
        let client = redis::Client::build_with_tls(url, tls.certificates()?).map_err(|e| {
            StoreError::other(format!(
                "invalid Redis URL for RedisStore::connect_tls (expected rediss://host:port): {e}"
            ))
        })?;
        Self::connect_client(client).await
    }

    /// Connects to a Redis Cluster over TLS, with a private CA or a client
    /// certificate from `tls`. Otherwise as
    /// [`connect_cluster`](Self::connect_cluster). Every URL must be
    /// `rediss://` (anything else is refused at once). Every node is reached
    /// over TLS (the cluster announces its nodes' TLS ports when it runs
    /// with `tls-cluster yes`), and each node's certificate must name the
    /// address the cluster announces for it.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::{RedisStore, RedisTls};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = RedisTls::new()
    ///     .with_root_certificates(std::fs::read("ca.pem")?)
    ///     .with_client_certificate(std::fs::read("client.pem")?, std::fs::read("client.key")?);
    /// let store = RedisStore::connect_cluster_tls(
    ///     &["rediss://10.0.0.1:6380", "rediss://10.0.0.2:6380", "rediss://10.0.0.3:6380"],
    ///     tls,
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_cluster_tls<S: AsRef<str>>(
        urls: &[S],
        tls: RedisTls,
    ) -> Result<Self, StoreError> {
        let certs = tls.certificates()?;
        if let Some(url) = urls.iter().map(AsRef::as_ref).find(|u| {
            !u.get(..9)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
        }) {
            return Err(StoreError::other(format!(
                "invalid Redis URL for RedisStore::connect_cluster_tls: {url:?} \
                 (expected rediss://host:port)"
            )));
        }
        Self::connect_cluster_with(urls, |b| b.certs(certs)).await
    }
}

fn bad_pem(setting: &str, e: &rustls::pki_types::pem::Error) -> StoreError {
    StoreError::other(format!("RedisTls::{setting}: unreadable PEM: {e}"))
}

/// Makes `ring` the process's rustls crypto provider when the app chose
/// none. redis-rs builds its TLS settings with the process default; with
/// only our `ring` in the build rustls would pick it by itself, but an app
/// whose other dependencies also compile in `aws-lc-rs` leaves rustls unable
/// to choose, and it would panic at the first connection. An app that
/// installed a provider before connecting (e.g. aws-lc-rs, for post-quantum
/// key exchange) keeps it.
pub(super) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // rustls 0.23.48 deprecates ring's provider only to point at
        // aws-lc-rs's post-quantum key exchange; ring's is what builds
        // without cmake or OpenSSL, and it is what rustls itself would pick
        // here. Err: another thread installed one meanwhile; that one is used.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
