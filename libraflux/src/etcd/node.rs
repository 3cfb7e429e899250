//! What a fleet node makes of its prefix: the checks a bundle's files get (names, count, size;
//! and an empty prefix, which is refused rather than run), the configuration its own node-local
//! files make with them, and what the daemon starts on: etcd's configuration when etcd answers
//! and it validates, the last good one on disk otherwise ([`last_good`]).

use std::{path::Path, time::Duration};

use super::{Client, last_good};
pub use crate::replication::Refusal;
use crate::{
    bundle::{self, BundleFile, NameProblem},
    config::{self, Config, ConfigError, ConfigErrors, EtcdSource},
};

/// How long the read at start may take, every endpoint tried.
const READ_AT_START: Duration = Duration::from_secs(20);

/// Every reason a configuration from etcd is refused, as counted in
/// `libraflux_etcd_refused_total`.
pub const REFUSAL_REASONS: &[&str] =
    &["empty", "bad_name", "too_many_files", "too_large", "invalid_config", "limits", "failed"];

/// A configuration from etcd: the revision it was read at, the digest of its files, and the
/// files by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    pub revision: i64,
    pub sha256: String,
    pub files: Vec<BundleFile>,
}

impl InForce {
    /// `files` read at `revision`; sorted by name here.
    pub fn new(revision: i64, mut files: Vec<BundleFile>) -> Self {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Self { revision, sha256: digest(&files), files }
    }
}

/// The SHA-256 of the files in name order, each its name, a NUL, its length (8 bytes, big
/// endian) and its bytes: the same files give the same digest on every node, whatever the
/// revision, and no two sets of files give the same input.
fn digest(files: &[BundleFile]) -> String {
    let mut input = Vec::new();
    for file in files {
        input.extend_from_slice(file.name.as_bytes());
        input.push(0);
        input.extend_from_slice(&(file.bytes.len() as u64).to_be_bytes());
        input.extend_from_slice(&file.bytes);
    }
    bundle::sha256_hex(&input)
}

/// A configuration from etcd that does not validate, as a refusal.
pub fn invalid(errors: &ConfigErrors) -> Refusal {
    Refusal::new("invalid_config", errors.to_string())
}

/// Refuses what no bundle could carry: no file at all (a prefix read by mistake, or emptied: a
/// fleet without services says `services: []` in a file), a key that is not a plain `*.yaml`
/// name under the prefix, more files or bytes than a bundle holds.
pub fn check(prefix: &str, candidate: &InForce) -> Result<(), Refusal> {
    if candidate.files.is_empty() {
        return Err(Refusal::new(
            "empty",
            format!(
                "etcd holds no key under {prefix:?} at revision {}; a configuration with no services is a file with services: []",
                candidate.revision
            ),
        ));
    }
    for file in &candidate.files {
        if let Err(problem) = bundle::check_name(&file.name) {
            let why = match problem {
                NameProblem::Unsafe(why) => why,
                NameProblem::NotYaml => "not a plain *.yaml file name",
            };
            return Err(Refusal::new("bad_name", format!("the key {prefix}{}: {why}", file.name)));
        }
    }
    let limits = bundle::Limits::default();
    if candidate.files.len() > limits.max_files {
        let detail =
            format!("{} files under {prefix:?}, more than {}", candidate.files.len(), limits.max_files);
        return Err(Refusal::new("too_many_files", detail));
    }
    let bytes: u64 = candidate.files.iter().map(|file| file.bytes.len() as u64).sum();
    if bytes > limits.max_bytes {
        return Err(Refusal::new(
            "too_large",
            format!("{bytes} bytes under {prefix:?}, more than {}", limits.max_bytes),
        ));
    }
    Ok(())
}

/// The configuration `node_local` (the node's own files) makes with `candidate`'s files as its
/// `config.d`; the files' errors name them `etcd revision N:<file>:line:col`.
pub fn validate(node_local: Vec<config::Source>, candidate: &InForce) -> Result<Config, ConfigErrors> {
    let origin = format!("etcd revision {}", candidate.revision);
    bundle::validate_with(node_local, &candidate.files, Path::new(&origin))
}

/// [`check`], then [`validate`].
pub fn admit(prefix: &str, node_local: Vec<config::Source>, candidate: &InForce) -> Result<Config, Refusal> {
    check(prefix, candidate)?;
    validate(node_local, candidate).map_err(|errors| invalid(&errors))
}

/// What the daemon starts on, besides the configuration.
#[derive(Clone, Debug)]
pub struct Started {
    pub source: EtcdSource,
    pub in_force: InForce,
    /// Why the configuration is the last good one from disk (etcd could not be read, or what it
    /// holds was refused); `None` when it is etcd's.
    pub from_last_good: Option<String>,
    /// What etcd held that was refused at start, and at which revision.
    pub refused: Option<(InForce, Refusal)>,
}

/// Why the daemon cannot start on a configuration from etcd.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node's own files, or the configuration they make with etcd's or the last good files.
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error(
        "{why}; and there is no last good configuration from etcd in {} to start on. IPVS is left as it is",
        state_dir.display()
    )]
    NothingToRun { why: String, state_dir: std::path::PathBuf },
}

