//! The listener both roles run: a primary serves bundle fetches, a secondary takes
//! announcements. Each connection carries one request.

use std::{io, path::Path, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

use super::{
    Context, Incoming, Refusal, store,
    wire::{self, Announced, Answer, FetchAnswer, Outcome, Request, VERSION},
};
use crate::{bundle, config::Role};

/// A peer must send its request within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the primary and reading a bundle from it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn serve(listener: TcpListener, context: Arc<Context>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    if let Err(err) = connection(stream, &context).await {
                        tracing::warn!(%peer, error = %err, "replication connection failed");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "replication listener: cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, context: &Context) -> Result<(), wire::WireError> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let request =
        match tokio::time::timeout(REQUEST_TIMEOUT, wire::read_line::<Request, _>(&mut reader)).await {
            Ok(Ok(request)) => request,
            Ok(Err(err)) => {
                context.failed("bad_request", &format!("a request that is not one: {err}"));
                return Err(err);
            }
            Err(_) => return Err(io::Error::from(io::ErrorKind::TimedOut).into()),
        };
    match (&request, context.settings.role) {
        (Request::Fetch { sha256, .. }, Role::Primary) => {
            let (answer, bytes) = fetched(context, &request, sha256).await;
            wire::write_line(&mut writer, &answer).await?;
            if let Some(bytes) = bytes {
                writer.write_all(&bytes).await?;
                writer.shutdown().await?;
            }
        }
        (Request::Announce { .. }, Role::Secondary) => {
            let answer = announced(context, &request).await;
            wire::write_line(&mut writer, &answer).await?;
        }
        (_, role) => {
            let detail = format!("this node is a replication {role}: it does not take this request");
            context.failed("role", &detail);
            let state = context.state();
            let why = Some(("role", detail));
            let answer = Answer::new(
                &context.keys,
                &request,
                Outcome::Refused,
                (state.generation, state.sha256.as_deref()),
                why,
            );
            wire::write_line(&mut writer, &answer).await?;
        }
    }
    Ok(())
}

/// A primary's answer to a fetch: the bundle, if the request is signed and names one it has.
async fn fetched(context: &Context, request: &Request, sha256: &str) -> (FetchAnswer, Option<Vec<u8>>) {
    let refuse = |reason: &str, detail: String| {
        context.failed(reason, &detail);
        (FetchAnswer { version: VERSION, found: false, bytes: 0, detail: Some(detail) }, None)
    };
    if request.version() != VERSION {
        return refuse("bad_request", format!("a fetch of protocol version {}", request.version()));
    }
    if !request.authentic(&context.keys) {
        return refuse("bad_hmac", "a fetch whose HMAC no key of this node makes".to_owned());
    }
    if bundle::parse_file_name(&bundle::file_name(sha256)).is_none() {
        return refuse("bad_request", format!("a fetch of {sha256:?}, not a SHA-256"));
    }
    let path = context.paths.bundles_dir.join(bundle::file_name(sha256));
    match read(&path).await {
        Ok(bytes) => (
            FetchAnswer { version: VERSION, found: true, bytes: bytes.len() as u64, detail: None },
            Some(bytes),
        ),
        Err(err) => refuse("fetch_failed", format!("cannot serve {}: {err}", path.display())),
    }
}

/// A secondary's answer to an announcement, after it put the configuration in force or refused it.
async fn announced(context: &Context, request: &Request) -> Answer {
    let _turn = context.turn.lock().await;
    let result = take(context, request).await;
    let state = context.state();
    let (outcome, why) = match result {
        Ok(outcome) => {
            context.succeeded(None);
            (outcome, None)
        }
        Err(Refusal { reason, detail }) => {
            context.failed(reason, &detail);
            (Outcome::Refused, Some((reason, detail)))
        }
    };
    Answer::new(&context.keys, request, outcome, (state.generation, state.sha256.as_deref()), why)
}

