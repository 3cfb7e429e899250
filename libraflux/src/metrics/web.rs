//! TLS and basic authentication for the metrics endpoint, from `metrics.web_config`
//! ([`crate::config::WebConfig`], the exporter-toolkit format).
//!
//! The file and the certificates it names are re-read when one of them changes (checked at most
//! once a second, when a connection arrives), so a renewed certificate is served without a
//! restart, as exporter-toolkit does. A change that does not load is logged and the last good
//! settings stay in force. Passwords are checked with bcrypt on a blocking thread, one at a
//! time (a flood of wrong passwords costs at most one core); a password that was right once is
//! remembered as a SHA-256 digest, so Prometheus' scrapes do not pay bcrypt each time.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::{Duration, Instant},
};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, ClientAuth, ConfigError, ConfigErrors, TlsSettings, TlsVersion, WebConfig};

/// How often, at most, the files are looked at for changes.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "metrics.web_config {name:?} is a systemd credential, but $CREDENTIALS_DIRECTORY is not set: \
         add LoadCredential={name}:/etc/libraflux/{name} to the unit, or give an absolute path"
    )]
    NoCredentials { name: String },
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{}: {message}", path.display())]
    Tls { path: PathBuf, message: String },
}

/// What one connection is served with.
pub struct Web {
    tls: Option<TlsAcceptor>,
    auth: Option<BasicAuth>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map(|auth| auth.users.len()))
            .finish()
    }
}

impl Web {
    /// Plain HTTP, no authentication: the endpoint without `metrics.web_config`.
    pub fn open() -> Self {
        Self { tls: None, auth: None, headers: Vec::new() }
    }

    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The headers the configuration adds to every response.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Whether a request with this `Authorization` header may be served.
    pub async fn authorized(&self, authorization: Option<&HeaderValue>) -> bool {
        match &self.auth {
            None => true,
            Some(auth) => auth.check(authorization).await,
        }
    }
}

/// The web configuration a running endpoint follows, re-read when its files change.
#[derive(Debug)]
pub struct WebSource {
    /// As configured (a path or a credential name): what a reload compares.
    configured: PathBuf,
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    web: Arc<Web>,
    stamp: Stamp,
    checked: Instant,
    /// The stamp of the last change that failed to load, so it is logged once.
    failed: Option<Stamp>,
}

impl WebSource {
    /// Loads `configured` (an absolute path, or a credential name) and what it names; returns
    /// the source and the file's warnings.
    pub fn open(configured: &Path) -> Result<(Self, Vec<ConfigError>), WebError> {
        let path = crate::credentials::resolve(configured, crate::credentials::directory().as_deref())
            .ok_or_else(|| WebError::NoCredentials { name: configured.display().to_string() })?;
        let (web, warnings, stamp) = load(&path)?;
        let state = State { web: Arc::new(web), stamp, checked: Instant::now(), failed: None };
        Ok((Self { configured: configured.to_owned(), path, state: Mutex::new(state) }, warnings))
    }

    pub fn configured(&self) -> &Path {
        &self.configured
    }

    /// The settings for a new connection: reloaded first if a file changed since the last look
    /// (at most once per [`RECHECK`]); on a failed reload, the last good ones.
    pub fn current(&self) -> Arc<Web> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() < RECHECK {
            return Arc::clone(&state.web);
        }
        state.checked = Instant::now();
        let files = state.stamp.files();
        let now = Stamp::of(&files);
        if now == state.stamp || state.failed.as_ref() == Some(&now) {
            return Arc::clone(&state.web);
        }
        match load(&self.path) {
            Ok((web, _, stamp)) => {
                tracing::info!(web_config = %self.path.display(), "metrics endpoint: web configuration reloaded");
                *state = State { web: Arc::new(web), stamp, checked: state.checked, failed: None };
            }
            Err(error) => {
                tracing::error!(
                    web_config = %self.path.display(),
                    error = %error,
                    "metrics endpoint: the changed web configuration does not load; the last good one stays in force"
                );
                state.failed = Some(now);
            }
        }
        Arc::clone(&state.web)
    }
}

/// Checks `configured` as the daemon loads it (`libraflux validate`): the file's warnings, or its
/// errors as configuration errors. A systemd credential outside the unit cannot be checked: that
/// is a warning.
pub fn check(configured: &Path) -> Result<Vec<ConfigError>, ConfigErrors> {
    let one = |file: &Path, message: String| ConfigErrors(vec![ConfigError::new(file, None, message)]);
    match WebSource::open(configured) {
        Ok((_, warnings)) => Ok(warnings),
        Err(WebError::NoCredentials { name }) => Ok(vec![ConfigError::new(
            configured,
            None,
            format!(
                "metrics.web_config {name:?} is a systemd credential: it is checked when the daemon starts"
            ),
        )]),
        Err(WebError::Invalid(errors)) => Err(errors),
        Err(WebError::Read { path, error }) => Err(one(&path, format!("cannot read: {error}"))),
        Err(WebError::Tls { path, message }) => Err(one(&path, message)),
    }
}

/// Every file a configuration depends on, with what identifies its content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<(PathBuf, Option<FileId>)>);

/// Device, inode, modification time (seconds, nanoseconds) and size: a file replaced by rename
/// or rewritten in place looks different.
type FileId = (u64, u64, i64, i64, u64);

impl Stamp {
    fn of(files: &[PathBuf]) -> Self {
        Self(
            files
                .iter()
                .map(|file| {
                    let meta = std::fs::metadata(file).ok();
                    let id = meta.map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()));
                    (file.clone(), id)
                })
                .collect(),
        )
    }

    fn files(&self) -> Vec<PathBuf> {
        self.0.iter().map(|(file, _)| file.clone()).collect()
    }
}