/// The configuration of a node whose node-local files set `source.etcd`, for the daemon to start
/// on; `None` for any other node. Reads the prefix once: what it holds when it validates, the
/// last good configuration in `state_dir` otherwise (and says why).
pub async fn at_start(
    config_path: Option<&Path>,
    state_dir: &Path,
) -> Result<Option<(Config, Started)>, StartError> {
    let node_local = config::node_local_sources(config_path).map_err(StartError::Invalid)?;
    let Some(source) = config::etcd_source(&node_local) else { return Ok(None) };
    let last_good = last_good::load(state_dir).unwrap_or_else(|err| {
        tracing::error!("cannot use the last good configuration from etcd: {err}");
        None
    });
    let (why, refused) = match read_at_start(&source).await {
        Ok(read) => {
            // The same files as the last good ones are the same generation.
            let read = match &last_good {
                Some(last) if last.in_force.sha256 == read.sha256 => last.in_force.clone(),
                _ => read,
            };
            match admit(&source.prefix, node_local.clone(), &read) {
                Ok(config) => {
                    let started = Started { source, in_force: read, from_last_good: None, refused: None };
                    return Ok(Some((config, started)));
                }
                Err(refusal) => {
                    let why = format!(
                        "etcd revision {} was refused ({}): {}",
                        read.revision, refusal.reason, refusal.detail
                    );
                    (why, Some((read, refusal)))
                }
            }
        }
        Err(why) => (why, None),
    };
    let Some(last_good) = last_good else {
        return Err(match refused {
            Some((read, refusal)) if refusal.reason == "invalid_config" => {
                StartError::Invalid(validate(node_local, &read).err().unwrap_or_else(|| {
                    ConfigErrors(vec![ConfigError::new(state_dir, None, refusal.detail.clone())])
                }))
            }
            _ => StartError::NothingToRun { why, state_dir: state_dir.join(last_good::FILE) },
        });
    };
    if last_good.prefix != source.prefix {
        tracing::warn!(
            kept = %last_good.prefix,
            configured = %source.prefix,
            "the last good configuration was read under another prefix; starting on it all the same"
        );
    }
    let config = validate(node_local, &last_good.in_force).map_err(StartError::Invalid)?;
    let started = Started { source, in_force: last_good.in_force, from_last_good: Some(why), refused };
    Ok(Some((config, started)))
}

/// The prefix as etcd holds it now, or why it could not be read.
async fn read_at_start(source: &EtcdSource) -> Result<InForce, String> {
    let client = Client::new(&source.endpoints, source.tls.as_ref()).map_err(|err| err.to_string())?;
    match tokio::time::timeout(READ_AT_START, super::fleet::read(&client, &source.prefix)).await {
        Ok(Ok(stored)) => Ok(InForce::new(
            stored.revision,
            stored.files.into_iter().map(|(name, file)| BundleFile { name, bytes: file.bytes }).collect(),
        )),
        Ok(Err(err)) => Err(format!("etcd cannot be read: {err}")),
        Err(_) => Err(format!("etcd cannot be read: no answer within {}s", READ_AT_START.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> BundleFile {
        BundleFile { name: name.to_owned(), bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn an_empty_prefix_and_names_no_bundle_carries_are_refused() {
        let reason =
            |files: Vec<BundleFile>| check("/f/", &InForce::new(3, files)).map_err(|refusal| refusal.reason);
        assert_eq!(reason(Vec::new()), Err("empty"));
        assert_eq!(reason(vec![file("sub/web.yaml", "")]), Err("bad_name"));
        assert_eq!(reason(vec![file("web.yml", "")]), Err("bad_name"));
        assert_eq!(reason(vec![file("web.yaml", "services: []\n")]), Ok(()));
    }

    #[test]
    fn the_digest_is_of_the_files_in_name_order_not_of_the_revision() {
        let one = InForce::new(3, vec![file("b.yaml", "b"), file("a.yaml", "a")]);
        let two = InForce::new(9, vec![file("a.yaml", "a"), file("b.yaml", "b")]);
        assert_eq!(one.sha256, two.sha256);
        assert_eq!(one.files, two.files);
        assert_ne!(one.sha256, InForce::new(3, vec![file("a.yaml", "a")]).sha256);
    }

    #[test]
    fn a_file_that_sets_a_node_local_section_or_does_not_validate_is_refused_with_its_place() {
        let node_local = vec![config::Source::new("/etc/libraflux/config.yaml", "node: {name: lb-a}\n")];
        let bad = InForce::new(7, vec![file("web.yaml", "metrics: {}\nservices: [{name: web}]\n")]);
        let refusal = admit("/f/", node_local.clone(), &bad).unwrap_err();
        assert_eq!(refusal.reason, "invalid_config");
        assert!(
            refusal.detail.contains("etcd revision 7:web.yaml:1:1: \"metrics\" is node-local"),
            "{}",
            refusal.detail
        );
        let good = InForce::new(8, vec![file("web.yaml", "services: []\n")]);
        assert_eq!(admit("/f/", node_local, &good).unwrap().node.name, "lb-a");
    }
}
