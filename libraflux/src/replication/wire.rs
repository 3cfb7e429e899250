//! The replication protocol (operators: docs/ha.md). One request per TCP connection: a JSON
//! object on one line, answered by one JSON line (and, for a fetch, the bundle's bytes after
//! it). Requests and announce answers carry an HMAC-SHA256 over a canonical encoding of their
//! fields (each field length-prefixed, so no two messages encode alike), never over the JSON
//! text, whose spacing and order are not fixed.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};

use super::{Keys, Refusal, State};
use crate::bundle;

pub const VERSION: u32 = 1;
/// No request or answer line needs more.
pub const MAX_LINE_BYTES: u64 = 64 * 1024;

/// What a node asks its peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Primary to secondary: this is my configuration now.
    Announce { version: u32, node: String, generation: u64, sha256: String, hmac: String },
    /// Secondary to primary: send me this bundle.
    Fetch { version: u32, sha256: String, hmac: String },
}

impl Request {
    pub fn announce(keys: &Keys, node: &str, generation: u64, sha256: &str) -> Self {
        let hmac = keys.sign(&announce_bytes(node, generation, sha256));
        Self::Announce {
            version: VERSION,
            node: node.to_owned(),
            generation,
            sha256: sha256.to_owned(),
            hmac,
        }
    }

    pub fn fetch(keys: &Keys, sha256: &str) -> Self {
        let hmac = keys.sign(&fetch_bytes(sha256));
        Self::Fetch { version: VERSION, sha256: sha256.to_owned(), hmac }
    }

    /// Whether the HMAC is right for the fields.
    pub fn authentic(&self, keys: &Keys) -> bool {
        match self {
            Self::Announce { node, generation, sha256, hmac, .. } => {
                keys.verify(&announce_bytes(node, *generation, sha256), hmac)
            }
            Self::Fetch { sha256, hmac, .. } => keys.verify(&fetch_bytes(sha256), hmac),
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            Self::Announce { version, .. } | Self::Fetch { version, .. } => *version,
        }
    }

    fn hmac(&self) -> &str {
        match self {
            Self::Announce { hmac, .. } | Self::Fetch { hmac, .. } => hmac,
        }
    }
}

fn fetch_bytes(sha256: &str) -> Vec<u8> {
    canonical(&[b"fetch", sha256.as_bytes()])
}

fn announce_bytes(node: &str, generation: u64, sha256: &str) -> Vec<u8> {
    canonical(&[b"announce", node.as_bytes(), &generation.to_be_bytes(), sha256.as_bytes()])
}

/// What an announcement asks of a secondary, once [`check_announcement`] let it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announced {
    /// The generation and bundle this node already runs.
    Current,
    /// A newer generation: fetch, extract, validate and swap it in.
    Newer,
}

/// The checks a secondary makes of an announcement before it fetches anything: this protocol's
/// version, an HMAC that one of `keys` makes, a SHA-256 for a bundle name, and a generation
/// above `running` (unless it is exactly the one running).
pub fn check_announcement(request: &Request, keys: &Keys, running: &State) -> Result<Announced, Refusal> {
    let Request::Announce { version, node, generation, sha256, .. } = request else {
        return Err(Refusal::new("bad_request", "not an announcement"));
    };
    if *version != VERSION {
        return Err(Refusal::new("bad_request", format!("an announcement of protocol version {version}")));
    }
    if !request.authentic(keys) {
        return Err(Refusal::new(
            "bad_hmac",
            format!("an announcement from {node:?} whose HMAC no key of this node makes"),
        ));
    }
    if bundle::parse_file_name(&bundle::file_name(sha256)).is_none() {
        return Err(Refusal::new("bad_request", format!("an announcement of {sha256:?}, not a SHA-256")));
    }
    let State { generation: running, sha256: running_sha } = running;
    if generation == running && running_sha.as_deref() == Some(sha256.as_str()) {
        return Ok(Announced::Current);
    }
    if generation <= running {
        return Err(Refusal::new(
            "replay",
            format!(
                "generation {generation} from {node:?} is not above generation {running}, which this node runs"
            ),
        ));
    }
    Ok(Announced::Newer)
}

/// What the secondary did with an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fetched, validated, swapped in and reloaded.
    Applied,
    /// Already running this generation and bundle.
    Current,
    /// Refused: the running configuration stays; `reason` says why.
    Refused,
}

/// The secondary's answer to an announcement: its generation and bundle after it, signed over
/// those and the announcement's own HMAC, so that it cannot be replayed for another one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub version: u32,
    pub outcome: Outcome,
    pub generation: u64,
    pub sha256: Option<String>,
    /// A short label (`replay`, `bad_hmac`, `invalid_config`, ...), for metrics.
    pub reason: Option<String>,
    /// The whole story, for the log.
    pub detail: Option<String>,
    pub hmac: String,
}

impl Answer {
    pub fn new(
        keys: &Keys,
        to: &Request,
        outcome: Outcome,
        state: (u64, Option<&str>),
        why: Option<(&str, String)>,
    ) -> Self {
        let (generation, sha256) = state;
        let (reason, detail) =
            why.map_or((None, None), |(reason, detail)| (Some(reason.to_owned()), Some(detail)));
        let mut answer = Self {
            version: VERSION,
            outcome,
            generation,
            sha256: sha256.map(str::to_owned),
            reason,
            detail,
            hmac: String::new(),
        };
        answer.hmac = keys.sign(&answer.signed_bytes(to));
        answer
    }

