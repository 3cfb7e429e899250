//! `libraflux snapshot`: save the IPVS table to a checksummed file, list, show and delete the
//! files, and restore one through plan: the snapshot's services are the desired state, so a
//! restore is shown, checked and limited exactly like `apply` (docs/snapshots.md).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Context as _;
use libraflux::{
    config::{self, Config, Ignore, Limits},
    ipvs::{Ipvs as _, IpvsClient, Timeouts},
    model::{Service, ServiceKey},
    plan,
    snapshot::{self, Snapshot, SnapshotName, Store, StoreError},
};
use serde_json::json;

use super::{
    apply::RemovalArgs,
    apply::{Outcome, incomplete},
    common::{
        ConfigArg, Failure, Output, SkipChecks, exit, load_config, preflight_for, require_passed, runtime,
    },
    removals::Target,
};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Snapshot directory. Default: `snapshots.dir` of the config when it loads, else
    /// /var/lib/libraflux/snapshots.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Config file or directory: node name, snapshot directory, and for restore the ignore list
    /// and change limits. Default: /etc/libraflux/config.yaml when it exists.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: SnapshotCommand,
}

impl SnapshotArgs {
    /// `list` and `show` only read (see `Command::only_reports`).
    pub(super) fn only_reports(&self) -> bool {
        matches!(self.command, SnapshotCommand::List | SnapshotCommand::Show { .. })
    }
}

#[derive(Debug, clap::Subcommand)]
enum SnapshotCommand {
    /// Save the live IPVS table and timeouts as NAME.
    Create {
        #[command(flatten)]
        name: NameArg,
        /// Overwrite an existing snapshot of that name.
        #[arg(long)]
        force: bool,
    },
    /// Every snapshot in the directory, verified.
    List,
    /// One snapshot's content (its JSON document with --output json).
    Show {
        #[command(flatten)]
        name: NameArg,
    },
    /// Delete one snapshot file.
    Delete {
        #[command(flatten)]
        name: NameArg,
    },
    /// Make IPVS hold the snapshot again: planned, checked and limited like apply.
    Restore {
        #[command(flatten)]
        name: NameArg,
        /// Show the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go on even when the plan exceeds a change limit.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        removal: RemovalArgs,
        #[command(flatten)]
        skip: SkipChecks,
    },
}

/// A snapshot's name, as `NAME` or as `--name NAME` (the roadmap writes it so); one of them.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct NameArg {
    /// The snapshot's name: letters, digits, `.`, `_` and `-`, not starting with `.`.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    positional: Option<SnapshotName>,
    /// The same, as an option.
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    option: Option<SnapshotName>,
}

impl NameArg {
    fn get(&self) -> &SnapshotName {
        self.positional.as_ref().or(self.option.as_ref()).expect("clap requires one of them")
    }
}

fn parse_name(text: &str) -> Result<SnapshotName, String> {
    text.parse().map_err(|err: snapshot::NameError| err.to_string())
}

pub fn run(args: &SnapshotArgs, daemon: &libraflux::control::Client) -> anyhow::Result<()> {
    let config = optional_config(args.config.as_deref())?;
    let dir = args.dir.clone().or_else(|| config.as_ref().map(|config| config.snapshots.dir.clone()));
    let store = Store::new(dir.unwrap_or_else(|| snapshot::DEFAULT_DIR.into()));
    match &args.command {
        SnapshotCommand::Create { name, force } => {
            create(&store, config.as_ref(), name.get(), *force, args.output)
        }
        SnapshotCommand::List => list(&store, args.output),
        SnapshotCommand::Show { name } => show(&store, name.get(), args.output),
        SnapshotCommand::Delete { name } => {
            let name = name.get();
            store.delete(name).map_err(store_failure)?;
            match args.output {
                Output::Text => println!("Deleted snapshot {name}."),
                Output::Json => println!("{}", json!({ "deleted": name.as_str() })),
            }
            Ok(())
        }
        SnapshotCommand::Restore { name, dry_run, force, removal, skip } => {
            let name = name.get();
            refuse_under_a_running_daemon(daemon, *dry_run)?;
            let restore =
                Restore { dry_run: *dry_run, force: *force, removal, skip: &skip.names, output: args.output };
            restore.run(&store, config.as_ref(), name)?;
            if !*dry_run {
                let at = libraflux::drain::now_ms();
                if let Err(err) = snapshot::record_rollback(store.dir(), name, at) {
                    eprintln!("warning: restored, but could not record the rollback: {err}");
                }
            }
            Ok(())
        }
    }
}

