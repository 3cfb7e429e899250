//! `libraflux bundle create|verify`: the replicated part of the configuration (`config.d`) as one
//! content-addressed file, and the check a secondary makes of one (docs/configuration.md,
//! "Bundles"). The work is [`libraflux::bundle`]'s; this file parses, calls and prints.

use std::path::PathBuf;

use libraflux::{
    bundle::{self, BundleError, BundleFile},
    config,
};
use serde_json::json;

use super::common::{ConfigArg, DEFAULT_STATE_DIR, Failure, Output, exit, invalid_config, load_config, warn};

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    command: BundleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BundleCommand {
    /// Validate the configuration, then bundle its config.d/*.yaml into
    /// STATE_DIR/bundles/bundle-<sha256>.tar.gz.
    Create(CreateArgs),
    /// Check a bundle file (name, hash, content), then validate this node's own files with the
    /// bundle's files in place of config.d.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// State directory: the bundle is written to STATE_DIR/bundles/.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The bundle file, named bundle-<sha256>.tar.gz.
    file: PathBuf,
    /// This node's configuration: its files outside config.d are validated with the bundle.
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &BundleArgs) -> anyhow::Result<()> {
    match &args.command {
        BundleCommand::Create(args) => create(args),
        BundleCommand::Verify(args) => verify(args),
    }
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let (drop_in_dir, _, drop_ins) = validated_drop_ins(&args.config, "bundle", "no bundle was written")?;
    let created = bundle::write_bundle(drop_ins, &args.state_dir.join("bundles"))
        .map_err(|err| refused("no bundle was written", err))?;
    match args.output {
        Output::Text => {
            println!("Bundle {}", created.path.display());
            println!("sha256 {}", created.sha256);
            println!(
                "{} of {}: {}",
                files(created.files.len()),
                drop_in_dir.display(),
                created.files.join(", ")
            );
        }
        Output::Json => println!(
            "{:#}",
            json!({
                "path": created.path,
                "sha256": created.sha256,
                "files": created.files,
                "bytes": created.bytes,
            })
        ),
    }
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let limits = bundle::Limits::default();
    let verified = bundle::verify(&args.file, &limits)
        .map_err(|err| refused(&format!("bundle {} refused", args.file.display()), err))?;
    let local = config::node_local_sources(args.config.path.as_deref())
        .map_err(|errors| invalid_config(&errors, "in this node's configuration"))?;
    let config = bundle::validate_with(local, &verified.files, &args.file).map_err(|errors| {
        invalid_config(
            &errors,
            &format!("in the configuration this node would run with bundle {}", args.file.display()),
        )
    })?;
    warn(&config);
    let names: Vec<&str> = verified.files.iter().map(|file| file.name.as_str()).collect();
    let backends: usize = config.desired.values().map(|service| service.destinations.len()).sum();
    match args.output {
        Output::Text => {
            println!("Bundle {} verified: sha256 {}", args.file.display(), verified.sha256);
            println!("{}: {}", files(names.len()), names.join(", "));
            println!(
                "With this node's configuration it is valid: {} services, {backends} backends",
                config.desired.len()
            );
        }
        Output::Json => println!(
            "{:#}",
            json!({
                "path": args.file,
                "sha256": verified.sha256,
                "files": names,
                "services": config.desired.len(),
                "backends": backends,
            })
        ),
    }
    Ok(())
}

/// The whole configuration loaded and validated as every command does, then the `*.yaml` files
/// of its config.d as [`bundle::read_drop_ins`] reads them: what `bundle create` bundles and
/// `config push` pushes. `verb` is what is done with them, `nothing` says that nothing was.
pub(super) fn validated_drop_ins(
    arg: &ConfigArg,
    verb: &str,
    nothing: &str,
) -> anyhow::Result<(PathBuf, config::Config, Vec<BundleFile>)> {
    let path = arg.path.as_deref();
    // A path that cannot be read is the loader's to report, as for every command.
    let layout = config::layout(path);
    if let (Some(file), Ok(config::Layout { drop_in_dir: None, .. })) = (path, &layout) {
        let message = format!(
            "{} is a single file, which has no config.d to {verb}; name the configuration's \
             directory with -c DIR (the default is {})",
            file.display(),
            config::DEFAULT_DIR
        );
        return Err(Failure::new(exit::USAGE, message).into());
    }
    let config = load_config(arg)?;
    let Ok(config::Layout { drop_in_dir: Some(drop_in_dir), .. }) = layout else {
        let message = "the configuration changed while it was read; try again";
        return Err(Failure::new(exit::RUNTIME_FAILURE, message).into());
    };
    let files = bundle::read_drop_ins(&drop_in_dir).map_err(|err| match err {
        BundleError::NodeLocalSection(errors) => invalid_config(
            &errors,
            &format!("in config.d: node-local sections belong in each node's own config.yaml; {nothing}"),
        ),
        BundleError::InvalidYaml(errors) => invalid_config(&errors, &format!("in config.d; {nothing}")),
        err => refused(nothing, err),
    })?;
    Ok((drop_in_dir, config, files))
}

fn files(count: usize) -> String {
    if count == 1 { "1 file".to_owned() } else { format!("{count} files") }
}

/// A bundle refused: bad data (65), with `what` happened, the reason label and the error; or an
/// I/O error, a runtime failure (1).
fn refused(what: &str, err: BundleError) -> anyhow::Error {
    match err {
        BundleError::Io { .. } => Failure::new(exit::RUNTIME_FAILURE, err.to_string()).into(),
        _ => Failure::new(exit::INVALID_DATA, format!("{what} ({}): {err}", err.reason())).into(),
    }
}
