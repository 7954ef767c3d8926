//! `haconn lab`: a self-contained demo of the reset path on loopback (see [`crate::lab`]).
//! Exit 0 when every scenario run had its expected outcome, 1 otherwise, 2 when the lab
//! could not run at all.

use super::Outcome;
use crate::lab::{Scenario, Timings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which failure to act out; `all` runs each in turn.
    #[arg(long, value_name = "NAME", default_value = "all")]
    pub scenario: ScenarioArg,
    /// Hard-reset issue time after the NMI, in milliseconds (1000–5000).
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1000..=5000))]
    pub hispeed: u32,
    /// How long to wait for the BMC's hard-reset acknowledgement before cutting PDU
    /// outlets, in seconds (5–60; bmc-dead).
    #[arg(long, value_name = "S", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(5..=60))]
    pub timeout: u32,
    /// Print each scenario's spec (secrets masked) before running it.
    #[arg(long)]
    pub show_spec: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioArg {
    All,
    Dump,
    Hang,
    BmcDead,
    Pair,
    Guest,
    #[value(name = "poweroff")]
    PowerOff,
    Takeover,
}

pub fn run(args: &Args) -> Outcome {
    let scenarios: Vec<Scenario> = match args.scenario {
        ScenarioArg::All => Scenario::ALL.to_vec(),
        ScenarioArg::Dump => vec![Scenario::Dump],
        ScenarioArg::Hang => vec![Scenario::Hang],
        ScenarioArg::BmcDead => vec![Scenario::BmcDead],
        ScenarioArg::Pair => vec![Scenario::Pair],
        ScenarioArg::Guest => vec![Scenario::Guest],
        ScenarioArg::PowerOff => vec![Scenario::PowerOff],
        ScenarioArg::Takeover => vec![Scenario::Takeover],
    };
    let timings = Timings {
        hispeed_ms: args.hispeed,
        timeout_s: args.timeout,
        recovery_s: 5,
    };
    let mut out = super::out::Quiet::stdout();
    let reports = match crate::lab::run_all(&scenarios, timings, args.show_spec, &mut out) {
        Ok(r) => r,
        Err(e) => {
            errln!("haconn lab: {e:#}");
            return Outcome::Trouble;
        }
    };
    if reports.len() > 1 {
        use std::io::Write as _;
        let _ = writeln!(out, "\nsummary");
        for r in &reports {
            let _ = writeln!(
                out,
                "  {:<9} {}  ({:.1} s)",
                r.scenario.name(),
                if r.passed { "passed" } else { "FAILED" },
                r.elapsed.as_secs_f64()
            );
        }
    }
    if reports.iter().all(|r| r.passed) {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}
