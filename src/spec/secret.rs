//! Secrets: held inline or by reference, resolved only where used, never printed.
//!
//! A `{file:}` reference is read by a daemon that usually runs as root on behalf of
//! whoever may apply a spec: it must not become a way to read (or hang on, or exhaust
//! memory with) a file that user could not read. So only regular files are read, opened
//! non-blocking (a FIFO cannot hang the open) and checked on the opened descriptor, at
//! most [`MAX_SECRET_FILE`] bytes; the daemon may confine references to one directory
//! ([`confine_to`]); and no error ever tells a file's content or length.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::raw::RawSecretRef;

/// What a secret must look like (SPEC §5); checked on inline values at validation and on
/// referenced values when they are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretRule {
    BmcPassword,
    EsxiPassword,
    Kg,
    Community,
    HmacKey,
    /// An SSH private key file's text (OpenSSH or PEM); by reference only.
    SshPrivateKey,
}

impl SecretRule {
    /// Checks a value, returning an operator-readable reason (which never quotes the value).
    pub fn check(self, value: &str) -> Result<(), String> {
        let (min, max, what) = match self {
            SecretRule::BmcPassword => (8, 20, "a BMC password"),
            SecretRule::EsxiPassword => (1, 38, "an ESXi password"),
            SecretRule::Kg => (1, 20, "a BMC key (Kg)"),
            SecretRule::Community => (1, 30, "an SNMP community"),
            SecretRule::HmacKey => (16, 256, "a reset-path key"),
            SecretRule::SshPrivateKey => (1, 65536, "an SSH private key"),
        };
        // The reason never gives the value's length either: for a file pointed at by
        // mistake (or on purpose) at someone else's secret, that is already too much.
        let len = value.chars().count();
        if len < min || len > max {
            return Err(format!("{what} must be {min}–{max} characters"));
        }
        let ok = match self {
            SecretRule::Community => value.chars().all(|c| c.is_ascii_alphanumeric()),
            SecretRule::HmacKey => value.chars().all(|c| (' '..='~').contains(&c)),
            SecretRule::SshPrivateKey => value.trim_start().starts_with("-----BEGIN "),
            _ => value.chars().all(credential_char),
        };
        if !ok {
            let rule = match self {
                SecretRule::Community => "letters and digits only",
                SecretRule::HmacKey => "printable ASCII only",
                SecretRule::SshPrivateKey => {
                    "a private key file's text only (it starts with `-----BEGIN `)"
                }
                _ => "printable ASCII except \" $ ' \\ # ; and space",
            };
            return Err(format!("{what} may hold {rule}"));
        }
        Ok(())
    }
}

/// Printable ASCII 0x20–0x7e except `" $ ' \ # ;` and space (SPEC §5).
pub fn credential_char(c: char) -> bool {
    ('!'..='~').contains(&c) && !matches!(c, '"' | '$' | '\'' | '\\' | '#' | ';')
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Source {
    Inline(String),
    Env(String),
    File(String),
}

/// A secret value or a reference to one. `Debug` and `Display` never show an inline value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret {
    source: Source,
    rule: SecretRule,
}

/// A secret reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("secret from {source_name} is not valid: {reason}")]
    Invalid { source_name: String, reason: String },
}

impl Secret {
    pub fn inline(value: String, rule: SecretRule) -> Self {
        Secret {
            source: Source::Inline(value),
            rule,
        }
    }

