//! Running the real `haconn` binary and asserting on what it did; shared by the end-to-end
//! test modules (included with `#[path]`).

use std::fmt;
use std::process::{Command, Stdio};

/// The outcome of one `haconn` command.
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ haconn {}", self.args.join(" "))?;
        writeln!(f, "exit: {:?}", self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

impl Run {
    /// Asserts the exit code, showing the whole run when it differs.
    pub fn code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }
}

/// Runs `haconn` with these arguments.
pub fn haconn<S: AsRef<str>>(args: &[S]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    execute(Command::new(env!("CARGO_BIN_EXE_haconn")), args, Vec::new())
}

/// The one place a test runs a program (the `haconn` binary, or a wrapper around it) to
/// its end: `cmd` as the caller set it up (directory, environment), with `args`, `stdin`
/// fed from a thread (the program may stop reading early, or fill its stdout pipe before
/// it has read everything), and what it wrote collected.
pub fn execute(mut cmd: Command, args: Vec<String>, stdin: Vec<u8>) -> Run {
    use std::io::Write as _;
    cmd.args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the program");
    let mut input = child.stdin.take().expect("the child's stdin");
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("wait for the program");
    feeder.join().expect("stdin feeder");
    Run {
        args,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`haconn`], killed if it outlives `limit` (its code is then `None`).
pub fn haconn_within<S: AsRef<str>>(args: &[S], limit: std::time::Duration) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &format!("{:.3}", limit.as_secs_f64())])
        .arg(env!("CARGO_BIN_EXE_haconn"));
    let mut r = execute(cmd, args, Vec::new());
    // timeout(1) exits 137 when it had to kill the program.
    if r.code == Some(137) {
        r.code = None;
    }
    r
}

/// Runs `haconn` with its stdout a pipe nobody reads any more (`haconn … | head -0`), so
/// its first write fails with EPIPE; `stdout` of the result is empty.
pub fn haconn_into_closed_pipe<S: AsRef<str>>(args: &[S]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_haconn"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run haconn");
    Run {
        args,
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a run did not panic on its closed stdout and ended with `code`.
pub fn assert_quiet_on_epipe(r: &Run, code: i32) {
    assert!(!r.stderr.contains("panicked"), "panicked on EPIPE\n{r}");
    assert!(!r.stderr.contains("Broken pipe"), "EPIPE reported\n{r}");
    assert_eq!(r.code, Some(code), "exit code after EPIPE\n{r}");
}
