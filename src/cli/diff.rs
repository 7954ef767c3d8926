//! `haconn diff OLD NEW`: the normalized specs as a unified diff, then the plan.

use super::{Outcome, read_input};
use crate::plan::{LiveFacts, plan};
use crate::spec::model::Spec;
use crate::spec::render::normalized_yaml;
use crate::spec::{CheckOptions, check_bytes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The live (old) spec.
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The desired (new) spec.
    #[arg(value_name = "NEW")]
    pub new: String,
    /// Facts about the running cluster (YAML: monitorsActive, resetting, active) to predict refusals.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<String>,
}

/// Loads and validates a spec, printing its errors; `Err` carries the outcome to exit with.
pub(crate) fn load(file: &str) -> Result<Spec, Outcome> {
    let bytes = read_input(file).map_err(|e| {
        eprintln!("{file}: error[io]: cannot read: {e}");
        Outcome::Failed
    })?;
    let checked = check_bytes(&bytes, CheckOptions::default());
    checked.spec.ok_or_else(|| {
        for d in &checked.diagnostics {
            eprintln!("{}", d.render(file));
        }
        eprintln!("{file}: invalid; nothing to compare");
        Outcome::Failed
    })
}

pub(crate) fn load_facts(file: &str) -> Result<LiveFacts, Outcome> {
    let bytes = read_input(file).map_err(|e| {
        eprintln!("{file}: error[io]: cannot read: {e}");
        Outcome::Failed
    })?;
    let doc = crate::spec::yaml::load_bytes(&bytes).map_err(|e| {
        eprintln!("{file}: error[yaml]: {e}");
        Outcome::Failed
    })?;
    serde_json::from_value(doc.value).map_err(|e| {
        eprintln!("{file}: error[facts]: {e}");
        Outcome::Failed
    })
}

/// A unified diff of two normalized specs (empty when they render the same).
pub(crate) fn unified(old: &Spec, new: &Spec, old_name: &str, new_name: &str) -> String {
    let (a, b) = (normalized_yaml(old), normalized_yaml(new));
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

pub fn run(args: &Args) -> Outcome {
    let (old, new) = match (load(&args.old), load(&args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let facts = match &args.facts {
        None => LiveFacts::default(),
        Some(f) => match load_facts(f) {
            Ok(f) => f,
            Err(e) => return e,
        },
    };
    print!("{}", unified(&old, &new, &args.old, &args.new));
    let p = plan(&old, &new, &facts);
    print!("{}", p.render());
    if p.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Changes
    }
}
