//! `sluice serve`: wires storage, core and the protocol front ends together.

use crate::config::ServeArgs;

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet wired")
}