async fn take(context: &Context, request: &Request) -> Result<Outcome, Refusal> {
    let Request::Announce { node, generation, sha256, .. } = request else {
        return Err(Refusal::new("bad_request", "not an announcement"));
    };
    if wire::check_announcement(request, &context.keys, &context.state())? == Announced::Current {
        return Ok(Outcome::Current);
    }
    let bytes = bundle_bytes(context, sha256).await?;
    let dir = store::generation_dir(&context.paths.replicated(), *generation, sha256);
    let (sha, limits, into) = (sha256.clone(), context.limits, dir.clone());
    let extracted = tokio::task::spawn_blocking(move || {
        if into.exists() {
            std::fs::remove_dir_all(&into)
                .map_err(|err| Refusal::new("io", format!("{}: {err}", into.display())))?;
        }
        if let Some(parent) = into.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| Refusal::new("io", format!("{}: {err}", parent.display())))?;
        }
        bundle::extract(&bytes, &sha, &into, &limits)
            .map_err(|err| Refusal::new(err.reason(), err.to_string()))
    })
    .await
    .unwrap_or_else(|err| Err(Refusal::new("io", format!("extraction failed: {err}"))));
    extracted?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let incoming = Incoming { generation: *generation, sha256: sha256.clone(), dir: dir.clone(), reply };
    if context.apply.send(incoming).await.is_err() {
        return Err(Refusal::new("failed", "the daemon is stopping"));
    }
    match answer.await {
        Ok(Ok(())) => {
            tracing::info!(generation, %sha256, %node, "replicated configuration in force");
            Ok(Outcome::Applied)
        }
        Ok(Err(refusal)) => {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            Err(refusal)
        }
        Err(_) => Err(Refusal::new("failed", "the daemon stopped before it answered")),
    }
}

/// The bundle's bytes: from this node's bundle directory if they are there and whole, from the
/// primary otherwise (and then kept); their hash checked either way.
async fn bundle_bytes(context: &Context, sha256: &str) -> Result<Vec<u8>, Refusal> {
    let path = context.paths.bundles_dir.join(bundle::file_name(sha256));
    if let Ok(bytes) = read(&path).await
        && bundle::sha256_hex(&bytes) == sha256
    {
        return Ok(bytes);
    }
    let bytes = fetch(context, sha256).await?;
    if bundle::sha256_hex(&bytes) != sha256 {
        return Err(Refusal::new(
            "hash_mismatch",
            format!("the bundle fetched from {} does not hash to {sha256}", context.settings.peer),
        ));
    }
    let (dir, name, kept) = (context.paths.bundles_dir.clone(), bundle::file_name(sha256), bytes.clone());
    let written =
        tokio::task::spawn_blocking(move || crate::state_file::write_atomic(&dir, &name, &kept)).await;
    if let Ok(Err((step, path, err))) = written {
        tracing::warn!("cannot keep the fetched bundle: {step} {}: {err}", path.display());
    }
    Ok(bytes)
}

async fn fetch(context: &Context, sha256: &str) -> Result<Vec<u8>, Refusal> {
    let peer = context.settings.peer;
    let failed = |detail: String| {
        Refusal::new("fetch_failed", format!("fetching bundle {sha256} from {peer}: {detail}"))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
        .await
        .map_err(|_| failed("no connection within 10s".to_owned()))?
        .map_err(|err| failed(err.to_string()))?;
    let exchange = async {
        let (reader, mut writer) = stream.into_split();
        wire::write_line(&mut writer, &Request::fetch(&context.keys, sha256))
            .await
            .map_err(|err| failed(err.to_string()))?;
        let mut reader = BufReader::new(reader);
        let answer: FetchAnswer =
            wire::read_line(&mut reader).await.map_err(|err| failed(err.to_string()))?;
        if !answer.found {
            return Err(failed(answer.detail.unwrap_or_else(|| "not found".to_owned())));
        }
        let limit = context.limits.max_bundle_bytes();
        if answer.bytes > limit {
            return Err(Refusal::new(
                "too_large",
                format!("bundle {sha256} is {} bytes, over the limit of {limit}", answer.bytes),
            ));
        }
        let mut bytes = Vec::with_capacity(answer.bytes as usize);
        (&mut reader)
            .take(answer.bytes)
            .read_to_end(&mut bytes)
            .await
            .map_err(|err| failed(err.to_string()))?;
        if bytes.len() as u64 != answer.bytes {
            return Err(failed(format!(
                "{} of {} bytes before the connection closed",
                bytes.len(),
                answer.bytes
            )));
        }
        Ok(bytes)
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| failed("not done within 60s".to_owned()))?
}

async fn read(path: &Path) -> io::Result<Vec<u8>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || std::fs::read(path)).await.map_err(io::Error::other)?
}
