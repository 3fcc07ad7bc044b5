//! The command-line client: topic administration, produce and consume over the Kafka protocol.

use clap::Subcommand;

/// Client subcommands; each connects to a running broker.
#[derive(Subcommand, Debug)]
pub enum Command {}

/// Runs one client subcommand to completion.
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
