//! Log files of SPEC §7: one line per event, `[YYYY/MM/DD HH:MM:SS:ffffff]` timestamps,
//! kept in numbered generations with a size cap (`event.log`, `event.log.1`, ...).
//!
//! Writers call [`LogFile::write`] from the main runtime's tasks (never from the pipeline
//! thread's hot path); each call appends whole lines and rotates first when the file would
//! pass its cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The timestamp format of every haconn log line.
pub fn timestamp(t: chrono::DateTime<chrono::Local>) -> String {
    t.format("[%Y/%m/%d %H:%M:%S:%6f]").to_string()
}

/// Mode of the log directory: the daemon's, readable by its group (adm-style log readers).
pub const DIR_MODE: u32 = 0o750;
/// Mode of every log file: reload summaries name servers and addresses.
pub const FILE_MODE: u32 = 0o640;

/// Opens a log file for appending: created [`FILE_MODE`] whatever the umask, and an
/// existing one with looser bits is tightened to it.
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    restrict(&file, FILE_MODE)?;
    Ok(file)
}

/// Clears every permission bit of an open file or directory that `allowed` does not hold.
pub fn restrict(file: &File, allowed: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    if mode & !allowed != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode & allowed))?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with `mode` whatever the umask, and tightens an
/// existing one to it: `--log-dir` and `--state-dir` are haconn's own directories. A
/// shared scratch directory (sticky, such as /tmp) is left alone.
pub fn create_private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    let d = File::open(dir)?;
    if d.metadata()?.permissions().mode() & 0o1000 == 0 {
        restrict(&d, mode)?;
    }
    Ok(())
}

/// A log file with numbered generations.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    generations: u32,
    file: Mutex<Option<File>>,
}

impl LogFile {
    /// Opens (creating the directory if needed) `dir/name`. `generations` counts the old
    /// files kept beside the current one.
    pub fn open(dir: &Path, name: &str, max_bytes: u64, generations: u32) -> io::Result<LogFile> {
        create_private_dir(dir, DIR_MODE)?;
        let path = dir.join(name);
        let file = open_log(&path)?;
        Ok(LogFile {
            path,
            max_bytes: max_bytes.max(1024),
            generations,
            file: Mutex::new(Some(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `text`, each of its lines prefixed with the current timestamp.
    pub fn write(&self, text: &str) -> io::Result<()> {
        self.write_at(chrono::Local::now(), text)
    }

    /// Appends `text`, each of its lines prefixed with the timestamp `at`.
    pub fn write_at(&self, at: chrono::DateTime<chrono::Local>, text: &str) -> io::Result<()> {
        let ts = timestamp(at);
        let mut buf = String::with_capacity(text.len() + 32);
        for line in text.lines() {
            buf.push_str(&ts);
            buf.push(' ');
            buf.push_str(line);
            buf.push('\n');
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let size = guard
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if size > 0 && size + buf.len() as u64 > self.max_bytes {
            *guard = None;
            self.rotate()?;
        }
        if guard.is_none() {
            *guard = Some(open_log(&self.path)?);
        }
        let f = guard.as_mut().expect("opened above");
        f.write_all(buf.as_bytes())?;
        f.flush()
    }

    fn generation(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&self) -> io::Result<()> {
        if self.generations == 0 {
            return fs::remove_file(&self.path).or_else(ignore_missing);
        }
        fs::remove_file(self.generation(self.generations)).or_else(ignore_missing)?;
        for n in (1..self.generations).rev() {
            fs::rename(self.generation(n), self.generation(n + 1)).or_else(ignore_missing)?;
        }
        fs::rename(&self.path, self.generation(1)).or_else(ignore_missing)
    }
}

/// A handle that queues lines for a log file written by its own thread, so writers on the
/// pipeline thread never wait for the disk. Cloning shares the queue.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: std::sync::mpsc::Sender<(chrono::DateTime<chrono::Local>, String)>,
}

impl LogSink {
    /// Starts the writer thread of `file`.
    pub fn spawn(file: LogFile) -> io::Result<LogSink> {
        let (tx, rx) = std::sync::mpsc::channel::<(chrono::DateTime<chrono::Local>, String)>();
        std::thread::Builder::new()
            .name("haconn-log".into())
            .spawn(move || {
                for (at, line) in rx {
                    if let Err(e) = file.write_at(at, &line) {
                        tracing::error!(error = %e, path = %file.path().display(), "cannot write log");
                    }
                }
            })?;
        Ok(LogSink { tx })
    }

    /// A sink that drops everything (tests and tools without logs).
    pub fn discard() -> LogSink {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(rx);
        LogSink { tx }
    }

    /// A sink whose stamped lines arrive on a channel instead of a file (`haconn lab`
    /// shows them as they happen).
    pub fn channel() -> (
        LogSink,
        std::sync::mpsc::Receiver<(chrono::DateTime<chrono::Local>, String)>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        (LogSink { tx }, rx)
    }

    /// Queues `text`, stamped now.
    pub fn line(&self, text: String) {
        let _ = self.tx.send((chrono::Local::now(), text));
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_into_bounded_generations() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "event.log", 1024, 2).unwrap();
        for i in 0..200 {
            log.write(&format!("line {i} of the rotation test"))
                .unwrap();
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["event.log", "event.log.1", "event.log.2"]);
        for n in &names {
            assert!(fs::metadata(dir.path().join(n)).unwrap().len() <= 1024);
        }
        let current = fs::read_to_string(dir.path().join("event.log")).unwrap();
        assert!(current.ends_with("line 199 of the rotation test\n"));
        let first = current.lines().next().unwrap();
        assert!(
            first.starts_with('[') && first.as_bytes()[27] == b']',
            "{first}"
        );
    }
}
