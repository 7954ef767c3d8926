//! Build facts for `haconn show version` and `haconn dump`: the git commit (when built
//! from a git work tree with git installed), the target triple, the profile and the
//! compiler's version. Anything it cannot learn is left unset, never an error: a build
//! from a source tarball, without git, works and says `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["TARGET", "PROFILE"] {
        if let Ok(v) = std::env::var(var) {
            println!("cargo:rustc-env=HACONN_BUILD_{var}={v}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(v) = run(&rustc, &["-V"]) {
        println!("cargo:rustc-env=HACONN_BUILD_RUSTC={v}");
    }
    if let Some(commit) = run("git", &["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=HACONN_BUILD_COMMIT={commit}");
        // Built again when HEAD moves (a commit, a checkout), not on every file change.
        for path in ["HEAD", "packed-refs"] {
            watch(run("git", &["rev-parse", "--git-path", path]));
        }
        if let Some(r) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
            watch(run("git", &["rev-parse", "--git-path", &r]));
        }
    }
}

/// Reruns the script when `path` changes; a path that does not exist is not named (cargo
/// would take it as changed at every build).
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}

/// The command's first line of output, if it ran and succeeded.
fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
