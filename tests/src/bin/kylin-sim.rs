//! `kylin-sim`: one simulated Kylin node (see `kylin_gateway_tests::sim`).

use clap::Parser;
use kylin_gateway_tests::sim::{SimOptions, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    run(SimOptions::parse()).await
}
