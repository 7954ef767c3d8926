//! `haconn lab`: in progress (reset-path issue); refuses to run until it is built.

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: &Args) -> Outcome {
    eprintln!("haconn lab: not available in this build yet");
    Outcome::Trouble
}
