//! A small fluent harness for driving the real `haconn` binary.
//!
//! A `Test` owns a fresh temporary directory that is the child's working directory, so
//! files are named relatively and diagnostics read `spec.yaml:LINE:COL: ...`. Every
//! assertion prints the whole run (arguments, exit code, stdout, stderr) when it fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Test {
    dir: TempDir,
    args: Vec<String>,
    stdin: Vec<u8>,
    env: Vec<(String, String)>,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::Builder::new()
                .prefix("haconn-cli-")
                .tempdir()
                .expect("temporary directory"),
            args: Vec::new(),
            stdin: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn args(mut self, args: &[&str]) -> Test {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Test {
        self.args.push(arg.into());
        self
    }

    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Test {
        self.stdin = input.as_ref().to_vec();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes a file under the test directory, creating its parent directories.
    pub fn file(self, name: &str, content: impl AsRef<[u8]>) -> Test {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, content).expect("write test file");
        self
    }

    /// Creates a directory under the test directory.
    pub fn dir(self, name: &str) -> Test {
        std::fs::create_dir_all(self.dir.path().join(name)).expect("create directory");
        self
    }

    /// The absolute path of a name under the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `haconn` with the arguments.
    pub fn run(self) -> Output {
        self.run_with(env!("CARGO_BIN_EXE_haconn"))
    }

    /// Runs another program (a shell wrapping `haconn`, say) the same way.
    pub fn run_with(self, program: &str) -> Output {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let run = super::run::execute(cmd, self.args, self.stdin);
        Output {
            args: run.args,
            code: run.code,
            stdout: run.stdout,
            stderr: run.stderr,
            _dir: self.dir,
        }
    }
}

/// What a run produced. Assertions return `self` so they chain.
pub struct Output {
    args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    _dir: TempDir,
}

impl Output {
    fn report(&self, what: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{what}");
        let _ = writeln!(s, "--- args: haconn {}", self.args.join(" "));
        let _ = writeln!(s, "--- exit code: {:?}", self.code);
        let _ = writeln!(s, "--- stdout:\n{}", self.stdout);
        let _ = writeln!(s, "--- stderr:\n{}", self.stderr);
        s
    }

    #[track_caller]
    pub fn status(self, code: i32) -> Output {
        assert_eq!(
            self.code,
            Some(code),
            "{}",
            self.report(&format!("expected exit code {code}"))
        );
        self
    }

    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Output {
        assert!(
            self.stdout.contains(needle),
            "{}",
            self.report(&format!("stdout should contain {needle:?}"))
        );
        self
    }

    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Output {
        assert!(
            self.stderr.contains(needle),
            "{}",
            self.report(&format!("stderr should contain {needle:?}"))
        );
        self
    }

    #[track_caller]
    pub fn stdout_is(self, expected: &str) -> Output {
        assert!(
            self.stdout == expected,
            "{}",
            self.report(&format!("stdout should be exactly {expected:?}"))
        );
        self
    }

    /// Neither stdout nor stderr contains `needle` (used for secret values).
    #[track_caller]
    pub fn never_shows(self, needle: &str) -> Output {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "{}",
            self.report(&format!("output must not contain {needle:?}"))
        );
        self
    }

    /// Asserts a text diagnostic: a line of stdout starting `FILE:LINE:` with
    /// `SEVERITY[CODE]: PATH: ` that also holds every one of `words`. `severity_code`
    /// may be a bare severity (`error`) to accept any code.
    #[track_caller]
    pub fn diagnostic(
        self,
        file: &str,
        line: usize,
        severity_code: &str,
        path: &str,
        words: &[&str],
    ) -> Output {
        let start = format!("{file}:{line}:");
        // `error` alone accepts any code: `error[...]: `.
        let bare = !severity_code.contains('[');
        let head = if bare {
            format!(": {severity_code}[")
        } else {
            format!(": {severity_code}: ")
        };
        let path_part = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        let after_head = |l: &str| -> bool {
            let Some(i) = l.find(&head) else {
                return false;
            };
            let mut rest = &l[i + head.len()..];
            if bare {
                let Some(j) = rest.find("]: ") else {
                    return false;
                };
                rest = &rest[j + 3..];
            }
            rest.starts_with(&path_part)
        };
        let found = self
            .stdout
            .lines()
            .any(|l| l.starts_with(&start) && after_head(l) && words.iter().all(|w| l.contains(w)));
        let shape = if bare {
            format!("{head}CODE]: {path_part}")
        } else {
            format!("{head}{path_part}")
        };
        assert!(
            found,
            "{}",
            self.report(&format!(
                "expected a diagnostic `{start}COL{shape}...` mentioning {words:?}"
            ))
        );
        self
    }

    /// How many lines of stdout are diagnostics (`FILE:LINE:COL: severity[code]: ...`).
    pub fn diagnostic_count(&self, file: &str) -> usize {
        let prefix = format!("{file}:");
        self.stdout
            .lines()
            .filter(|l| {
                l.starts_with(&prefix) && (l.contains(": error[") || l.contains(": warning["))
            })
            .count()
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}", self.report(&format!("stdout is not JSON: {e}"))))
    }
}

/// The 1-based line of the only line of `text` containing `needle`.
#[track_caller]
pub fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{needle:?} should be on exactly one line of:\n{text}"
    );
    hits[0]
}

/// `text` with the only occurrence of `from` replaced by `to`, so a test cannot
/// silently run on an unchanged spec.
#[track_caller]
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} should occur exactly once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// The repository root (where `examples/` and `schema/` live).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