    pub fn reference(r: RawSecretRef, rule: SecretRule) -> Self {
        let source = match r {
            RawSecretRef::Env(n) => Source::Env(n),
            RawSecretRef::File(p) => Source::File(p),
        };
        Secret { source, rule }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self.source, Source::Inline(_))
    }

    /// The rendered form: inline values masked, references shown (they are not secret).
    pub fn masked(&self) -> serde_json::Value {
        match &self.source {
            Source::Inline(_) => serde_json::Value::String(MASK.into()),
            Source::Env(n) => serde_json::json!({ "env": n }),
            Source::File(p) => serde_json::json!({ "file": p }),
        }
    }

    /// The lossless spec form: the inline value itself, or the reference. Only for the
    /// daemon's state file (mode 0600); never for anything shown to a person.
    pub(crate) fn spec_value(&self) -> serde_json::Value {
        match &self.source {
            Source::Inline(v) => serde_json::Value::String(v.clone()),
            _ => self.masked(),
        }
    }

    /// Reads the value: inline as is, else from the environment or the file, checked against its rule.
    pub fn resolve(&self) -> Result<String, SecretError> {
        let (value, source_name) = match &self.source {
            Source::Inline(v) => return Ok(v.clone()),
            Source::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
                format!("environment variable {name}"),
            ),
            Source::File(path) => {
                let text = read_secret_file(Path::new(path), SECRETS_DIR.get().map(|d| &**d))
                    .map_err(|reason| SecretError::File {
                        path: path.clone(),
                        reason,
                    })?;
                let text = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text)
                    .to_string();
                (text, format!("file {path}"))
            }
        };
        self.rule
            .check(&value)
            .map_err(|reason| SecretError::Invalid {
                source_name,
                reason,
            })?;
        Ok(value)
    }
}

/// The largest secret file read: a long SSH private key is a few KiB.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

static SECRETS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Confines every `{file:}` reference this process resolves to files inside `dir` (the
/// daemon's `--secrets-dir`); set once, at start. Fails if `dir` cannot be resolved.
pub fn confine_to(dir: &Path) -> std::io::Result<()> {
    let real = std::fs::canonicalize(dir)?;
    if !std::fs::metadata(&real)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    SECRETS_DIR
        .set(real)
        .map_err(|_| std::io::Error::other("the secrets directory is already set"))
}

/// Reads a secret file under the rules of the module doc. `Err` is the reason, which
/// never holds the file's content or length.
fn read_secret_file(path: &Path, confined: Option<&Path>) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_reason = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "cannot read: permission denied".to_string(),
        _ if e.raw_os_error() == Some(libc::ELOOP) => "it is a symbolic link".to_string(),
        _ => format!("cannot read: {e}"),
    };
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let target = match confined {
        None => path.to_path_buf(),
        Some(dir) => {
            // The file that will be opened, every link and `..` resolved, must lie in the
            // directory; it is then opened without following a link swapped in since.
            let real = std::fs::canonicalize(path).map_err(io_reason)?;
            if !real.starts_with(dir) {
                return Err(format!(
                    "outside the secrets directory {} (--secrets-dir)",
                    dir.display()
                ));
            }
            flags |= libc::O_NOFOLLOW;
            real
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(&target)
        .map_err(io_reason)?;
    let meta = file.metadata().map_err(io_reason)?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_reason)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!("larger than {} KiB", MAX_SECRET_FILE / 1024));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// What stands in for an inline secret in every rendering.
