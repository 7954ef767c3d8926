//! Specs that hold a recognizable value in a secret field together with an error
//! elsewhere, for every secret field of the schema (`haconn::spec::secret_fields`, read
//! from the schema's secret mark, so a secret field added later is covered without
//! touching this file). Shared by the CLI and daemon tests (included with `#[path]`).

use serde_json::{Value, json};

/// The recognizable value: valid for every inline secret rule (8–20 characters, letters
/// and digits), so the only errors are the ones a variant puts elsewhere.
pub const MARK: &str = "Qx9LeakMark0Zz7w";

/// One spec per (secret field, kind of error elsewhere): `(name, JSON text)`. JSON is
/// YAML, so the text is a spec file as it is.
pub fn variants(base_yaml: &str) -> Vec<(String, String)> {
    let base = haconn::spec::yaml::load_str(base_yaml)
        .expect("the base spec loads")
        .value;
    let fields = haconn::spec::secret_fields();
    assert!(
        fields.len() >= 8,
        "the schema marks too few secret fields: {fields:?}"
    );
    let mut out = Vec::new();
    for field in &fields {
        let segs = segments(field);
        let (last, parent) = segs.split_last().expect("a field path");
        let Seg::Key(last) = last else {
            panic!("{field} does not end in a key")
        };
        let mark = Value::String(MARK.into());
        let long = Value::String(format!("{}$ '#", MARK.repeat(20)));
        let mut add = |kind: &str, doc: Value| {
            out.push((
                format!("{field} ({kind})"),
                serde_json::to_string_pretty(&doc).expect("json"),
            ));
        };
        let with = |value: &Value| {
            let mut doc = base.clone();
            *node(&mut doc, parent) = ensure_object(node(&mut doc, parent).take());
            node(&mut doc, parent)[last.as_str()] = value.clone();
            doc
        };

        let mut doc = with(&mark);
        doc["bogusTopLevelKey"] = json!(1);
        add("unknown key at the top", doc);

        let mut doc = with(&mark);
        node(&mut doc, parent)["bogusSiblingKey"] = json!(1);
        add("unknown key beside it", doc);

        let mut doc = with(&mark);
        *node(&mut doc, parent) = json!({ last.as_str(): MARK });
        doc["bogusTopLevelKey"] = json!(1);
        add("alone in its object", doc);

        let mut doc = with(&mark);
        let holder = node(&mut doc, parent).take();
        *node(&mut doc, parent) = json!([holder]);
        add("its object inside a list", doc);

        let mut doc = with(&mark);
        doc["hispeed"] = json!(50);
        add("a range error elsewhere", doc);

        let mut doc = with(&long);
        doc["bogusTopLevelKey"] = json!(1);
        add("too long, with refused characters", doc);

        let mut doc = with(&long);
        doc["hispeed"] = json!(50);
        add("too long, and a range error elsewhere", doc);
    }
    out
}

enum Seg {
    Key(String),
    Index,
}

/// `servers[].bmc.password` → servers, [0], bmc, password.
fn segments(field: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in field.split('.') {
        let mut part = part;
        let mut indexes = 0;
        while let Some(p) = part.strip_suffix("[]") {
            part = p;
            indexes += 1;
        }
        segs.push(Seg::Key(part.to_string()));
        segs.extend((0..indexes).map(|_| Seg::Index));
    }
    segs
}

fn ensure_object(v: Value) -> Value {
    if v.is_object() { v } else { json!({}) }
}

/// The node at `segs`, created (objects, or a list of one object) where missing.
fn node<'a>(doc: &'a mut Value, segs: &[Seg]) -> &'a mut Value {
    let mut at = doc;
    for (i, seg) in segs.iter().enumerate() {
        at = match seg {
            Seg::Key(k) => {
                if !at.is_object() {
                    *at = json!({});
                }
                let next_is_index = matches!(segs.get(i + 1), Some(Seg::Index));
                let entry = at
                    .as_object_mut()
                    .expect("an object")
                    .entry(k.clone())
                    .or_insert(if next_is_index { json!([]) } else { json!({}) });
                if next_is_index && !entry.is_array() {
                    *entry = json!([]);
                }
                entry
            }
            Seg::Index => {
                let list = at.as_array_mut().expect("a list");
                if list.is_empty() {
                    list.push(json!({}));
                }
                &mut list[0]
            }
        };
    }
    at
}