/// A running daemon converges IPVS back to its config within one reconcile interval, so a
/// restore under it would be silently undone: refuse, and say what to do instead.
fn refuse_under_a_running_daemon(daemon: &libraflux::control::Client, dry_run: bool) -> anyhow::Result<()> {
    super::common::refuse_beside_a_daemon(
        daemon,
        dry_run,
        "it converges IPVS to its config and would undo the restore within one reconcile interval. Roll \
         back the config instead, or stop the daemon first",
    )
}

/// The config named by `-c` (which must load), else the default one when it exists. A default
/// config that fails to load is reported and left out: a rollback must not depend on it.
fn optional_config(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    if let Some(path) = path {
        return load_config(&ConfigArg { path: Some(path.to_owned()) }).map(Some);
    }
    let default = Path::new(config::DEFAULT_DIR).join("config.yaml");
    if !default.exists() {
        return Ok(None);
    }
    match config::load(None) {
        Ok(config) => Ok(Some(config)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "warning: the configuration in {} does not load; going on without it (no ignore list, default limits)",
                config::DEFAULT_DIR
            );
            Ok(None)
        }
    }
}

/// A store error as a failure: a corrupt snapshot is bad data (65), anything else exit 1.
fn store_failure(err: StoreError) -> anyhow::Error {
    let code = match err {
        StoreError::Corrupt { .. } => exit::INVALID_DATA,
        _ => exit::RUNTIME_FAILURE,
    };
    Failure::new(code, err.to_string()).into()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn node_name(config: Option<&Config>) -> String {
    config.map_or_else(config::system_hostname, |config| config.node.name.clone())
}

async fn connect() -> anyhow::Result<IpvsClient> {
    IpvsClient::connect()
        .await
        .map_err(|err| Failure::new(exit::RUNTIME_FAILURE, format!("cannot reach IPVS: {err}")).into())
}

fn create(
    store: &Store,
    config: Option<&Config>,
    name: &SnapshotName,
    force: bool,
    output: Output,
) -> anyhow::Result<()> {
    let snapshot = runtime()?.block_on(async {
        let mut client = connect().await?;
        let observed = libraflux::ipvs::observed(&mut client).await.context("reading the IPVS table")?;
        let timeouts = client.timeouts().await.context("reading the IPVS timeouts")?;
        anyhow::Ok(Snapshot::new(&node_name(config), now_rfc3339(), timeouts, &observed))
    })?;
    let path = store.write(name, &snapshot, force).map_err(store_failure)?;
    match output {
        Output::Text => println!(
            "Snapshot {name} taken: {} services, {} destinations, {} ({}).",
            snapshot.services.len(),
            snapshot.destination_count(),
            path.display(),
            snapshot.checksum
        ),
        Output::Json => println!("{:#}", summary(name, &snapshot, &path)),
    }
    Ok(())
}

fn summary(name: &SnapshotName, snapshot: &Snapshot, path: &Path) -> serde_json::Value {
    json!({
        "name": name.as_str(),
        "path": path,
        "node": snapshot.node,
        "created_at": snapshot.created_at,
        "services": snapshot.services.len(),
        "destinations": snapshot.destination_count(),
        "checksum": snapshot.checksum,
    })
}

fn list(store: &Store, output: Output) -> anyhow::Result<()> {
    let entries = store.list().map_err(store_failure)?;
    match output {
        Output::Text => {
            if entries.is_empty() {
                println!("No snapshots in {}.", store.dir().display());
            }
            for entry in &entries {
                match &entry.snapshot {
                    Ok(s) => println!(
                        "{}  {}  node {}  {} services  {} destinations",
                        entry.name,
                        s.created_at,
                        s.node,
                        s.services.len(),
                        s.destination_count()
                    ),
                    Err(err) => println!("{}  unreadable: {err}", entry.name),
                }
            }
        }
        Output::Json => {
            let items: Vec<serde_json::Value> = entries
                .iter()
                .map(|entry| match &entry.snapshot {
                    Ok(snapshot) => summary(&entry.name, snapshot, &store.path(&entry.name)),
                    Err(err) => json!({ "name": entry.name.as_str(), "error": err.to_string() }),
                })
                .collect();
            println!("{:#}", json!({ "dir": store.dir(), "snapshots": items }));
        }
    }
    Ok(())
}

fn show(store: &Store, name: &SnapshotName, output: Output) -> anyhow::Result<()> {
    let snapshot = store.read(name).map_err(store_failure)?;
    match output {
        Output::Json => print!("{}", String::from_utf8_lossy(&snapshot.to_bytes())),
        Output::Text => {
            println!("Snapshot {name} of node {}, taken {}", snapshot.node, snapshot.created_at);
            println!("Checksum {} (verified)", snapshot.checksum);
            let t = snapshot.timeouts;
            println!("Timeouts: tcp {}s, tcp_fin {}s, udp {}s", t.tcp, t.tcp_fin, t.udp);
            for service in &snapshot.services {
                let persistence =
                    service.persistence.map(|seconds| format!(" persistent {seconds}s")).unwrap_or_default();
                println!("{} {}{persistence}", service.key, service.scheduler);
                for dest in &service.destinations {
                    println!("  -> {} {} weight {}", dest.key, dest.forwarding, dest.weight);
                }
            }
        }
    }
    Ok(())
}

struct Restore<'a> {
    dry_run: bool,
    force: bool,
    removal: &'a RemovalArgs,
    skip: &'a [String],
    output: Output,
}

