//! `haconn validate`: check spec files, report every problem, compiler style.

use std::path::Path as FsPath;

use super::{Outcome, read_input};
use crate::spec::{CheckOptions, check_bytes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files to check (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// `text` for people, `json` for CI (stable, see README). `--format` is an old
    /// spelling of this option.
    #[arg(long = "output", alias = "format", value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Treat secrets written inline as errors.
    #[arg(long)]
    pub deny_inline_secrets: bool,
    /// Read every secret reference (files, environment variables) and check its value.
    #[arg(long)]
    pub resolve_secrets: bool,
    /// Print only problems (errors and warnings, and the summary of an invalid file): no
    /// `FILE: valid (…)` line. No effect with `--output json`.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Whether a file lives in a git work tree (a `.git` in it or a parent directory).
pub(crate) fn looks_git_managed(file: &str) -> bool {
    if file == "-" {
        return false;
    }
    let Ok(abs) = std::fs::canonicalize(file) else {
        return false;
    };
    abs.ancestors()
        .skip(1)
        .any(|dir| FsPath::new(dir).join(".git").exists())
}

pub fn run(args: &Args) -> Outcome {
    let mut outcome = Outcome::Ok;
    let mut files_json = Vec::new();
    for file in &args.files {
        let bytes = match read_input(file) {
            Ok(b) => b,
            Err(e) => {
                outcome = Outcome::Trouble;
                match args.format {
                    Format::Text => errln!("{file}: error[io]: cannot read: {e}"),
                    Format::Json => files_json.push(serde_json::json!({
                        "file": file, "valid": false, "ioError": e.to_string(),
                        "errors": 1, "warnings": 0, "diagnostics": [],
                    })),
                }
                continue;
            }
        };
        let opts = CheckOptions {
            deny_inline_secrets: args.deny_inline_secrets,
            warn_inline_secrets: looks_git_managed(file),
            resolve_secrets: args.resolve_secrets,
        };
        let checked = check_bytes(&bytes, opts);
        let errors = checked.errors();
        let warnings = checked.diagnostics.len() - errors;
        if errors > 0 && outcome == Outcome::Ok {
            outcome = Outcome::Failed;
        }
        match args.format {
            Format::Text => {
                for d in &checked.diagnostics {
                    outln!("{}", d.render(file));
                }
                let verdict = if errors == 0 { "valid" } else { "invalid" };
                if args.quiet && errors == 0 {
                    continue;
                }
                outln!(
                    "{file}: {verdict} ({errors} error{}, {warnings} warning{})",
                    plural(errors),
                    plural(warnings)
                );
            }
            Format::Json => files_json.push(serde_json::json!({
                "file": file,
                "valid": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": checked.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
            })),
        }
    }
    if args.format == Format::Json {
        let doc = serde_json::json!({
            "version": 1,
            "valid": outcome == Outcome::Ok,
            "files": files_json,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("json serializes")
        );
    }
    outcome
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
