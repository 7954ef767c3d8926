//! Following the spec file: report its content whenever it changes, however it changes.
//!
//! A spec is replaced in practice by an in-place write, a write to a temp file and a
//! rename (ansible, editors), a symlink swap (git checkouts, Kubernetes ConfigMaps'
//! `..data`), or a delete and re-create. We watch the file's *directory* with notify, so
//! every one of those shows up as some event there, wait for a short quiet period, then
//! read the file through any symlinks and compare its bytes with the last ones seen. A
//! periodic poll does the same comparison, for the changes inotify cannot see (a swap of
//! a symlink in another directory, a directory replaced under us). A half-written file is
//! reported like any other content; the reload that follows refuses it as invalid and
//! the completed write is reported next.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// The file now holds these bytes (different from the last ones reported).
    Changed(Vec<u8>),
    /// The file cannot be read (deleted, permissions); the live configuration stays.
    Unreadable(String),
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub path: PathBuf,
    /// Quiet time after the last filesystem event before the file is read.
    pub debounce: Duration,
    /// Interval of the fallback poll.
    pub poll: Duration,
}

/// The running watcher; dropping it stops it.
pub struct SpecWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SpecWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts following `cfg.path`. `initial` is the content already applied (no event is
/// sent for it). Must be called within a tokio runtime.
pub fn spawn(
    cfg: WatchConfig,
    initial: Option<Vec<u8>>,
    tx: mpsc::Sender<FileEvent>,
) -> SpecWatcher {
    let wake = Arc::new(Notify::new());
    let watcher = directory_watcher(&cfg.path, wake.clone());
    if watcher.is_none() {
        tracing::warn!(path = %cfg.path.display(), "cannot watch the spec's directory; relying on polling");
    }
    let task = tokio::spawn(follow(cfg, initial, tx, wake));
    SpecWatcher {
        _watcher: watcher,
        task,
    }
}

fn directory_watcher(path: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            wake.notify_one();
        }
    })
    .ok()?;
    w.watch(&dir, RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

async fn follow(
    cfg: WatchConfig,
    mut last: Option<Vec<u8>>,
    tx: mpsc::Sender<FileEvent>,
    wake: Arc<Notify>,
) {
    let mut poll = tokio::time::interval(cfg.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            _ = wake.notified() => {
                // Let a burst of events settle before reading, but never wait longer than
                // ten debounce periods: a busy directory must not starve the spec.
                let give_up = tokio::time::Instant::now() + cfg.debounce * 10;
                loop {
                    tokio::select! {
                        _ = wake.notified() => {
                            if tokio::time::Instant::now() >= give_up {
                                break;
                            }
                        }
                        _ = tokio::time::sleep(cfg.debounce) => break,
                        _ = tokio::time::sleep_until(give_up) => break,
                    }
                }
            }
            _ = poll.tick() => {}
        }
        let event = match tokio::fs::read(&cfg.path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                last = Some(bytes.clone());
                FileEvent::Changed(bytes)
            }
            Ok(_) => continue,
            Err(e) => {
                if last.take().is_none() {
                    continue;
                }
                FileEvent::Unreadable(e.to_string())
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::Receiver<FileEvent>) -> FileEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("watcher alive")
    }

    #[tokio::test]
    async fn sees_every_way_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, "v1").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cfg = WatchConfig {
            path: path.clone(),
            debounce: Duration::from_millis(50),
            poll: Duration::from_secs(3600),
        };
        let _w = spawn(cfg, Some(b"v1".to_vec()), tx);
        tokio::time::sleep(Duration::from_millis(100)).await;

        std::fs::write(&path, "v2").unwrap();
        assert_eq!(next(&mut rx).await, FileEvent::Changed(b"v2".to_vec()));

        let tmp = dir.path().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, "v3").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next(&mut rx).await, FileEvent::Changed(b"v3".to_vec()));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(next(&mut rx).await, FileEvent::Unreadable(_)));
        std::fs::write(&path, "v4").unwrap();
        assert_eq!(next(&mut rx).await, FileEvent::Changed(b"v4".to_vec()));
    }

    #[tokio::test]
    async fn the_poll_sees_a_symlink_swap_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("a.yaml"), "A").unwrap();
        std::fs::write(data.path().join("b.yaml"), "B").unwrap();
        let link_dir = data.path().join("current");
        std::os::unix::fs::symlink(data.path().join("a.yaml"), &link_dir).unwrap();
        let path = dir.path().join("cluster.yaml");
        std::os::unix::fs::symlink(&link_dir, &path).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cfg = WatchConfig {
            path,
            debounce: Duration::from_millis(50),
            poll: Duration::from_millis(200),
        };
        let _w = spawn(cfg, Some(b"A".to_vec()), tx);
        // Swap the link in the other directory: nothing happens in the watched one.
        let tmp = data.path().join("current.tmp");
        std::os::unix::fs::symlink(data.path().join("b.yaml"), &tmp).unwrap();
        std::fs::rename(&tmp, &link_dir).unwrap();
        assert_eq!(next(&mut rx).await, FileEvent::Changed(b"B".to_vec()));
    }
}
