//! `libraflux preflight`: the pre-flight checks alone.

use super::common::{ConfigArg, Output, SkipChecks, load_config, preflight, require_passed, runtime};

#[derive(Debug, clap::Args)]
pub struct PreflightArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    skip: SkipChecks,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &PreflightArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let (_client, report) = runtime()?.block_on(preflight(&config, &args.skip.names))?;
    match args.output {
        Output::Text => print!("{}", report.render_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    require_passed(&report)
}
