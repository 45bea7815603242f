//! TLS on the listener (TLS 1.2 and 1.3 with rustls and its aws-lc-rs provider).
//!
//! - Settings: `tls_cert_file` (a PEM chain, leaf first) and `tls_key_file` (a PEM private key:
//!   PKCS#8, PKCS#1 RSA or SEC1 EC), both or neither; neither means plain TCP.
//! - ALPN (RFC 7301) offers `h2` then `http/1.1`: HTTP/2 clients get HTTP/2, with WebSockets
//!   over it by extended CONNECT (RFC 8441); others stay on HTTP/1.1.
//! - Reload: the certificate and the rustls configuration serving it are swapped together
//!   behind a lock; [`Tls::reload`] re-reads both files and swaps only when they load and match.
//!   New handshakes get the new certificate; established connections keep theirs. `comet serve`
//!   calls it on SIGHUP. Each configuration has its own session cache, so no client resumes
//!   (RFC 8446 §2.2, which skips the certificate) a session made under the old certificate,
//!   even one whose handshake was still finishing during the reload.
//! - The handshake runs in the connection's own task, bounded by `header_read_timeout_secs`
//!   (conn/connection.rs), so a client that never finishes it costs one task for that long and never
//!   holds up the accept loop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};

/// The ALPN protocols offered, in order of preference (RFC 7301 §3.2; `h2`: RFC 9113 §3.2).
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS files cannot be used. Each message names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of `tls_cert_file` / `tls_key_file` is set without the other.
    #[error("{set} is set but {missing} is not: set both for TLS, or neither for plain TCP")]
    Incomplete {
        /// The setting that is set.
        set: &'static str,
        /// The setting that is empty.
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {setting} {path}: {source}")]
    Read {
        /// `tls_cert_file` or `tls_key_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds no block of the kind expected.
    #[error("{setting} {path} is not usable PEM: {reason}")]
    Pem {
        /// `tls_cert_file` or `tls_key_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate (their public keys differ).
    #[error("the private key in tls_key_file {key} does not match the certificate in tls_cert_file {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate or the key is PEM but unusable (bad DER, unsupported key type).
    #[error("cannot use tls_cert_file {cert} with tls_key_file {key}: {source}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused the server configuration (not expected with its safe defaults).
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
}

/// The TLS section of the configuration (made by `Config::tls` from `tls_cert_file` and
/// `tls_key_file`): both files, or neither for plain TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of the certificate (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
}

/// Checks the TLS settings of `config` by loading them: both or neither, readable, PEM, and a
/// key that matches the certificate. Used by `Config::validate`.
///
/// # Errors
/// The [`TlsError`], as text.
pub(crate) fn validate(config: &TlsConfig) -> Result<(), String> {
    Tls::from_config(config.clone()).map(drop).map_err(|e| e.to_string())
}

/// The TLS side of the listener: the certificate served and the rustls configuration serving
/// it, which [`reload`](Self::reload) replaces. Cheap to clone (clones share the swap).
#[derive(Clone)]
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    /// A `std` lock: held only to clone or replace the `Arc`.
    current: Arc<RwLock<Arc<Current>>>,
}

/// One certificate and the configuration (with its own session cache) that serves it.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    config: Arc<ServerConfig>,
}

impl Current {
    fn new(key: CertifiedKey, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let key = Arc::new(key);
        let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&key))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            key,
            config: Arc::new(config),
        })
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The TLS of `config` (a [`TlsConfig`], or the whole `&Config`): `None` when neither
    /// `tls_cert_file` nor `tls_key_file` is set (plain TCP), else both files loaded.
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] when only one is set, else as [`load`](Self::load).
    pub fn from_config(config: impl Into<TlsConfig>) -> Result<Option<Self>, TlsError> {
        let config = config.into();
        match (&config.cert_file, &config.key_file) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                set: "tls_cert_file",
                missing: "tls_key_file",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                set: "tls_key_file",
                missing: "tls_cert_file",
            }),
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
        }
    }

    /// Loads the PEM certificate chain in `cert_file` (leaf first) and the PEM private key in
    /// `key_file`, and builds a server configuration offering [`ALPN`].
    ///
    /// # Errors
    /// [`TlsError`]: a file unreadable, not PEM, or without a certificate / key; a key that does
    /// not match the certificate; a certificate or key rustls cannot use.
    pub fn load(cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Result<Self, TlsError> {
        let cert_file = cert_file.as_ref().to_path_buf();
        let key_file = key_file.as_ref().to_path_buf();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = Current::new(load_certified_key(&cert_file, &key_file, &provider)?, &provider)?;
        Ok(Self {
            cert_file,
            key_file,
            provider,
            current: Arc::new(RwLock::new(Arc::new(current))),
        })
    }

    /// Re-reads both files and, if they load and match, serves the new certificate to every
    /// handshake from now on, with a new session cache (no session made so far resumes);
    /// connections already established keep theirs. On error nothing changes.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        let current = Arc::new(Current::new(key, &self.provider)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        Ok(())
    }

    fn current(&self) -> Arc<Current> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The rustls server configuration new connections get: it serves the current certificate.
    /// Take it per connection (a reload replaces it).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().config)
    }

    /// An acceptor for one new connection, with [`server_config`](Self::server_config).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// The end-entity certificate (DER) that new handshakes get.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current().key.cert[0].clone()
    }

    /// The certificate file (`tls_cert_file`).
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The key file (`tls_key_file`).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

fn load_certified_key(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let pem_error = |setting: &'static str, path: &Path, reason: String| TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = read("tls_cert_file", cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("tls_cert_file", cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "tls_cert_file",
            cert_file,
            "no CERTIFICATE block found".to_owned(),
        ));
    }
    let key_pem = read("tls_key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block found".to_owned()
            }
            e => e.to_string(),
        };
        pem_error("tls_key_file", key_file, reason)
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError::Mismatch {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
        },
        source => TlsError::Unusable {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        },
    })
}
