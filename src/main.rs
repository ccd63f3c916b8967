//! The `callplane` command line. Thin by design: parse, set up, run.

use clap::{CommandFactory, Parser};

/// callplane: a self-hosted media-plane softswitch.
///
/// The SIP and media cores exist; the call engine (`call`, `serve`) comes next.
#[derive(Debug, Parser)]
#[command(name = "callplane", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Cli::command().print_help()?;
    println!();
    Ok(())
}
