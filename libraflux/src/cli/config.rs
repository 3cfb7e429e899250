//! `libraflux config push|diff`: a fleet's replicated configuration (`config.d`) in etcd, one key
//! per file under a prefix (docs/fleet.md, "Configuration from etcd"). The work is
//! [`libraflux::etcd::fleet`]'s; this file parses, calls and prints.

use std::path::PathBuf;

use libraflux::{
    config::{self, EtcdSource},
    etcd::{
        Client, TlsFiles,
        fleet::{self, Change, PushError, Stored},
    },
};
use serde_json::json;

use super::common::{ConfigArg, Failure, Output, exit, runtime};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

impl ConfigArgs {
    /// `diff` only reads (see `Command::only_reports`).
    pub(super) fn only_reports(&self) -> bool {
        matches!(self.command, ConfigCommand::Diff(_))
    }
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Validate the configuration as `bundle create` does, then write its config.d to etcd in one
    /// transaction that fails if another push wrote first.
    Push(StoreArgs),
    /// What a push would change in etcd, file by file; exit 0 when nothing, 1 when something.
    Diff(StoreArgs),
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// etcd client URL, https://host:port (repeatable; tried in order). Default:
    /// source.etcd.endpoints of the configuration.
    #[arg(long = "etcd-endpoint", value_name = "URL")]
    endpoints: Vec<String>,
    /// Key prefix, starting and ending with /. Default: source.etcd.prefix, else /libraflux/fleet/.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// CA certificate(s) of etcd's server certificate (PEM). Default: source.etcd.tls.ca.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), with --key; only with --ca.
    #[arg(long, value_name = "FILE", requires = "ca")]
    cert: Option<PathBuf>,
    /// Client certificate's private key (PEM), with --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    match &args.command {
        ConfigCommand::Push(args) => push(args),
        ConfigCommand::Diff(args) => diff(args),
    }
}

fn push(args: &StoreArgs) -> anyhow::Result<()> {
    let (_, config, files) = super::bundle::validated_drop_ins(&args.config, "push", "nothing was pushed")?;
    let source = store(args, &config)?;
    let client = client(&source)?;
    let (stored, revision) = runtime()?.block_on(async {
        let stored = fleet::read(&client, &source.prefix).await.map_err(failed)?;
        let revision =
            fleet::push(&client, &source.prefix, &stored, &files).await.map_err(|err| match err {
                PushError::Etcd(err) => failed(err),
                lost @ PushError::Lost { .. } => failed(lost),
            })?;
        Ok::<_, anyhow::Error>((stored, revision))
    })?;
    let changes = fleet::changes(&stored, &files);
    match args.output {
        Output::Text if changes.is_empty() => {
            println!(
                "etcd holds these files under {} already (revision {revision}); nothing was written",
                source.prefix
            );
        }
        Output::Text => {
            println!("Pushed to {} at revision {revision} (read at {}):", source.prefix, stored.revision);
            print_changes(&changes, false);
        }
        Output::Json => println!("{:#}", report(&source, &stored, &changes, Some(revision))),
    }
    Ok(())
}

fn diff(args: &StoreArgs) -> anyhow::Result<()> {
    let (_, config, files) = super::bundle::validated_drop_ins(&args.config, "push", "nothing was compared")?;
    let source = store(args, &config)?;
    let client = client(&source)?;
    let stored = runtime()?.block_on(fleet::read(&client, &source.prefix)).map_err(failed)?;
    let changes = fleet::changes(&stored, &files);
    match args.output {
        Output::Text if changes.is_empty() => {
            println!(
                "No changes: etcd holds these files under {} (revision {})",
                source.prefix, stored.revision
            );
        }
        Output::Text => {
            println!("A push to {} would change (etcd at revision {}):", source.prefix, stored.revision);
            print_changes(&changes, true);
        }
        Output::Json => println!("{:#}", report(&source, &stored, &changes, None)),
    }
    if changes.is_empty() {
        return Ok(());
    }
    // The changes are the output; the exit code says there are some, as diff(1)'s does.
    Err(Failure::new(exit::DIFFERENT, "").into())
}

/// Where to push: the command line's options over `source.etcd` of the configuration.
fn store(args: &StoreArgs, config: &config::Config) -> anyhow::Result<EtcdSource> {
    let configured = config.source.as_ref();
    let endpoints = if args.endpoints.is_empty() {
        configured.map(|source| source.endpoints.clone()).unwrap_or_default()
    } else {
        args.endpoints.clone()
    };
    if endpoints.is_empty() {
        let message = "no etcd endpoint: give --etcd-endpoint URL, or set source.etcd in the configuration";
        return Err(Failure::new(exit::USAGE, message).into());
    }
    let prefix = args
        .prefix
        .clone()
        .or_else(|| configured.map(|source| source.prefix.clone()))
        .unwrap_or_else(|| config::DEFAULT_PREFIX.to_owned());
    if prefix.len() < 2 || !prefix.starts_with('/') || !prefix.ends_with('/') {
        return Err(
            Failure::new(exit::USAGE, format!("--prefix {prefix:?}: must start and end with /")).into()
        );
    }
    let tls = match &args.ca {
        Some(ca) => Some(TlsFiles { ca: ca.clone(), cert: args.cert.clone(), key: args.key.clone() }),
        None => configured.and_then(|source| source.tls.clone()),
    };
    Ok(EtcdSource { endpoints, prefix, tls })
}

fn client(source: &EtcdSource) -> anyhow::Result<Client> {
    Client::new(&source.endpoints, source.tls.as_ref())
        .map_err(|err| Failure::new(exit::USAGE, err.to_string()).into())
}

fn failed(err: impl std::fmt::Display) -> anyhow::Error {
    Failure::new(exit::RUNTIME_FAILURE, err.to_string()).into()
}

fn print_changes(changes: &[Change], lines: bool) {
    for change in changes {
        match change {
            Change::Added { name, new } => println!("  added   {name} ({} bytes)", new.len()),
            Change::Removed { name, old } => println!("  removed {name} ({} bytes)", old.len()),
            Change::Changed { name, old, new } => {
                println!("  changed {name} ({} -> {} bytes)", old.len(), new.len());
                if lines {
                    print!("{}", line_diff(old, new));
                }
            }
        }
    }
}

/// The changed lines of a file, `-` for etcd's and `+` for the local one, with a line of context.
fn line_diff(old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    let mut out = String::new();
    for group in diff.grouped_ops(1) {
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                out.push_str(&format!("    {sign}{}", change.value()));
                if change.missing_newline() {
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn report(
    source: &EtcdSource,
    stored: &Stored,
    changes: &[Change],
    pushed: Option<i64>,
) -> serde_json::Value {
    let changes: Vec<_> = changes
        .iter()
        .map(|change| {
            let (before, after) = match change {
                Change::Added { new, .. } => (None, Some(new.len())),
                Change::Changed { old, new, .. } => (Some(old.len()), Some(new.len())),
                Change::Removed { old, .. } => (Some(old.len()), None),
            };
            json!({ "file": change.name(), "change": change.kind(), "bytes_before": before, "bytes_after": after })
        })
        .collect();
    let mut report = json!({
        "prefix": source.prefix,
        "read_revision": stored.revision,
        "changed": !changes.is_empty(),
        "changes": changes,
    });
    if let Some(revision) = pushed {
        report["revision"] = revision.into();
    }
    report
}
