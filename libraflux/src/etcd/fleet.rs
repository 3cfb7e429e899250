//! The replicated configuration in etcd: one key per `config.d` file, `<prefix><file name>`,
//! its value the file's bytes. [`read`] takes what is stored at one revision, [`changes`]
//! compares it with local files, [`push`] writes them in one transaction that holds only if
//! nothing under the prefix was written since that revision.

use std::collections::BTreeMap;

use super::{Client, Compare, EtcdError, Op, prefix_end};
use crate::bundle::BundleFile;

/// What the prefix held at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The store's revision when it was read.
    pub revision: i64,
    /// By file name (the key without the prefix): the bytes and the revision of its last write.
    pub files: BTreeMap<String, StoredFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub bytes: Vec<u8>,
    pub mod_revision: i64,
}

/// One file a push would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added { name: String, new: Vec<u8> },
    Changed { name: String, old: Vec<u8>, new: Vec<u8> },
    Removed { name: String, old: Vec<u8> },
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Self::Added { name, .. } | Self::Changed { name, .. } | Self::Removed { name, .. } => name,
        }
    }

    /// `added`, `changed` or `removed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Added { .. } => "added",
            Self::Changed { .. } => "changed",
            Self::Removed { .. } => "removed",
        }
    }
}

/// What [`push`] did.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The compare-and-swap failed: a key under the prefix was written after `read`.
    #[error(
        "another push won: a key under {prefix:?} was written after revision {read} (etcd is at revision {current}); nothing was written: run diff and push again"
    )]
    Lost { prefix: String, read: i64, current: i64 },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// Every key under `prefix`, at the store's latest revision.
pub async fn read(client: &Client, prefix: &str) -> Result<Stored, EtcdError> {
    let answer = client.range(prefix.as_bytes(), &prefix_end(prefix.as_bytes())).await?;
    let files = answer
        .kvs
        .into_iter()
        .map(|kv| {
            let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            (name, StoredFile { bytes: kv.value, mod_revision: kv.mod_revision })
        })
        .collect();
    Ok(Stored { revision: answer.header.revision, files })
}

/// What writing `files` over `stored` changes, by file name.
pub fn changes(stored: &Stored, files: &[BundleFile]) -> Vec<Change> {
    let local: BTreeMap<&str, &[u8]> =
        files.iter().map(|file| (file.name.as_str(), file.bytes.as_slice())).collect();
    let mut changes = Vec::new();
    for (name, file) in &stored.files {
        match local.get(name.as_str()) {
            None => changes.push(Change::Removed { name: name.clone(), old: file.bytes.clone() }),
            Some(new) if *new != file.bytes.as_slice() => {
                changes.push(Change::Changed {
                    name: name.clone(),
                    old: file.bytes.clone(),
                    new: new.to_vec(),
                });
            }
            Some(_) => {}
        }
    }
    for (name, new) in local {
        if !stored.files.contains_key(name) {
            changes.push(Change::Added { name: name.to_owned(), new: new.to_vec() });
        }
    }
    changes.sort_by(|a, b| a.name().cmp(b.name()));
    changes
}

/// Makes the prefix hold exactly `files`, in one transaction that runs only if no key under
/// the prefix was written after `stored.revision` and every key `stored` holds is still there
/// at its revision (so a concurrent push that added, changed or deleted a key makes this one
/// fail with [`PushError::Lost`]). Returns the revision of the write, or `stored.revision` when
/// nothing changes (and nothing is written).
pub async fn push(
    client: &Client,
    prefix: &str,
    stored: &Stored,
    files: &[BundleFile],
) -> Result<i64, PushError> {
    let changes = changes(stored, files);
    if changes.is_empty() {
        return Ok(stored.revision);
    }
    let key = |name: &str| format!("{prefix}{name}").into_bytes();
    let mut compare = vec![Compare::NotWrittenAfter {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        revision: stored.revision,
    }];
    compare.extend(
        stored
            .files
            .iter()
            .map(|(name, file)| Compare::ModRevisionIs { key: key(name), revision: file.mod_revision }),
    );
    let ops: Vec<Op> = changes
        .iter()
        .map(|change| match change {
            Change::Added { name, new } | Change::Changed { name, new, .. } => {
                Op::Put { key: key(name), value: new.clone() }
            }
            Change::Removed { name, .. } => Op::Delete { key: key(name) },
        })
        .collect();
    let answer = client.txn(&compare, &ops, &format!("the keys under {prefix:?}")).await?;
    if !answer.succeeded {
        return Err(PushError::Lost {
            prefix: prefix.to_owned(),
            read: stored.revision,
            current: answer.header.revision,
        });
    }
    Ok(answer.header.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &str) -> BundleFile {
        BundleFile { name: name.to_owned(), bytes: bytes.as_bytes().to_vec() }
    }

    #[test]
    fn changes_are_added_changed_removed_by_name() {
        let stored_file = |bytes: &str| StoredFile { bytes: bytes.as_bytes().to_vec(), mod_revision: 3 };
        let stored = Stored {
            revision: 4,
            files: [("a.yaml", "a"), ("b.yaml", "b"), ("c.yaml", "c")]
                .into_iter()
                .map(|(name, bytes)| (name.to_owned(), stored_file(bytes)))
                .collect(),
        };
        let local = [file("b.yaml", "B"), file("c.yaml", "c"), file("0.yaml", "0")];
        let changed = changes(&stored, &local);
        let found: Vec<(&str, &str)> = changed.iter().map(|c| (c.kind(), c.name())).collect();
        assert_eq!(found, [("added", "0.yaml"), ("removed", "a.yaml"), ("changed", "b.yaml")]);
        assert!(
            changes(&stored, &[file("a.yaml", "a"), file("b.yaml", "b"), file("c.yaml", "c")]).is_empty()
        );
    }
}