impl Restore<'_> {
    fn run(&self, store: &Store, config: Option<&Config>, name: &SnapshotName) -> anyhow::Result<()> {
        let snapshot = store.read(name).map_err(store_failure)?;
        let desired = snapshot.desired();
        // Without a config nothing is ignored and the default limits apply.
        let (ignore, limits) = config.map_or_else(
            || (Ignore::default(), Limits::default()),
            |config| (config.ignore.clone(), config.limits),
        );
        let (interfaces, expected) = config.map_or((&[][..], None), |config| {
            (&config.node.interfaces[..], config.node.expected_connections)
        });
        runtime()?.block_on(async {
            let sync = config.and_then(|config| config.sync.as_ref());
            let (client, report) = preflight_for(&desired, interfaces, expected, sync, self.skip).await?;
            let mut outcome = Outcome {
                output: self.output,
                json: json!({ "dry_run": self.dry_run, "snapshot": name.as_str() }),
            };
            outcome.preflight(&report);
            let checks = require_passed(&report);
            let can_plan = self.dry_run && client.is_ok();
            if checks.is_err() && !can_plan {
                outcome.finish();
                return checks;
            }
            let mut client = client.map_err(|why| Failure::new(exit::RUNTIME_FAILURE, why))?;
            let target = Target { desired: &desired, ignore: &ignore, settings: config.map(|c| &c.settings) };
            let interfaces = config.map_or(&[][..], |c| c.node.interfaces.as_slice());
            self.restore(&mut client, &mut outcome, &snapshot, target, &limits, interfaces).await?;
            checks
        })
    }

    async fn restore(
        &self,
        client: &mut IpvsClient,
        outcome: &mut Outcome,
        snapshot: &Snapshot,
        target: Target<'_>,
        limits: &Limits,
        interfaces: &[String],
    ) -> anyhow::Result<()> {
        let observed = libraflux::ipvs::observed(client).await?;
        let none = std::collections::BTreeSet::new();
        let plan = target.plan(&observed, self.removal.removal(&none));
        outcome.plan(&plan);
        let current = client.timeouts().await.context("reading the IPVS timeouts")?;
        let wanted: Timeouts = snapshot.timeouts.into();
        let timeouts_change = current != wanted;
        timeouts_line(outcome, current, wanted);
        let refusal =
            "the restore exceeds a change limit; nothing was changed (use --force to restore anyway)";
        let intent = plan::plan(target.desired, &observed, target.ignore);
        outcome.enforce_limits(&intent, limits, self.force, refusal)?;
        if self.dry_run || (plan.is_empty() && plan.leaving.is_empty() && !timeouts_change) {
            outcome.finish();
            return Ok(());
        }
        let phases = plan.phases();
        let (executed, shield) = libraflux::apply::execute_alone(client, &phases, interfaces).await;
        outcome.applied(&executed);
        outcome.shield(&shield);
        if !executed.is_complete() {
            outcome.finish();
            return incomplete(&executed, "restore");
        }
        if timeouts_change && let Err(err) = client.set_timeouts(wanted).await {
            outcome.finish();
            return Err(Failure::new(exit::RUNTIME_FAILURE, format!("setting the timeouts: {err}")).into());
        }
        if plan.leaving.is_empty() {
            outcome.finish();
            return Ok(());
        }
        super::removals::finish(client, target, &plan.leaving, self.removal.no_wait, outcome).await
    }
}

