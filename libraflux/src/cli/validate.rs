//! `libraflux validate`: parse and validate the configuration, touching nothing.

use std::path::PathBuf;

use libraflux::config::{self, Config, ConfigError};
use serde_json::{Value, json};

use super::common::{ConfigArg, Output, check_web_config, config_failure, load_config};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// text: a summary line, errors and warnings on stderr; json: one document on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    if args.output == Output::Json {
        return json_report(&args.config);
    }
    let config = load_config(&args.config)?;
    check_web_config(&config)?;
    let (services, backends) = counts(&config);
    println!("configuration is valid: {services} services, {backends} backends");
    Ok(())
}

fn counts(config: &Config) -> (usize, usize) {
    let backends = config.desired.values().map(|service| service.destinations.len()).sum();
    (config.desired.len(), backends)
}

/// The verdict as one JSON document (docs/configuration.md, "Validating"); exit 65 when invalid.
fn json_report(arg: &ConfigArg) -> anyhow::Result<()> {
    let path = arg.path.as_deref();
    let files: Vec<PathBuf> = config::source_paths(path).unwrap_or_default();
    let loaded = config::read_sources(path)
        .and_then(|sources| config::validate(&sources, &config::system_hostname()))
        .and_then(|mut config| {
            if let Some(web_config) = &config.metrics.web_config {
                config.warnings.extend(libraflux::metrics::web::check(web_config)?);
            }
            Ok(config)
        });
    let document = match &loaded {
        Ok(config) => {
            let (services, backends) = counts(config);
            json!({
                "valid": true,
                "files": files,
                "services": services,
                "backends": backends,
                "errors": [],
                "warnings": config.warnings.iter().map(located).collect::<Vec<_>>(),
            })
        }
        Err(errors) => json!({
            "valid": false,
            "files": files,
            "services": null,
            "backends": null,
            "errors": errors.iter().map(located).collect::<Vec<_>>(),
            "warnings": null,
        }),
    };
    println!("{}", serde_json::to_string_pretty(&document)?);
    match loaded {
        Ok(_) => Ok(()),
        Err(errors) => Err(config_failure(errors.len(), "in the configuration; nothing was changed")),
    }
}

/// `{"file", "line", "column", "message"}`; `line` and `column` are null for a whole file.
fn located(error: &ConfigError) -> Value {
    json!({
        "file": error.file,
        "line": error.position.map(|at| at.line),
        "column": error.position.map(|at| at.col),
        "message": error.message,
    })
}
