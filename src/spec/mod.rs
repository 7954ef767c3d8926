//! The cluster spec: loading, the JSON Schema, validation, normalized rendering.
//!
//! Flow: bytes → [`yaml`] (strict YAML → JSON value + path index) → JSON Schema check and
//! serde into [`raw::RawSpec`] → [`validate`] into a known-good [`model::Spec`]. Every
//! step collects diagnostics with their YAML path and line instead of stopping at the
//! first. Pure apart from reading the file itself (and, on request, secret references).

pub mod diag;
pub mod model;
pub mod path;
pub mod pdu_model;
pub mod raw;
pub mod render;
pub mod secret;
pub mod validate;
pub mod yaml;

use std::sync::LazyLock;

use diag::{Diagnostic, Severity};
use model::Spec;
use path::{Path, Seg};
use raw::RawSpec;
use secret::Secret;

/// How strictly to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Inline secrets are errors rather than warnings.
    pub deny_inline_secrets: bool,
    /// Keep the inline-secret warning (set when the file looks git-managed).
    pub warn_inline_secrets: bool,
    /// Read every secret reference (file, environment) and check its value.
    pub resolve_secrets: bool,
}

/// The outcome of checking one document.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The spec, when there is no error.
    pub spec: Option<Spec>,
    /// Every problem, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// The JSON Schema of the spec (as committed in `schema/haconn.schema.json`).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawSpec)).expect("schema serializes")
}

static SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(schema);
static VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| jsonschema::validator_for(&SCHEMA).expect("our own schema compiles"));

/// Whether a path holds a secret (or a reference to one): messages there never quote the value.
fn is_secret_path(path: &Path) -> bool {
    let segs = path.segments();
    segs.iter().enumerate().any(|(i, s)| match s {
        Seg::Key(k) if k == "password" || k == "kg" || k == "community" => true,
        Seg::Key(k) if k == "key" => i > 0 && segs[i - 1] == Seg::Key("auth".into()),
        _ => false,
    })
}

const SECRET_FORMS: &str =
    "write the secret as a quoted string, `{env: NAME}` or `{file: /path}` (value not shown)";

