//! Diagnostics: every problem in a spec, with its YAML path and position, compiler style.

use std::fmt::Write as _;

use serde::Serialize;

use super::path::Path;
use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem. `code` is a stable short word for CI filters (see README, "validate --format json").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub path: Path,
    pub message: String,
    pub pos: Option<Pos>,
}

impl Diagnostic {
    pub fn error(code: &'static str, path: Path, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            path,
            message: message.into(),
            pos: None,
        }
    }

    pub fn warning(code: &'static str, path: Path, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, path, message)
        }
    }

    /// `FILE:LINE:COL: error[code]: path: message`, the shape editors and CI problem matchers read.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::from(file);
        if let Some(p) = self.pos {
            let _ = write!(s, ":{}:{}", p.line, p.column);
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = write!(s, ": {sev}[{}]: ", self.code);
        if !self.path.is_root() {
            let _ = write!(s, "{}: ", self.path);
        }
        s.push_str(&self.message);
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "path": self.path.to_string(),
            "line": self.pos.map(|p| p.line),
            "column": self.pos.map(|p| p.column),
            "message": self.message,
        })
    }
}

/// Sorts diagnostics by position (then path) and drops exact repeats.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (a.pos, a.path.to_string(), a.severity).cmp(&(b.pos, b.path.to_string(), b.severity))
    });
    diags.dedup_by(|a, b| a.path == b.path && a.message == b.message);
}
