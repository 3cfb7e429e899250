//! `libraflux convert nginx`: nginx `stream {}` proxies to one YAML file per converted server.
//! Exit 0: everything converted; 2: converted with warnings (each `file:line: what to do`);
//! 65: the input cannot be read or parsed, or the result does not validate; 3: a file exists and
//! `--force` was not given. Nothing is written unless everything before writing succeeded.

use std::{io::Write as _, net::IpAddr, path::PathBuf};

use libraflux::convert::{
    Conversion, Warning,
    nginx::{self, Options},
    output::{self, OutputFile},
};

use super::common::{Failure, Output, exit};

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    #[command(subcommand)]
    from: From,
}

#[derive(Debug, clap::Subcommand)]
enum From {
    /// nginx `stream {}` proxies (TCP and UDP, IPv4 and IPv6), with the files it includes.
    Nginx(NginxArgs),
}

#[derive(Debug, clap::Args)]
struct NginxArgs {
    /// The main nginx configuration file; relative includes are resolved against its directory.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write one YAML file per converted server (a config.d directory, for instance).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// The VIP for `listen`s without an address (`listen 53`, `listen [::]:53`): at most one
    /// IPv4 and one IPv6 address.
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<IpAddr>,
    /// Print the files instead of writing them.
    #[arg(long)]
    dry_run: bool,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
    /// `json` prints the files, services and warnings as one JSON document.
    #[arg(long, value_enum, default_value = "text")]
    output_format: Output,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    let From::Nginx(args) = &args.from;
    if args.vips.iter().filter(|vip| vip.is_ipv4()).count() > 1
        || args.vips.iter().filter(|vip| vip.is_ipv6()).count() > 1
    {
        return Err(Failure::new(exit::USAGE, "--vip: at most one IPv4 and one IPv6 address").into());
    }
    let options = Options { vips: args.vips.clone() };
    let conversion = nginx::convert(&args.input, &options).map_err(|error| {
        eprintln!("{error}");
        Failure::new(
            exit::INVALID_DATA,
            "the nginx configuration cannot be read or parsed; nothing was written",
        )
    })?;
    let files = output::render(&conversion, &args.output, "libraflux convert nginx");
    let mut warnings = conversion.warnings.clone();
    warnings.extend(output::validate(&files).map_err(|errors| {
        eprintln!("{errors}");
        Failure::new(
            exit::INVALID_DATA,
            "the converted services do not validate (services that clash, or a converter bug); nothing was written",
        )
    })?);
    if !args.dry_run {
        let existing = output::existing(&files);
        if !existing.is_empty() && !args.force {
            let names: Vec<String> = existing.iter().map(|path| path.display().to_string()).collect();
            let message =
                format!("{} exist; nothing was written (replace them with --force)", names.join(", "));
            return Err(Failure::new(exit::REFUSED, message).into());
        }
        output::write(&files)
            .map_err(|error| anyhow::anyhow!("writing to {}: {error}", args.output.display()))?;
    }
    match args.output_format {
        Output::Text => print_text(&conversion, &files, &warnings, args.dry_run),
        Output::Json => print_json(&files, &warnings, args.dry_run)?,
    }
    if warnings.is_empty() {
        return Ok(());
    }
    // Converted with warnings is an outcome, not an error: exit 2 without an `error:` line.
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(exit::USAGE));
}

fn print_text(conversion: &Conversion, files: &[OutputFile], warnings: &[Warning], dry_run: bool) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    for file in files {
        if dry_run {
            println!("==> {} <==\n{}", file.path.display(), file.text);
        } else {
            println!("wrote {}: {} (from {})", file.path.display(), file.services.join(", "), file.source);
        }
    }
    let services: usize = conversion.groups.iter().map(|group| group.services.len()).sum();
    let summary = format!(
        "{} {services} services from {} servers into {} files, {} warnings",
        if dry_run { "would convert" } else { "converted" },
        conversion.groups.len(),
        files.len(),
        warnings.len()
    );
    if dry_run { eprintln!("{summary}") } else { println!("{summary}") }
}

fn print_json(files: &[OutputFile], warnings: &[Warning], dry_run: bool) -> anyhow::Result<()> {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|file| {
            let mut value = serde_json::json!({
                "path": file.path,
                "source": { "file": file.source.file.display().to_string(), "line": file.source.line },
                "services": file.services,
            });
            if dry_run {
                value["yaml"] = file.text.clone().into();
            }
            value
        })
        .collect();
    let warnings: Vec<serde_json::Value> = warnings
        .iter()
        .map(|warning| {
            serde_json::json!({ "file": warning.place.file.display().to_string(), "line": warning.place.line, "message": warning.message })
        })
        .collect();
    let report =
        serde_json::json!({ "dry_run": dry_run, "written": !dry_run, "files": files, "warnings": warnings });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