/// The timeouts as part of the plan: a line when they change, and always in JSON.
fn timeouts_line(outcome: &mut Outcome, current: Timeouts, wanted: Timeouts) {
    match outcome.output {
        Output::Text if current != wanted => println!(
            "~ timeouts: tcp {} -> {}, tcp_fin {} -> {}, udp {} -> {}",
            current.tcp, wanted.tcp, current.tcp_fin, wanted.tcp_fin, current.udp, wanted.udp
        ),
        Output::Text => {}
        Output::Json => {
            let as_json = |t: Timeouts| json!({ "tcp": t.tcp, "tcp_fin": t.tcp_fin, "udp": t.udp });
            outcome.json["timeouts"] = json!({ "current": as_json(current), "wanted": as_json(wanted), "change": current != wanted });
        }
    }
}

/// An automatic snapshot taken by apply.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) name: SnapshotName,
    dir: Option<PathBuf>,
}

impl Taken {
    pub(super) fn message(&self) -> String {
        let dir = self.dir.as_ref().map(|dir| format!(" --dir {}", dir.display())).unwrap_or_default();
        format!(
            "Snapshot {name} taken; restore with: libraflux snapshot restore {name}{dir}",
            name = self.name
        )
    }
}

/// Saves `observed` (the whole table apply is about to change) as `pre-apply-<UTC time>` in the
/// configured directory, then prunes the automatic snapshots to `snapshots.keep`.
pub(super) async fn take_automatic(
    client: &mut IpvsClient,
    observed: &BTreeMap<ServiceKey, Service>,
    config: &Config,
) -> anyhow::Result<Taken> {
    let timeouts =
        client.timeouts().await.context("taking the pre-apply snapshot: reading the IPVS timeouts")?;
    let now = SystemTime::now();
    let created_at = humantime::format_rfc3339_seconds(now).to_string();
    let snapshot = Snapshot::new(&config.node.name, created_at, timeouts, observed);
    let store = Store::new(&config.snapshots.dir);
    let base = snapshot::auto_name(now);
    // Two applies within one second: the second gets `-2`, which still sorts after the first.
    let mut name = base.clone();
    for attempt in 2.. {
        match store.write(&name, &snapshot, false) {
            Ok(_) => break,
            Err(StoreError::Exists(_)) if attempt < 100 => {
                name = format!("{base}-{attempt}").parse().expect("a valid name with a suffix");
            }
            Err(err) => return Err(anyhow::Error::new(err).context("taking the pre-apply snapshot")),
        }
    }
    let keep = usize::try_from(config.snapshots.keep).unwrap_or(usize::MAX);
    if let Err(err) = store.prune_auto(keep) {
        eprintln!("warning: pruning old automatic snapshots: {err}");
    }
    let dir =
        (config.snapshots.dir != Path::new(snapshot::DEFAULT_DIR)).then(|| config.snapshots.dir.clone());
    Ok(Taken { name, dir })
}
