//! `libraflux validate`: parse and validate the configuration, touching nothing.

use super::common::{ConfigArg, load_config};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let backends: usize = config.desired.values().map(|service| service.destinations.len()).sum();
    println!("configuration is valid: {} services, {backends} backends", config.desired.len());
    Ok(())
}