/// The schema's description of the field at `path`, following `$ref`s.
fn describe(path: &Path) -> Option<String> {
    let root = &*SCHEMA;
    let resolve = |mut node: &'static serde_json::Value| {
        while let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
            node = root.pointer(r.strip_prefix('#')?)?;
        }
        Some(node)
    };
    let mut node = resolve(root)?;
    let mut description = None;
    for seg in path.segments() {
        let next = match seg {
            Seg::Key(k) => node.get("properties")?.get(k)?,
            Seg::Index(_) => node.get("items")?,
        };
        description = next.get("description").and_then(|d| d.as_str());
        node = resolve(next)?;
        // An optional field is `anyOf: [field, null]`: look through it.
        if let Some(first) = node.get("anyOf").and_then(|a| a.get(0))
            && node
                .get("anyOf")
                .and_then(|a| a.as_array())
                .is_some_and(|a| a.len() == 2)
            && let Some(inner) = resolve(first)
            && (inner.get("properties").is_some() || inner.get("items").is_some())
        {
            node = inner;
        }
    }
    description
        .or_else(|| node.get("description").and_then(|d| d.as_str()))
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Checks a document given as bytes (a file's content).
pub fn check_bytes(bytes: &[u8], opts: CheckOptions) -> Checked {
    match yaml::load_bytes(bytes) {
        Ok(doc) => check_document(&doc, opts),
        Err(e) => Checked {
            spec: None,
            diagnostics: vec![Diagnostic {
                pos: e.pos,
                ..Diagnostic::error("yaml", Path::root(), e.message)
            }],
        },
    }
}

/// Checks a document already loaded from YAML.
pub fn check_document(doc: &yaml::Document, opts: CheckOptions) -> Checked {
    let schema_diags = schema_diagnostics(&doc.value);
    let unknown: Vec<&Path> = schema_diags
        .iter()
        .filter(|d| d.code == "unknown-key")
        .map(|d| &d.path)
        .collect();
    let pruned;
    let value = if unknown.is_empty() {
        &doc.value
    } else {
        pruned = without_keys(&doc.value, &unknown);
        &pruned
    };
    let (spec, mut diagnostics) = match serde_path_to_error::deserialize::<_, RawSpec>(value) {
        // The schema and serde disagree: still an error, never a pass.
        Err(e) if schema_diags.is_empty() => {
            let path = serde_path(e.path());
            let message = if is_secret_path(&path) {
                SECRET_FORMS.to_string()
            } else {
                e.inner().to_string()
            };
            (None, vec![Diagnostic::error("type", path, message)])
        }
        Err(_) => (None, schema_diags),
        Ok(raw) => {
            let resolve = |s: &Secret| s.resolve().map(drop).map_err(|e| e.to_string());
            let none = |_: &Secret| Ok(());
            let check: &dyn Fn(&Secret) -> Result<(), String> = if opts.resolve_secrets {
                &resolve
            } else {
                &none
            };
            let (spec, mut diags) = validate::validate(&raw, check);
            // Keep schema findings the semantic rules did not already explain.
            for d in schema_diags {
                if !diags.iter().any(|s| related(&s.path, &d.path)) {
                    diags.push(d);
                }
            }
            (spec, apply_secret_policy(diags, opts))
        }
    };
    for d in &mut diagnostics {
        d.pos = if d.code == "unknown-key" {
            doc.index.key_pos(&d.path)
        } else {
            doc.index.value_pos(&d.path)
        };
    }
    diag::sort(&mut diagnostics);
    let failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Checked {
        spec: if failed { None } else { spec },
        diagnostics,
    }
}

/// The JSON Schema's verdict alone on a loaded document (for the agreement tests).
pub fn schema_errors(value: &serde_json::Value) -> Vec<Diagnostic> {
    schema_diagnostics(value)
}

/// The serde + semantic verdict alone, without the JSON Schema: `Err` when serde refuses
/// the document, else the semantic errors.
pub fn semantic_errors(value: &serde_json::Value) -> Result<Vec<Diagnostic>, String> {
    let raw: RawSpec = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let (_, diags) = validate::validate(&raw, &|_| Ok(()));
    Ok(diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect())
}

fn related(a: &Path, b: &Path) -> bool {
    let (a, b) = (a.segments(), b.segments());
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn apply_secret_policy(diags: Vec<Diagnostic>, opts: CheckOptions) -> Vec<Diagnostic> {
    diags
        .into_iter()
        .filter_map(|mut d| {
            if d.code != "inline-secret" {
                return Some(d);
            }
            if opts.deny_inline_secrets {
                d.severity = Severity::Error;
                d.message = "secret written inline in the spec (refused by --deny-inline-secrets); use `{env: NAME}` or `{file: /path}`".into();
                return Some(d);
            }
            opts.warn_inline_secrets.then_some(d)
        })
        .collect()
}

fn serde_path(p: &serde_path_to_error::Path) -> Path {
    use serde_path_to_error::Segment;
    let segs = p
        .iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>();
    Path::from(segs)
}

/// Every JSON Schema violation of the document, with operator-readable messages.
fn schema_diagnostics(value: &serde_json::Value) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for e in VALIDATOR.iter_errors(value) {
        push_schema_error(&e, &mut out);
    }
    out
}

fn location_path(loc: &jsonschema::paths::Location) -> Path {
    use jsonschema::paths::LocationSegment;
    Path::from(
        loc.iter()
            .map(|s| match s {
                LocationSegment::Property(p) => Seg::Key(p.to_string()),
                LocationSegment::Index(i) => Seg::Index(i),
            })
            .collect::<Vec<_>>(),
    )
}

/// Turns one schema error into diagnostics. An `anyOf` failure (an optional field, a
/// secret that may be text or a reference) is explained by the one alternative that
/// was of the right kind, rather than by "not valid under any of the schemas".
fn push_schema_error(e: &jsonschema::ValidationError<'_>, out: &mut Vec<Diagnostic>) {
    use jsonschema::error::ValidationErrorKind as K;
    let path = location_path(e.instance_path());
    if is_secret_path(&path)
        && !matches!(
            e.kind(),
            K::AdditionalProperties { .. } | K::Required { .. }
        )
    {
        let hint = if e.instance().is_number() {
            " (YAML read a number here)"
        } else {
            ""
        };
        let what = describe(&path).unwrap_or_default();
        out.push(Diagnostic::error(
            "credential",
            path,
            format!("{SECRET_FORMS}{hint}. {what}")
                .trim_end_matches(". ")
                .to_string(),
        ));
        return;
    }
    match e.kind() {
        K::AdditionalProperties { unexpected } => {
            for key in unexpected {
                out.push(Diagnostic::error(
                    "unknown-key",
                    path.key(key),
                    format!("unknown key `{key}`"),
                ));
            }
        }
        K::Required { property } => out.push(Diagnostic::error(
            "required",
            path,
            format!("missing required key {property}"),
        )),
        K::AnyOf { context } | K::OneOfNotValid { context } => {
            let wrong_kind = |b: &Vec<jsonschema::ValidationError<'static>>| {
                b.iter().all(|x| {
                    x.instance_path() == e.instance_path()
                        && matches!(
                            x.kind(),
                            K::Type { .. } | K::Enum { .. } | K::Constant { .. }
                        )
                })
            };
            let fitting: Vec<_> = context.iter().filter(|b| !wrong_kind(b)).collect();
            if let [branch] = fitting.as_slice() {
                for x in branch.iter() {
                    push_schema_error(x, out);
                }
            } else {
                let expected = describe(&path)
                    .map(|d| format!("; expected: {d}"))
                    .unwrap_or_default();
                out.push(Diagnostic::error(
                    "schema",
                    path,
                    format!("{} is not an accepted value here{expected}", e.instance()),
                ));
            }
        }
        _ => out.push(Diagnostic::error("schema", path, e.to_string())),
    }
}

/// A copy of `value` without the keys at `paths` (unknown keys), so the semantic checks
/// can still run and report everything else in the same pass.
fn without_keys(value: &serde_json::Value, paths: &[&Path]) -> serde_json::Value {
    let mut v = value.clone();
    for p in paths {
        let segs = p.segments();
        let Some((Seg::Key(last), parent)) = segs.split_last() else {
            continue;
        };
        let pointer: String = parent
            .iter()
            .map(|s| match s {
                Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
                Seg::Index(i) => format!("/{i}"),
            })
            .collect();
        if let Some(serde_json::Value::Object(o)) = v.pointer_mut(&pointer) {
            o.remove(last);
        }
    }
    v
}

/// The schema as committed: pretty JSON.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&schema()).expect("schema serializes")
}
