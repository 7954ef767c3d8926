//! Secrets: held inline or by reference, resolved only where used, never printed.

use std::fmt;

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
        let len = value.chars().count();
        if len < min || len > max {
            return Err(format!(
                "{what} must be {min}–{max} characters (this one has {len})"
            ));
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
                let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.to_string(),
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
}
