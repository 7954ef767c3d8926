//! The state directory: the last applied spec, saved so a restart can fall back to it.
//!
//! Saves are atomic (write a temp file, fsync, rename over, fsync the directory), so after
//! a crash at any point the directory holds either the previous complete spec or the new
//! one. Temp files a crash left behind are removed when the directory is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::spec::model::Spec;
use crate::spec::render::state_yaml;

const APPLIED: &str = "applied.yaml";
/// Mode of the state dir and of every file in it, whatever the umask.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
const TEMP_PREFIX: &str = ".applied.yaml.tmp";

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// Held open for the life of the process: its flock says the dir is in use.
    _lock: std::sync::Arc<File>,
}

impl StateDir {
    /// Opens (creating with mode 0700) the directory, takes its lock (so a second daemon
    /// cannot touch a running one's state), and removes stale temp files.
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        use std::os::fd::AsRawFd;
        crate::log::create_private_dir(dir, DIR_MODE)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(dir.join("lock"))?;
        // SAFETY: flock on a file descriptor we own for the duration of the call.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another haconn daemon is using the state dir {}",
                        dir.display()
                    ),
                ));
            }
            return Err(e);
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
            } else if entry.file_type()?.is_file() {
                // The applied spec may hold inline secrets; esxi_known_hosts decides which
                // host keys are trusted: nobody else reads or writes either.
                crate::log::restrict(&File::open(entry.path())?, FILE_MODE)?;
            }
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: std::sync::Arc::new(lock),
        })
    }

    pub fn applied_path(&self) -> PathBuf {
        self.dir.join(APPLIED)
    }

    /// The last applied spec's text, if one was saved.
    pub fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.applied_path()) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves `spec` as the last applied one, atomically, mode 0600 (it may hold inline secrets).
    pub fn save(&self, spec: &Spec) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!("{TEMP_PREFIX}.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(state_yaml(spec).as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.applied_path())?;
        File::open(&self.dir)?.sync_all()
    }
}
