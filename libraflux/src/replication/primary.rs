//! The primary's announcer: offers the bundle of the configuration in force to the secondary
//! until it answers, then again every [`REANNOUNCE`] (so a secondary that lost its state, or
//! refused for a reason since fixed, catches up), retrying an unreachable one with backoff.

use std::{sync::Arc, time::Duration};

use tokio::{io::BufReader, net::TcpStream, sync::watch};

use super::{
    Context, State,
    wire::{self, Answer, Outcome, Request},
};

/// How often a bundle the secondary already answered for is offered again.
pub const REANNOUNCE: Duration = Duration::from_secs(30);
/// Retries of an unreachable secondary start at 1 s and double up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The secondary answers once it has fetched, validated and reconciled: a large configuration
/// takes a while.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn announce(context: Arc<Context>, mut target: watch::Receiver<Option<String>>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(sha256) = target.borrow_and_update().clone() else {
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        let state = next_generation(&context, &sha256).await;
        let wait = match offer(&context, &state).await {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                match answer.outcome {
                    Outcome::Applied | Outcome::Current => {
                        if answer.outcome == Outcome::Applied {
                            tracing::info!(
                                generation = state.generation,
                                "the secondary put the configuration in force"
                            );
                        }
                        context.succeeded(Some(answer.generation));
                    }
                    Outcome::Refused if refused(&context, &state, &answer).await => continue,
                    Outcome::Refused => {}
                }
                REANNOUNCE
            }
            Err((reason, detail)) => {
                context.failed(reason, &detail);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        // A new bundle is announced at once; otherwise the same one again after `wait`.
        let _ = tokio::time::timeout(wait, target.changed()).await;
    }
}

/// The generation of `sha256`: the one announced last if it is the same bundle, one above it
/// otherwise (written down before it is announced, so generations only grow).
async fn next_generation(context: &Context, sha256: &str) -> State {
    let state = context.state();
    if state.sha256.as_deref() == Some(sha256) {
        return state;
    }
    let next = State { generation: state.generation + 1, sha256: Some(sha256.to_owned()) };
    save(context, next).await
}

async fn save(context: &Context, state: State) -> State {
    let (dir, saved) = (context.paths.state_dir.clone(), state.clone());
    match tokio::task::spawn_blocking(move || saved.save(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            context.failed("io", &format!("cannot record generation {}: {err}", state.generation))
        }
        Err(err) => context.failed("io", &format!("cannot record generation {}: {err}", state.generation)),
    }
    context.set_state(state.clone());
    state
}

/// A refusal is recorded with the secondary's reason. A secondary that runs a generation above
/// this one (this node's state was lost, or the roles were swapped) refuses it as a replay: the
/// bundle is then announced again, at once, above the secondary's generation (true).
async fn refused(context: &Context, state: &State, answer: &Answer) -> bool {
    let reason = answer.reason.as_deref().unwrap_or("other");
    let detail = answer.detail.as_deref().unwrap_or("no detail");
    context.failed(reason, &format!("the secondary refused generation {}: {detail}", state.generation));
    if reason == "replay" && answer.generation >= state.generation {
        let above = State { generation: answer.generation + 1, sha256: state.sha256.clone() };
        tracing::warn!(
            secondary = answer.generation,
            generation = above.generation,
            "the secondary runs a later generation than this primary announced; announcing again above it"
        );
        save(context, above).await;
        return true;
    }
    false
}

async fn offer(context: &Context, state: &State) -> Result<Answer, (&'static str, String)> {
    let peer = context.settings.peer;
    let sha256 = state.sha256.as_deref().unwrap_or_default();
    let request = Request::announce(&context.keys, &context.node, state.generation, sha256);
    let unreachable = |detail: String| {
        ("unreachable", format!("announcing generation {} to {peer}: {detail}", state.generation))
    };
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(peer))
        .await
        .map_err(|_| unreachable("no connection within 10s".to_owned()))?
        .map_err(|err| unreachable(err.to_string()))?;
    let (reader, mut writer) = stream.into_split();
    wire::write_line(&mut writer, &request).await.map_err(|err| unreachable(err.to_string()))?;
    let answer: Answer = tokio::time::timeout(ANSWER_TIMEOUT, wire::read_line(&mut BufReader::new(reader)))
        .await
        .map_err(|_| unreachable("no answer within 120s".to_owned()))?
        .map_err(|err| {
            ("bad_answer", format!("{peer} answered generation {} with {err}", state.generation))
        })?;
    if !answer.authentic(&context.keys, &request) {
        return Err((
            "bad_answer",
            format!("{peer}'s answer to generation {} is not signed by a key of this node", state.generation),
        ));
    }
    Ok(answer)
}