pub const MASK: &str = "********";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Inline(_) => f.write_str(MASK),
            Source::Env(n) => write!(f, "{{env: {n}}}"),
            Source::File(p) => write!(f, "{{file: {p}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_value_never_shows() {
        let s = Secret::inline("Sup3rSecret!".into(), SecretRule::BmcPassword);
        assert!(!format!("{s:?} {s}").contains("Sup3r"));
        assert!(!s.masked().to_string().contains("Sup3r"));
        assert_eq!(s.resolve().unwrap(), "Sup3rSecret!");
    }

    #[test]
    fn rules_follow_spec() {
        assert!(SecretRule::BmcPassword.check("short").is_err());
        assert!(SecretRule::BmcPassword.check("has space1").is_err());
        assert!(SecretRule::BmcPassword.check("dollar$sign").is_err());
        assert!(SecretRule::BmcPassword.check("Good!Pass%1").is_ok());
        assert!(SecretRule::Community.check("public").is_ok());
        assert!(SecretRule::Community.check("pub-lic").is_err());
        let long = "x".repeat(21);
        assert!(SecretRule::BmcPassword.check(&long).is_err());
        // The reason never quotes the value.
        let e = SecretRule::BmcPassword.check("p#ssword1").unwrap_err();
        assert!(!e.contains("p#ssword1"));
    }

    #[test]
    fn file_reference_drops_newline_and_checks_rule() {
        let dir = std::env::temp_dir().join(format!("haconn-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "Passw0rd!\n").unwrap();
        let s = Secret::reference(
            RawSecretRef::File(f.display().to_string()),
            SecretRule::BmcPassword,
        );
        assert_eq!(s.resolve().unwrap(), "Passw0rd!");
        std::fs::write(&f, "bad\n").unwrap();
        assert!(matches!(s.resolve(), Err(SecretError::Invalid { .. })));
        let missing = Secret::reference(
            RawSecretRef::File(dir.join("nope").display().to_string()),
            SecretRule::BmcPassword,
        );
        assert!(matches!(missing.resolve(), Err(SecretError::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `f` on another thread and fails the test if it does not return within 5 s:
    /// a secret file that hangs the reader must fail the test, not hang it.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading the secret file hung")
    }

    fn read(path: &Path, dir: Option<&Path>) -> Result<String, String> {
        let (path, dir) = (path.to_path_buf(), dir.map(Path::to_path_buf));
        bounded(move || read_secret_file(&path, dir.as_deref()))
    }

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read(&fifo, None).unwrap_err(), "not a regular file");
        assert_eq!(
            read(Path::new("/dev/zero"), None).unwrap_err(),
            "not a regular file"
        );
        assert_eq!(read(tmp.path(), None).unwrap_err(), "not a regular file");

        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b'k'; MAX_SECRET_FILE as usize + 1]).unwrap();
        let e = read(&big, None).unwrap_err();
        assert_eq!(e, "larger than 64 KiB");
        let exact = tmp.path().join("exact");
        std::fs::write(&exact, vec![b'k'; MAX_SECRET_FILE as usize]).unwrap();
        assert_eq!(read(&exact, None).unwrap().len(), MAX_SECRET_FILE as usize);
    }

    #[test]
    fn a_secrets_directory_confines_references() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        std::fs::create_dir(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let shadow = tmp.path().join("shadow");
        std::fs::write(&shadow, "root:$6$Shad0wHash:19000:0:99999:7:::\n").unwrap();
        std::fs::write(dir.join("pw"), "Passw0rd!\n").unwrap();
        std::os::unix::fs::symlink(&shadow, dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("pw"), dir.join("inner-link")).unwrap();

        assert_eq!(read(&dir.join("pw"), Some(&dir)).unwrap(), "Passw0rd!\n");
        assert_eq!(
            read(&dir.join("inner-link"), Some(&dir)).unwrap(),
            "Passw0rd!\n"
        );
        for outside in [
            dir.join("link"),
            shadow.clone(),
            dir.join("..").join("shadow"),
        ] {
            let e = read(&outside, Some(&dir)).unwrap_err();
            assert!(e.starts_with("outside the secrets directory"), "{e}");
        }
        // Without confinement the same file is read: the directory is what refuses it.
        assert!(read(&dir.join("link"), None).is_ok());
    }

    #[test]
    fn errors_never_tell_content_or_length() {
        let tmp = tempfile::tempdir().unwrap();
        let content = "root:$6$Shad0wHash:19000:0:99999:7:::";
        let f = tmp.path().join("shadow");
        std::fs::write(&f, format!("{content}\n")).unwrap();
        let big = tmp.path().join("big");
        std::fs::write(&big, "Shad0wHash".repeat(7000)).unwrap();
        for (path, rule) in [
            (&f, SecretRule::BmcPassword),
            (&f, SecretRule::Community),
            (&f, SecretRule::Kg),
            (&f, SecretRule::SshPrivateKey),
            (&big, SecretRule::HmacKey),
        ] {
            let s = Secret::reference(RawSecretRef::File(path.display().to_string()), rule);
            let e = s.resolve().unwrap_err().to_string();
            for leak in ["Shad0w", &content.len().to_string(), "70000", "root:"] {
                assert!(!e.contains(leak), "{e:?} tells {leak:?}");
            }
        }
        // SAFETY: setting an environment variable in a test that reads it back at once.
        unsafe { std::env::set_var("HACONN_TEST_SECRET_ENV", content) };
        let s = Secret::reference(
            RawSecretRef::Env("HACONN_TEST_SECRET_ENV".into()),
            SecretRule::BmcPassword,
        );
        let e = s.resolve().unwrap_err().to_string();
        assert!(
            !e.contains("Shad0w") && !e.contains(&content.len().to_string()),
            "{e}"
        );
    }
}
