//! Normalized YAML: a spec printed in one canonical order with secrets masked, so that
//! two specs can be compared as text (`haconn diff`) and nothing secret is ever shown.

use serde_json::Value;

use super::model::{Masked, Revealed, Spec};

/// The canonical YAML text of a spec, inline secrets masked.
pub fn normalized_yaml(spec: &Spec) -> String {
    let mut out = String::new();
    emit(&spec.to_value(&Masked), 0, &mut out, Ctx::Top);
    out
}

/// The spec as a complete, loadable YAML document, inline secrets included: only for the
/// daemon's state file, which is written with mode 0600.
pub fn state_yaml(spec: &Spec) -> String {
    let mut out = String::from("# Written by haconn: the last applied spec. Do not edit.\n");
    emit(&spec.to_value(&Revealed), 0, &mut out, Ctx::Top);
    out
}

/// A unified diff of two specs' normalized forms (empty when they render the same).
pub fn unified_diff(old: &Spec, new: &Spec, old_name: &str, new_name: &str) -> String {
    let (a, b) = (normalized_yaml(old), normalized_yaml(new));
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    MapValue,
    SeqItem,
}

/// Block-style YAML for a JSON value. Strings are plain when that round-trips, else
/// double-quoted with JSON escapes (a JSON string is a valid YAML double-quoted scalar).
fn emit(v: &Value, indent: usize, out: &mut String, ctx: Ctx) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for (i, (k, val)) in m.iter().enumerate() {
                if !(ctx == Ctx::SeqItem && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str(&scalar_str(k));
                out.push(':');
                match val {
                    Value::Object(o) if !o.is_empty() => emit(val, indent + 2, out, Ctx::MapValue),
                    Value::Array(a) if !a.is_empty() => emit(val, indent, out, Ctx::MapValue),
                    _ => {
                        out.push(' ');
                        emit(val, indent + 2, out, Ctx::MapValue);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for item in a {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(o) if !o.is_empty() => emit(item, indent + 2, out, Ctx::SeqItem),
                    _ => emit(item, indent + 2, out, Ctx::SeqItem),
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        Value::String(s) => {
            out.push_str(&scalar_str(s));
            out.push('\n');
        }
        other => {
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

fn scalar_str(s: &str) -> String {
    let plain_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-' | ':' | '+'));
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_'));
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    let numeric = s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o");
    if plain_chars && first_ok && !reserved && !numeric && !s.ends_with(':') && !s.contains(": ") {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::load_str;

    #[test]
    fn emitted_yaml_reads_back_the_same() {
        let v = serde_json::json!({
            "a": "off", "b": "1.5", "c": 3, "d": {"e": [1, "x y", {"f": true, "g": []}]},
            "h": [], "i": {}, "j": "with: colon", "k": "1.3.6.1", "l": "10.0.0.1/24", "m": null
        });
        let mut out = String::new();
        emit(&v, 0, &mut out, Ctx::Top);
        assert_eq!(load_str(&out).unwrap().value, v, "{out}");
    }
}
