//! README.md as a newcomer reads it (issue 18.5): the "five-minute tour" is taken out of
//! README.md and run, command by command, with the built binary on PATH, in a fresh
//! directory holding only what the tour needs (`examples/`, `schema/`), with no HACONN_*
//! setting but the two that move the daemon's UDP ports to ephemeral loopback ones. Each
//! command must exit as the README says (`# … exit N` in its comment; else 0), and the
//! daemon the tour starts must be gone when the tour ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The text of the section headed `## {title}`, up to the next `## `.
fn section(text: &str, title: &str) -> String {
    let head = format!("\n## {title}\n");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("README.md has no section {title:?}"))
        + head.len();
    let rest = &text[start..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// One command of the tour: its text (continuation lines kept) and the exit code its
/// comment promises.
#[derive(Debug)]
struct Step {
    text: String,
    code: i32,
}

/// The commands of every ```sh block of the tour, but its build step (the test has the
/// binary on PATH already).
fn tour_steps(tour: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    let mut builds = 0;
    for line in tour.lines() {
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if line.trim() == "```" {
            in_sh = false;
            continue;
        }
        pending.push_str(line);
        if line.ends_with('\\') {
            pending.push('\n');
            continue;
        }
        let text = std::mem::take(&mut pending);
        if text.trim().is_empty() {
            continue;
        }
        if text.starts_with("cargo build") {
            builds += 1;
            continue;
        }
        let comment = text.find(" # ").map_or("", |i| &text[i..]);
        let code = comment
            .split("exit ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        steps.push(Step { text, code });
    }
    assert_eq!(
        builds, 1,
        "the tour's build step (`cargo build …`) not found"
    );
    steps
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The tour, run as written; also checks the README's log section names every log file
/// the tour's daemon wrote.
#[test]
fn readme_tour_runs_as_written_from_a_clean_directory() {
    let steps = tour_steps(&section(&readme(), "A five-minute tour"));
    assert!(
        steps.iter().any(|s| s.text.contains("haconn daemon")) && steps.len() > 8,
        "{steps:#?}"
    );
    let dir = tempfile::Builder::new()
        .prefix("haconn-tour-")
        .tempdir()
        .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for what in ["examples", "schema"] {
        copy_dir(&repo.join(what), &dir.path().join(what));
    }
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let statuses = dir.path().join("statuses");

    // One shell, so variables and the background job carry from command to command; the
    // status of each is recorded after it.
    let mut script = String::new();
    for (i, s) in steps.iter().enumerate() {
        script.push_str(&s.text);
        script.push_str(&format!("\necho \"{i} $?\" >> {}\n", statuses.display()));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_haconn"));
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        bin.parent().unwrap().display()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("TMPDIR", &tmp)
        .env("HACONN_RESET_PATH_BIND", "127.0.0.1:0")
        .env("HACONN_FENCE_KDUMP_BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash");
    let group = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on the process group this test made; 0 only asks whether any of it
    // is left (the daemon the tour started must not be).
    let left = unsafe { libc::kill(-group, 0) } == 0;
    if left {
        // SAFETY: as above; stops whatever is left.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let shown = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        status.is_some(),
        "the tour did not end within 90 s\n{shown}"
    );
    assert!(!left, "the tour left a process running\n{shown}");

    let codes: Vec<(usize, i32)> = read("statuses")
        .lines()
        .map(|l| {
            let (i, c) = l.split_once(' ').unwrap();
            (i.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    assert_eq!(codes.len(), steps.len(), "not every command ran\n{shown}");
    for ((i, code), step) in codes.iter().zip(&steps) {
        assert_eq!(
            *code, step.code,
            "command {i} `{}` exited {code}, the README says {}\n{shown}",
            step.text, step.code
        );
    }
    // What the tour says the reader sees.
    for promised in [
        "examples/minimal.yaml: valid",
        "+++ ",
        "reload (Watch):",
        "-- HA monitor connector reload : completed. --",
        "No changes.",
    ] {
        assert!(stdout.contains(promised), "no {promised:?}\n{shown}");
    }

    // README's log section names every log file the daemon wrote (issue 18.12).
    let logs_section = section(&readme(), "Logs and files");
    let mut written = Vec::new();
    for run in std::fs::read_dir(&tmp).unwrap() {
        let log = run.unwrap().path().join("log");
        for f in std::fs::read_dir(&log).into_iter().flatten() {
            written.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    assert!(written.len() >= 4, "{written:?}");
    for name in written {
        assert!(
            logs_section.contains(&format!("`/var/log/haconn/{name}`")),
            "README.md's \"Logs and files\" does not list {name}"
        );
    }
}
