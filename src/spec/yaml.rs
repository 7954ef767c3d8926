//! Strict YAML loading: bytes → JSON value plus an index from YAML path to line/column.
//!
//! We read the saphyr event stream ourselves instead of deserializing straight into
//! structs, because a cluster spec must be refused loudly for things a serde YAML
//! deserializer lets through or reports without a position: duplicate keys, alias
//! bombs, merge keys, deep nesting, several documents. The result is plain JSON
//! (YAML 1.2 core schema, so `off`/`yes` stay strings) that the JSON Schema and serde
//! both read, and a [`PathIndex`] that turns any error path back into a line.

use std::collections::HashMap;
use std::rc::Rc;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use super::path::{Path, Seg};

/// Largest spec file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to once aliases are resolved.
pub const MAX_NODES: usize = 1_000_000;
/// Most bytes of scalar text a document may expand to once aliases are resolved.
pub const MAX_EXPANDED_BYTES: usize = 4 * MAX_FILE_BYTES;

/// A position in the source, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Self {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// Why a document could not be loaded at all; reported with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl LoadError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        LoadError {
            pos: Some(pos),
            message: message.into(),
        }
    }
}

/// Where each path of the document was written: the node tree with positions, kept so a
/// diagnostic's path is turned into a line only when one is reported.
#[derive(Debug, Clone)]
pub struct PathIndex {
    root: Rc<Node>,
}

impl PathIndex {
    /// Position of the value at `path`, or of its nearest written ancestor.
    pub fn value_pos(&self, path: &Path) -> Option<Pos> {
        self.walk(path).map(|(_, node)| node.pos())
    }

    /// Position of the key of `path` when it is a mapping entry, else of its value.
    pub fn key_pos(&self, path: &Path) -> Option<Pos> {
        self.walk(path)
            .map(|(key, node)| key.unwrap_or_else(|| node.pos()))
    }

    /// The deepest node along `path`, with the position of its key when it is a mapping entry.
    fn walk(&self, path: &Path) -> Option<(Option<Pos>, &Node)> {
        let mut node: &Node = &self.root;
        let mut key = None;
        for seg in path.segments() {
            let next = match (seg, node) {
                (Seg::Key(k), Node::Map { entries, .. }) => entries
                    .iter()
                    .find(|(name, _, _)| name == k)
                    .map(|(_, kpos, n)| (Some(*kpos), &**n)),
                (Seg::Index(i), Node::Seq { items, .. }) => items.get(*i).map(|n| (None, &**n)),
                _ => None,
            };
            match next {
                Some((k, n)) => {
                    key = k;
                    node = n;
                }
                None => break,
            }
        }
        Some((key, node))
    }
}

/// A loaded document.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    pub index: PathIndex,
}

/// Loads one YAML document from raw bytes with every guard on.
pub fn load_bytes(bytes: &[u8]) -> Result<Document, LoadError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LoadError {
            pos: None,
            message: format!(
                "file is {} bytes, larger than the {} byte limit for a spec",
                bytes.len(),
                MAX_FILE_BYTES
            ),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col_of_byte(bytes, e.valid_up_to());
        LoadError::at(
            Pos { line, column },
            format!("file is not valid UTF-8 (byte offset {})", e.valid_up_to()),
        )
    })?;
    load_str(text)
}

fn line_col_of_byte(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Loads one YAML document from text with every guard on.
pub fn load_str(text: &str) -> Result<Document, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let tree = Builder::new(text).build()?;
    let value = to_json(&tree);
    Ok(Document {
        value,
        index: PathIndex { root: tree },
    })
}

#[derive(Debug)]
enum Node {
    Scalar {
        value: String,
        plain: bool,
        tag: Option<String>,
        pos: Pos,
    },
    Seq {
        items: Vec<Rc<Node>>,
        pos: Pos,
    },
    Map {
        entries: Vec<(String, Pos, Rc<Node>)>,
        pos: Pos,
    },
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Rc<Node>>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(String, Pos, Rc<Node>)>,
        pending_key: Option<(String, Pos)>,
        pos: Pos,
        anchor: usize,
    },
}

struct Builder<'a> {
    text: &'a str,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, (Rc<Node>, Size)>,
    stack: Vec<Frame>,
    expanded: Size,
}

/// The tab in a line's leading whitespace nearest to line `near` (the line after it
/// first: the scanner often stops at the end of the line before the tab).
fn indentation_tab(text: &str, near: usize) -> Option<Pos> {
    let tabs = text.lines().enumerate().filter_map(|(i, line)| {
        let lead = line.chars().take_while(|c| *c == ' ' || *c == '\t');
        let column = lead.take_while(|c| *c == ' ').count() + 1;
        line.chars().nth(column - 1).filter(|c| *c == '\t')?;
        Some(Pos {
            line: i + 1,
            column,
        })
    });
    tabs.min_by_key(|p| (p.line.abs_diff(near), p.line < near))
}

