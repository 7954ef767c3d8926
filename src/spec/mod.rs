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

/// Where one document holds secrets, found from the schema: every location whose schema
/// is a secret type (marked [`raw::SECRET_MARK`]), and the document with each of them
/// replaced by [`secret::MASK`]. Messages about a secret location never quote its value;
/// any other message that shows a value shows it from `masked`.
struct Secrets {
    paths: Vec<Path>,
    masked: serde_json::Value,
}

impl Secrets {
    fn of(value: &serde_json::Value) -> Secrets {
        let mut paths = Vec::new();
        secret_locations(&[&*SCHEMA], value, &mut Path::root(), &mut paths);
        let mut masked = value.clone();
        for p in &paths {
            if let Some(v) = masked.pointer_mut(&json_pointer(p)) {
                *v = serde_json::Value::String(secret::MASK.into());
            }
        }
        Secrets { paths, masked }
    }

    /// Whether `path` is a secret location or inside one.
    fn covers(&self, path: &Path) -> bool {
        self.paths
            .iter()
            .any(|s| path.segments().starts_with(s.segments()))
    }

    /// The value at `path` as it may be shown in a message: a scalar as JSON (masked if
    /// it is a secret), a mapping or list never with its content, which may hold a secret
    /// where the schema did not expect one (a misindented block, say).
    fn shown(&self, path: &Path) -> String {
        match self.masked.pointer(&json_pointer(path)) {
            Some(serde_json::Value::Object(_)) => "this mapping".into(),
            Some(serde_json::Value::Array(a)) => format!(
                "this list of {} item{}",
                a.len(),
                if a.len() == 1 { "" } else { "s" }
            ),
            Some(v) => v.to_string(),
            None => "the value".into(),
        }
    }
}

fn json_pointer(path: &Path) -> String {
    path.segments()
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// Every schema that applies where `node` does: `$ref`s followed, `anyOf`/`oneOf`/`allOf`
/// branches included (an optional field is `anyOf: [field, null]`).
fn applicable(node: &'static serde_json::Value, out: &mut Vec<&'static serde_json::Value>) {
    if out.len() > 256 {
        return;
    }
    out.push(node);
    if let Some(target) = node
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| SCHEMA.pointer(p))
    {
        applicable(target, out);
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        for branch in node.get(k).and_then(|b| b.as_array()).into_iter().flatten() {
            applicable(branch, out);
        }
    }
}

fn is_secret_schema(nodes: &[&serde_json::Value]) -> bool {
    nodes
        .iter()
        .any(|n| n.get(raw::SECRET_MARK) == Some(&serde_json::Value::Bool(true)))
}

/// The secret locations of `value` under the schemas `nodes`.
fn secret_locations(
    nodes: &[&'static serde_json::Value],
    value: &serde_json::Value,
    path: &mut Path,
    out: &mut Vec<Path>,
) {
    let mut all = Vec::new();
    for n in nodes {
        applicable(n, &mut all);
    }
    if is_secret_schema(&all) {
        out.push(path.clone());
        return;
    }
    let children: Vec<(Seg, &serde_json::Value, Vec<&'static serde_json::Value>)> = match value {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let subs = all
                    .iter()
                    .filter_map(|n| n.get("properties")?.get(k))
                    .collect();
                (Seg::Key(k.clone()), v, subs)
            })
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    Seg::Index(i),
                    v,
                    all.iter().filter_map(|n| n.get("items")).collect(),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    for (seg, v, subs) in children {
        if !subs.is_empty() {
            path.push(seg);
            secret_locations(&subs, v, path, out);
            path.pop();
        }
    }
}

/// Every secret field of the spec format, from the schema: `servers[].bmc.password`, ...
/// (`[]` stands for any index). A field is secret when its type is a secret type.
pub fn secret_fields() -> Vec<String> {
    fn walk(
        nodes: Vec<&'static serde_json::Value>,
        at: String,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        let mut all = Vec::new();
        for n in nodes {
            applicable(n, &mut all);
        }
        if is_secret_schema(&all) {
            out.push(at);
            return;
        }
        if depth > 16 {
            return;
        }
        let mut keys: Vec<&String> = all
            .iter()
            .filter_map(|n| n.get("properties")?.as_object())
            .flat_map(|m| m.keys())
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let subs = all
                .iter()
                .filter_map(|n| n.get("properties")?.get(k.as_str()))
                .collect();
            let next = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            walk(subs, next, depth + 1, out);
        }
        let items: Vec<_> = all.iter().filter_map(|n| n.get("items")).collect();
        if !items.is_empty() {
            walk(items, format!("{at}[]"), depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(vec![&*SCHEMA], String::new(), 0, &mut out);
    out
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
            let message = if Secrets::of(&doc.value).covers(&path) {
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

/// Every JSON Schema violation of the document, with operator-readable messages that
/// never quote a secret.
fn schema_diagnostics(value: &serde_json::Value) -> Vec<Diagnostic> {
    let mut errors = VALIDATOR.iter_errors(value).peekable();
    if errors.peek().is_none() {
        return Vec::new();
    }
    // Found only when there is something to say: a valid spec costs no walk and no copy.
    let secrets = Secrets::of(value);
    let mut out = Vec::new();
    for e in errors {
        push_schema_error(&e, &secrets, &mut out);
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
fn push_schema_error(
    e: &jsonschema::ValidationError<'_>,
    secrets: &Secrets,
    out: &mut Vec<Diagnostic>,
) {
    use jsonschema::error::ValidationErrorKind as K;
    let path = location_path(e.instance_path());
    if secrets.covers(&path)
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
                    push_schema_error(x, secrets, out);
                }
            } else {
                let expected = describe(&path)
                    .map(|d| format!("; expected: {d}"))
                    .unwrap_or_default();
                let message = format!(
                    "{} is not an accepted value here{expected}",
                    secrets.shown(&path)
                );
                out.push(Diagnostic::error("schema", path, message));
            }
        }
        // The instance is shown from the masked document: a value that holds a secret
        // (an object with a password in it) is quoted with the secret masked.
        _ => {
            let message = e.masked_with(secrets.shown(&path)).to_string();
            out.push(Diagnostic::error("schema", path, message));
        }
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
        let pointer = json_pointer(&Path::from(parent.to_vec()));
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
