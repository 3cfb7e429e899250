//! The `libraflux` command: parse the command line, set up logging, run the command, and map its
//! outcome to an exit code. Everything else lives in the library and `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_tracing(args.verbose);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = cli::render_error(&err);
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