    /// Whether this answers `to` and was signed with a key of the pair.
    pub fn authentic(&self, keys: &Keys, to: &Request) -> bool {
        keys.verify(&self.signed_bytes(to), &self.hmac)
    }

    fn signed_bytes(&self, to: &Request) -> Vec<u8> {
        let outcome = match self.outcome {
            Outcome::Applied => "applied",
            Outcome::Current => "current",
            Outcome::Refused => "refused",
        };
        canonical(&[
            b"answer",
            to.hmac().as_bytes(),
            outcome.as_bytes(),
            &self.generation.to_be_bytes(),
            self.sha256.as_deref().unwrap_or("").as_bytes(),
            self.reason.as_deref().unwrap_or("").as_bytes(),
            self.detail.as_deref().unwrap_or("").as_bytes(),
        ])
    }
}

/// The primary's answer to a fetch; `bytes` of bundle follow the line when `found`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchAnswer {
    pub version: u32,
    pub found: bool,
    pub bytes: u64,
    /// Why not, when not found.
    pub detail: Option<String>,
}

/// `libraflux-replication-v1`, then each part as a 4-byte big-endian length and its bytes.
fn canonical(parts: &[&[u8]]) -> Vec<u8> {
    let mut bytes = b"libraflux-replication-v1".to_vec();
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(part);
    }
    bytes
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before a whole line")]
    Truncated,
    #[error("a line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("not a message of this protocol: {0}")]
    Malformed(serde_json::Error),
}

/// Reads one line of at most [`MAX_LINE_BYTES`] and parses it.
pub async fn read_line<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<T, WireError> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).await?;
    if line.last() != Some(&b'\n') {
        return Err(if read as u64 > MAX_LINE_BYTES { WireError::TooLong } else { WireError::Truncated });
    }
    serde_json::from_slice(&line).map_err(WireError::Malformed)
}

pub async fn write_line<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &T,
) -> Result<(), WireError> {
    let mut line = serde_json::to_vec(message).expect("messages serialise");
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::from_bytes(vec![vec![byte; 32]])
    }

    #[test]
    fn a_changed_field_or_another_key_breaks_the_hmac() {
        let request = Request::announce(&keys(1), "lb-a", 7, "ab");
        assert!(request.authentic(&keys(1)));
        assert!(!request.authentic(&keys(2)));
        let Request::Announce { version, node, generation, sha256, hmac } = request.clone() else {
            unreachable!()
        };
        for forged in [
            Request::Announce {
                version,
                node: node.clone(),
                generation: generation + 1,
                sha256: sha256.clone(),
                hmac: hmac.clone(),
            },
            Request::Announce {
                version,
                node: node.clone(),
                generation,
                sha256: "ac".into(),
                hmac: hmac.clone(),
            },
            Request::Announce {
                version,
                node: "lb-b".into(),
                generation,
                sha256: sha256.clone(),
                hmac: hmac.clone(),
            },
            Request::Fetch { version, sha256, hmac },
        ] {
            assert!(!forged.authentic(&keys(1)), "{forged:?}");
        }
    }

    #[test]
    fn an_answer_is_bound_to_its_request() {
        let (first, second) =
            (Request::announce(&keys(1), "lb-a", 7, "ab"), Request::announce(&keys(1), "lb-a", 8, "cd"));
        let answer =
            Answer::new(&keys(1), &first, Outcome::Refused, (9, Some("ef")), Some(("replay", "old".into())));
        assert!(answer.authentic(&keys(1), &first));
        assert!(!answer.authentic(&keys(1), &second), "replayed for another announcement");
        let mut changed = answer.clone();
        changed.outcome = Outcome::Applied;
        assert!(!changed.authentic(&keys(1), &first));
    }

    #[test]
    fn field_boundaries_are_part_of_the_signed_bytes() {
        assert_ne!(canonical(&[b"ab", b"c"]), canonical(&[b"a", b"bc"]));
    }

    #[tokio::test]
    async fn lines_are_bounded_and_must_be_whole() {
        let request = Request::fetch(&keys(1), "ab");
        let mut bytes = Vec::new();
        write_line(&mut bytes, &request).await.unwrap();
        let parsed: Request = read_line(&mut BufReader::new(&bytes[..])).await.unwrap();
        assert_eq!(parsed, request);
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(read_line::<Request, _>(&mut BufReader::new(cut)).await, Err(WireError::Truncated)));
        let long = vec![b' '; MAX_LINE_BYTES as usize + 10];
        assert!(matches!(
            read_line::<Request, _>(&mut BufReader::new(&long[..])).await,
            Err(WireError::TooLong)
        ));
        let unknown =
            b"{\"message\":\"fetch\",\"version\":1,\"sha256\":\"ab\",\"hmac\":\"00\",\"extra\":1}\n";
        assert!(matches!(
            read_line::<Request, _>(&mut BufReader::new(&unknown[..])).await,
            Err(WireError::Malformed(_))
        ));
    }
}