fn load(path: &Path) -> Result<(Web, Vec<ConfigError>, Stamp), WebError> {
    // Each file is stamped before it is read, so that a change during the read is seen next time.
    let mut stamp = Stamp::of(&[path.to_owned()]);
    let text =
        std::fs::read_to_string(path).map_err(|error| WebError::Read { path: path.to_owned(), error })?;
    let (config, warnings) = config::parse_web_config(path, &text).map_err(WebError::Invalid)?;
    let tls_files: Vec<PathBuf> = config
        .tls
        .iter()
        .flat_map(|tls| [Some(&tls.cert_file), Some(&tls.key_file), tls.client_ca_file.as_ref()])
        .flatten()
        .cloned()
        .collect();
    stamp.0.extend(Stamp::of(&tls_files).0);
    Ok((build(&config)?, warnings, stamp))
}

fn build(config: &WebConfig) -> Result<Web, WebError> {
    let tls =
        config.tls.as_ref().map(server_config).transpose()?.map(|config| TlsAcceptor::from(Arc::new(config)));
    let auth = (!config.basic_auth_users.is_empty())
        .then(|| BasicAuth::new(config.basic_auth_users.clone().into_iter().collect()));
    let headers = config
        .headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("the allowed names are valid");
            let value = HeaderValue::from_str(value).expect("validated as a header value");
            (name, value)
        })
        .collect();
    Ok(Web { tls, auth, headers })
}

fn server_config(tls: &TlsSettings) -> Result<ServerConfig, WebError> {
    let error = |path: &Path, message: String| WebError::Tls { path: path.to_owned(), message };
    // ring rather than aws-lc-rs: no C build beyond what ring needs. rustls deprecates ring's
    // provider for lacking post-quantum key exchange (X25519MLKEM768); a scrape endpoint's
    // recorded traffic is not the secret that would justify the heavier build.
    #[allow(deprecated)]
    let mut provider = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        // The TLS 1.3 suites stay (Go does not let them be chosen); the TLS 1.2 ones are those
        // listed, in the listed order.
        let (tls13, tls12): (Vec<SupportedCipherSuite>, Vec<SupportedCipherSuite>) =
            provider.cipher_suites.iter().partition(|suite| suite.version() == &TLS13);
        let chosen = tls
            .cipher_suites
            .iter()
            .filter_map(|name| tls12.iter().find(|suite| format!("{:?}", suite.suite()) == *name).copied());
        provider.cipher_suites = tls13.into_iter().chain(chosen).collect();
    }
    if !tls.curves.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = tls
            .curves
            .iter()
            .filter_map(|name| all.iter().find(|group| format!("{:?}", group.name()) == *name).copied())
            .collect();
    }
    let versions: Vec<_> = [(TlsVersion::Tls12, &TLS12), (TlsVersion::Tls13, &TLS13)]
        .into_iter()
        .filter(|(version, _)| (tls.min_version..=tls.max_version).contains(version))
        .map(|(_, version)| version)
        .collect();
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|err| error(&tls.cert_file, format!("TLS settings: {err}")))?;
    let builder = match (tls.client_auth, &tls.client_ca_file) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots
                    .add(cert)
                    .map_err(|err| error(ca_file, format!("not a usable CA certificate: {err}")))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|err| error(ca_file, format!("client CAs: {err}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|err| error(&tls.key_file, format!("no PEM private key: {err}")))?;
    let mut config = builder.with_single_cert(certificates(&tls.cert_file)?, key).map_err(|err| {
        error(&tls.cert_file, format!("certificate and key_file {}: {err}", tls.key_file.display()))
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, WebError> {
    pem_certificates(path).map_err(|message| WebError::Tls { path: path.to_owned(), message })
}

/// Every certificate of a PEM file, at least one; or why not. Also the etcd client's reader.
pub(crate) fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read certificates: {err}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not a PEM certificate: {err}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".to_owned());
    }
    Ok(certs)
}

/// Basic authentication against bcrypt hashes.
struct BasicAuth {
    users: HashMap<String, String>,
    /// Per user, the digest of the last password bcrypt accepted (with the hash it matched).
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// One bcrypt at a time.
    bcrypt: Semaphore,
}

/// Checked for unknown users, so that a wrong name costs what a wrong password does.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash("libraflux: no such user", bcrypt::DEFAULT_COST).expect("bcrypt hashes"));

impl BasicAuth {
    fn new(users: HashMap<String, String>) -> Self {
        Self { users, verified: Mutex::new(HashMap::new()), bcrypt: Semaphore::new(1) }
    }

    async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else { return false };
        let known = self.users.get(&user);
        let digest = digest(&user, known.map_or("", String::as_str), &password);
        if known.is_some() {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if verified.get(&user).is_some_and(|remembered| constant_time_eq(remembered, &digest)) {
                return true;
            }
        }
        let hash = known.cloned().unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(_permit) = self.bcrypt.acquire().await else { return false };
        let matched = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        let accepted = matched && known.is_some();
        if accepted {
            self.verified.lock().unwrap_or_else(PoisonError::into_inner).insert(user, digest);
        }
        accepted
    }
}

/// `Basic base64(user:password)`.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let encoded = header.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn digest(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut sha = Sha256::new();
    for part in [user, hash, password] {
        sha.update((part.len() as u64).to_be_bytes());
        sha.update(part.as_bytes());
    }
    sha.finalize().into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
