//! Writing to stdout and stderr without ever panicking: when the reader went away
//! (`haconn show status | head -1`, EPIPE) the rest of the output is dropped quietly and
//! the command ends with the exit code its work earned. `println!` would panic (exit 101).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Stdout as a writer that never fails: after a broken pipe (or any other write error)
/// everything is dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet {
    stderr: bool,
}

impl Quiet {
    pub fn stdout() -> Quiet {
        Quiet { stderr: false }
    }

    pub fn stderr() -> Quiet {
        Quiet { stderr: true }
    }

    fn gone(&self) -> &'static AtomicBool {
        if self.stderr {
            &STDERR_GONE
        } else {
            &STDOUT_GONE
        }
    }

    /// Whether the reader went away.
    pub fn is_gone(&self) -> bool {
        self.gone().load(Ordering::Relaxed)
    }
}

impl Write for Quiet {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.is_gone() {
            let r = if self.stderr {
                io::stderr().lock().write_all(buf)
            } else {
                io::stdout().lock().write_all(buf)
            };
            if r.is_err() {
                self.gone().store(true, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.is_gone() {
            let r = if self.stderr {
                io::stderr().flush()
            } else {
                io::stdout().flush()
            };
            if r.is_err() {
                self.gone().store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn write_out(stderr: bool, args: fmt::Arguments<'_>) {
    let mut w = if stderr {
        Quiet::stderr()
    } else {
        Quiet::stdout()
    };
    let _ = w.write_fmt(args);
}

/// `println!` that never panics (see the module doc).
macro_rules! outln {
    () => { $crate::cli::out::write_out(false, format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::write_out(false, format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` that never panics.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write_out(false, format_args!($($t)*)) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::out::write_out(true, format_args!("{}\n", format_args!($($t)*))) };
}
