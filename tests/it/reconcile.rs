//! The `reconcile-tests/` golden corpus: each case folder holds a live spec, a desired spec,
//! optional facts about the running cluster, and the text the planner must produce for
//! them: the plan and the predicted reload summary (SPEC §6), or the diagnostics when a
//! spec is invalid. `UPDATE_EXPECT=1 cargo test --test it reconcile` rewrites the expected
//! texts; read every changed one against SPEC §6 before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use haconn::plan::summary::ReloadOutcome;
use haconn::plan::{LiveFacts, plan};
use haconn::spec::model::Spec;
use haconn::spec::{CheckOptions, check_bytes, yaml};

const INPUTS: [&str; 3] = ["live.yaml", "desired.yaml", "facts.yaml"];
const EXPECTED: &str = "expected.txt";
/// Keys whose string values are secrets written inline.
const SECRET_KEYS: [&str; 4] = ["password", "kg", "community", "key"];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reconcile-tests")
}

/// `NNN-short-name`: three digits, a dash, lowercase words joined by dashes.
fn is_case_name(name: &str) -> bool {
    let Some((num, rest)) = name.split_once('-') else {
        return false;
    };
    num.len() == 3
        && num.bytes().all(|b| b.is_ascii_digit())
        && !rest.is_empty()
        && !rest.starts_with('-')
        && !rest.ends_with('-')
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn read(dir: &Path, file: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(file)).map_err(|e| format!("cannot read {file}: {e}"))
}

/// A spec, or the rendered diagnostics that make it invalid.
fn load_spec(dir: &Path, file: &str) -> Result<Result<Spec, String>, String> {
    let text = read(dir, file)?;
    let checked = check_bytes(text.as_bytes(), CheckOptions::default());
    Ok(checked.spec.ok_or_else(|| {
        checked
            .diagnostics
            .iter()
            .map(|d| d.render(file) + "\n")
            .collect()
    }))
}

fn load_facts(dir: &Path) -> Result<LiveFacts, String> {
    let path = dir.join("facts.yaml");
    if !path.exists() {
        return Ok(LiveFacts::default());
    }
    let text = read(dir, "facts.yaml")?;
    let doc = yaml::load_str(&text).map_err(|e| format!("facts.yaml: {e}"))?;
    serde_json::from_value(doc.value).map_err(|e| format!("facts.yaml: {e}"))
}

/// The text a case produces: the plan and the predicted summary, or the diagnostics.
fn run_case(dir: &Path) -> Result<String, String> {
    let live = load_spec(dir, "live.yaml")?;
    let desired = load_spec(dir, "desired.yaml")?;
    let facts = load_facts(dir)?;
    let (live, desired) = match (live, desired) {
        (Ok(l), Ok(d)) => (l, d),
        (l, d) => {
            return Ok([l.err(), d.err()].into_iter().flatten().collect());
        }
    };
    let p = plan(&live, &desired, &facts);
    Ok(format!(
        "{}\n{}",
        p.render(),
        ReloadOutcome::predicted(&p, &live, &desired).render()
    ))
}

/// Every string written inline under a secret key in a YAML document.
fn inline_secrets(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if SECRET_KEYS.contains(&k.as_str()) => {
                        out.push(s.clone());
                    }
                    _ => inline_secrets(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| inline_secrets(v, out)),
        _ => {}
    }
}

/// Checks one case; `Err` is what to show for it.
fn check_case(dir: &Path, update: bool) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        if !INPUTS.contains(&name.as_ref()) && name != EXPECTED {
            return Err(format!(
                "unexpected file `{name}` (a case holds {} and {EXPECTED})",
                INPUTS.join(", ")
            ));
        }
    }
    let actual = run_case(dir)?;

    let mut secrets = Vec::new();
    for file in ["live.yaml", "desired.yaml"] {
        if let Ok(doc) = yaml::load_str(&read(dir, file)?) {
            inline_secrets(&doc.value, &mut secrets);
        }
    }
    if let Some(s) = secrets.iter().find(|s| actual.contains(s.as_str())) {
        return Err(format!(
            "the output shows the inline secret `{s}` written in the inputs"
        ));
    }

    let path = dir.join(EXPECTED);
    if update {
        return fs::write(&path, &actual).map_err(|e| format!("cannot write {EXPECTED}: {e}"));
    }
    let expected = fs::read_to_string(&path).map_err(|e| {
        format!("cannot read {EXPECTED} ({e}); run with UPDATE_EXPECT=1 to create it")
    })?;
    if expected == actual {
        return Ok(());
    }
    Err(similar::TextDiff::from_lines(&expected, &actual)
        .unified_diff()
        .context_radius(3)
        .header(EXPECTED, "actual")
        .to_string())
}

#[test]
fn reconcile_corpus() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("reconcile-tests/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under reconcile-tests/");
    let mut numbers: Vec<&str> = cases
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.get(..3))
        .collect();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        cases.len(),
        "two case folders share a number"
    );

    let mut failed = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let result = if is_case_name(&name) {
            check_case(dir, update)
        } else {
            Err("case folders are named NNN-short-name".to_string())
        };
        if let Err(why) = result {
            eprintln!("---- reconcile-tests/{name}\n{why}");
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} reconcile cases failed (UPDATE_EXPECT=1 rewrites expected.txt): {}",
        failed.len(),
        cases.len(),
        failed.join(", ")
    );
}
