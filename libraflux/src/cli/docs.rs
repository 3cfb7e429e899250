//! `libraflux completions SHELL` and `libraflux manpage`, generated from the same clap
//! definitions the command line parses, and `libraflux schema`, generated from the tables the
//! configuration's decoder reads: none of them can drift from what they describe.

use clap::CommandFactory as _;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Shell completions on stdout, e.g. `libraflux completions bash > /etc/bash_completion.d/libraflux`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = super::Args::command();
    clap_complete::generate(args.shell, &mut command, "libraflux", &mut std::io::stdout());
    Ok(())
}

/// The man page (roff) on stdout, e.g. `libraflux manpage > /usr/share/man/man8/libraflux.8`.
pub fn manpage() -> anyhow::Result<()> {
    let command = super::Args::command();
    clap_mangen::Man::new(command).section("8").render(&mut std::io::stdout())?;
    Ok(())
}

/// The JSON Schema of a configuration file on stdout, e.g. `libraflux schema > libraflux.schema.json`
/// (docs/libraflux.schema.json is this output).
pub fn schema() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&libraflux::config::json_schema())?);
    Ok(())
}