/// How much a subtree weighs once expanded: nodes and bytes of scalar text.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            parser: Parser::new_from_str(text),
            anchors: HashMap::new(),
            stack: Vec::new(),
            expanded: Size::default(),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), LoadError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let pos = Pos::from_marker(*e.marker());
                // The scanner reports a tab where it gave up, often the end of the line
                // before: point at the tab itself.
                if e.info().contains("tab")
                    && let Some(tab) = indentation_tab(self.text, pos.line)
                {
                    return Err(LoadError::at(
                        tab,
                        "invalid YAML: tabs are not allowed for indentation (indent with spaces)",
                    ));
                }
                Err(LoadError::at(pos, format!("invalid YAML: {}", e.info())))
            }
            None => Err(LoadError {
                pos: None,
                message: "invalid YAML: unexpected end of input".into(),
            }),
        }
    }

    fn count(&mut self, add: Size, pos: Pos) -> Result<(), LoadError> {
        self.expanded.nodes += add.nodes;
        self.expanded.bytes += add.bytes;
        if self.expanded.nodes > MAX_NODES || self.expanded.bytes > MAX_EXPANDED_BYTES {
            return Err(LoadError::at(
                pos,
                format!(
                    "document expands to more than {MAX_NODES} nodes or {MAX_EXPANDED_BYTES} bytes (alias bomb?); refused"
                ),
            ));
        }
        Ok(())
    }

    fn build(mut self) -> Result<Rc<Node>, LoadError> {
        let mut root: Option<Rc<Node>> = None;
        let mut documents = 0usize;
        loop {
            let (event, span) = self.next()?;
            let pos = Pos::from_marker(span.start);
            let finished: Option<(Rc<Node>, usize)> = match event {
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => None,
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(LoadError::at(
                            pos,
                            "a spec file holds exactly one YAML document; found a second `---`",
                        ));
                    }
                    None
                }
                Event::Alias(id) => {
                    let Some((node, size)) = self.anchors.get(&id).cloned() else {
                        return Err(LoadError::at(pos, "alias refers to an unknown anchor"));
                    };
                    self.count(size, pos)?;
                    Some((node, 0))
                }
                Event::Scalar(value, style, anchor, tag) => {
                    self.count(
                        Size {
                            nodes: 1,
                            bytes: value.len(),
                        },
                        pos,
                    )?;
                    let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                    let node = Rc::new(Node::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag,
                        pos,
                    });
                    Some((node, anchor))
                }
                Event::SequenceStart(anchor, _) => {
                    self.open(pos)?;
                    self.stack.push(Frame::Seq {
                        items: Vec::new(),
                        pos,
                        anchor,
                    });
                    None
                }
                Event::MappingStart(anchor, _) => {
                    self.open(pos)?;
                    self.stack.push(Frame::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        pos,
                        anchor,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                    Some(Frame::Seq { items, pos, anchor }) => {
                        Some((Rc::new(Node::Seq { items, pos }), anchor))
                    }
                    Some(Frame::Map {
                        entries,
                        pos,
                        anchor,
                        ..
                    }) => Some((Rc::new(Node::Map { entries, pos }), anchor)),
                    None => None,
                },
            };
            if let Some((node, anchor)) = finished {
                if anchor != 0 {
                    let size = subtree_size(&node);
                    self.anchors.insert(anchor, (node.clone(), size));
                }
                self.attach(node, &mut root)?;
            }
        }
        root.ok_or_else(|| LoadError {
            pos: None,
            message: "the spec file is empty".into(),
        })
    }

    fn open(&mut self, pos: Pos) -> Result<(), LoadError> {
        self.count(Size { nodes: 1, bytes: 0 }, pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(LoadError::at(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels; refused"),
            ));
        }
        Ok(())
    }

    fn attach(&mut self, node: Rc<Node>, root: &mut Option<Rc<Node>>) -> Result<(), LoadError> {
        match self.stack.last_mut() {
            None => *root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let Node::Scalar { value, .. } = &*node else {
                        return Err(LoadError::at(
                            node.pos(),
                            "mapping keys must be plain strings, not lists or mappings",
                        ));
                    };
                    if value == "<<" {
                        return Err(LoadError::at(
                            node.pos(),
                            "merge keys (`<<`) are not supported; put the anchor on a whole value instead",
                        ));
                    }
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| k == value) {
                        return Err(LoadError::at(
                            node.pos(),
                            format!(
                                "duplicate key `{value}` (first defined at line {})",
                                first.line
                            ),
                        ));
                    }
                    *pending_key = Some((value.clone(), node.pos()));
                }
                Some((key, key_pos)) => entries.push((key, key_pos, node)),
            },
        }
        Ok(())
    }
}

fn subtree_size(node: &Node) -> Size {
    let children = |nodes: &mut dyn Iterator<Item = &Rc<Node>>| {
        nodes.fold(Size { nodes: 1, bytes: 0 }, |acc, n| {
            let s = subtree_size(n);
            Size {
                nodes: acc.nodes + s.nodes,
                bytes: acc.bytes + s.bytes,
            }
        })
    };
    match node {
        Node::Scalar { value, .. } => Size {
            nodes: 1,
            bytes: value.len(),
        },
        Node::Seq { items, .. } => children(&mut items.iter()),
        Node::Map { entries, .. } => {
            let mut s = children(&mut entries.iter().map(|(_, _, n)| n));
            s.bytes += entries.iter().map(|(k, _, _)| k.len()).sum::<usize>();
            s
        }
    }
}

fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar {
            value, plain, tag, ..
        } => scalar(value, *plain, tag.as_deref()),
        Node::Seq { items, .. } => Value::Array(items.iter().map(|n| to_json(n)).collect()),
        Node::Map { entries, .. } => {
            let mut map = Map::with_capacity(entries.len());
            for (key, _, item) in entries {
                map.insert(key.clone(), to_json(item));
            }
            Value::Object(map)
        }
    }
}

/// YAML 1.2 core schema resolution of a scalar.
fn scalar(value: &str, plain: bool, tag: Option<&str>) -> Value {
    match tag {
        Some("tag:yaml.org,2002:str") | Some("!!str") => return Value::String(value.into()),
        _ => {}
    }
    if !plain {
        return Value::String(value.into());
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(value) {
        return Value::Number(n);
    }
    if looks_like_float(value)
        && let Some(n) = value.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(n);
    }
    Value::String(value.into())
}

fn parse_int(s: &str) -> Option<Number> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let n = i64::try_from(magnitude).ok()?;
        Some(Number::from(-n))
    } else {
        Some(Number::from(magnitude))
    }
}

fn looks_like_float(s: &str) -> bool {
    let body = s.trim_start_matches(['-', '+']);
    !body.is_empty()
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && body.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> LoadError {
        load_str(text).expect_err("should be refused")
    }

    #[test]
    fn scalars_follow_yaml_1_2_core() {
        let doc = load_str("a: off\nb: yes\nc: 0x10\nd: '5'\ne: 1.5\nf: true\ng: ~\n").unwrap();
        assert_eq!(
            doc.value,
            serde_json::json!({"a":"off","b":"yes","c":16,"d":"5","e":1.5,"f":true,"g":null})
        );
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let e = err("a: 1\nb: 2\na: 3\n");
        assert_eq!(e.pos.unwrap().line, 3);
        assert!(e.message.contains("duplicate key `a`"), "{e}");
        assert!(e.message.contains("line 1"), "{e}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let e = err(&text);
        assert!(e.message.contains("alias bomb"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn alias_bomb_of_long_strings_is_refused() {
        let text = format!(
            "a: &a {}\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 1000].join(", ")
        );
        assert!(err(&text).message.contains("alias bomb"));
    }

    #[test]
    fn small_aliases_are_fine() {
        let doc = load_str("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(doc.value["b"]["k"], 1);
    }

    #[test]
    fn merge_keys_multiple_documents_and_deep_nesting_are_refused() {
        assert!(
            err("a: &x {k: 1}\nb:\n  <<: *x\n")
                .message
                .contains("merge keys")
        );
        assert!(err("a: 1\n---\nb: 2\n").message.contains("exactly one"));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(err(&deep).message.contains("nesting"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = err("a: [1, 2\nb: 3\n");
        assert!(e.pos.is_some());
        assert!(e.message.starts_with("invalid YAML"));
    }

    /// Issue 18.12: a tab in the indentation is reported at the tab, wherever the
    /// scanner noticed it, saying tabs are not allowed.
    #[test]
    fn a_tab_in_the_indentation_is_reported_at_the_tab() {
        for (text, line, column) in [
            ("a:\n  b: 1\n\tc: 2\n", 3, 1),
            ("a:\n  b:\n  \tc: 2\n", 3, 3),
            ("a:\n\tb: 1\n", 2, 1),
            ("a: 1\nb:\n  - x\n\t- y\n", 4, 1),
            ("a: 1\nb: 2\nc:\n    d: 1\n  \t  e: 2\n", 5, 3),
        ] {
            let e = err(text);
            assert_eq!(e.pos, Some(Pos { line, column }), "{text:?}: {e}");
            assert!(
                e.message.contains("tabs are not allowed for indentation"),
                "{text:?}: {e}"
            );
        }
        // A tab inside a value is no indentation.
        assert_eq!(load_str("a: \"x\ty\"\n").unwrap().value["a"], "x\ty");
    }

    #[test]
    fn non_utf8_and_oversize_are_refused() {
        let e = load_bytes(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!(e.pos.unwrap().line, 2);
        assert!(e.message.contains("UTF-8"));
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(load_bytes(&big).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn index_maps_paths_to_lines() {
        let doc = load_str("servers:\n  - name: a\n    bmc:\n      port: 623\n").unwrap();
        let p: Path = "servers[0].bmc.port".parse().unwrap();
        assert_eq!(doc.index.value_pos(&p).unwrap().line, 4);
        let missing: Path = "servers[0].bmc.password".parse().unwrap();
        assert_eq!(doc.index.value_pos(&missing).unwrap().line, 4);
    }
}
