//! One tree for a config document, whatever it was written in.
//!
//! A local file is TOML and every node keeps the 1-based line it was written on; a remote
//! overlay pushed over MQTT is JSON and has no lines. Both become the same [`Node`] tree,
//! so one reader (`parse`) validates both and a later overlay merge can lay one tree over
//! another with [`Table::get_mut`] / [`Table::set`] without caring where either came from.
//!
//! Invariants: table entries keep document order (TOML keys are re-sorted by their
//! position in the text, since the parser stores them alphabetically); each entry keeps
//! the line of its own key, each node the line where its value (or table header) starts.
//! This module knows nothing of the config's keys: it never validates, only converts.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A value and the line it was written on (`None` for JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: Option<u32>,
    pub value: Value,
}

/// The kinds of value a config document can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    /// A TOML datetime, kept as written; readers decide what they accept.
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Value {
    /// How an error message names this kind of value: `expected a string, got an integer`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// One key of a table, with the line of the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub line: Option<u32>,
    pub node: Node,
}

/// A table: keys in document order, each at most once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    /// Replaces the entry for `key` in place (keeping its position), or appends one.
    pub fn set(&mut self, key: &str, line: Option<u32>, node: Node) {
        match self.get_mut(key) {
            Some(entry) => {
                entry.line = line;
                entry.node = node;
            }
            None => self.entries.push(Entry {
                key: key.to_owned(),
                line,
                node,
            }),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let at = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(at))
    }
}

/// TOML that does not parse: the parser's message on one line, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<u32>,
    pub message: String,
}

/// A JSON value with no config equivalent (`null`, a number out of range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub path: String,
    pub message: String,
}

/// Parses a TOML document into a tree whose root is a table.
pub fn from_toml(text: &str) -> Result<Table, SyntaxError> {
    let lines = LineIndex::new(text);
    match DeTable::parse(text) {
        Ok(root) => Ok(toml_table(root.get_ref(), &lines)),
        Err(err) => Err(SyntaxError {
            line: err.span().map(|s| lines.line(s.start)),
            message: syntax_message(text, err.message(), err.span()),
        }),
    }
}

/// Parses as much of a TOML document as the parser can recover, ignoring its errors.
/// For finding `agent.state_dir` in a broken file, never for running on.
pub fn from_toml_lenient(text: &str) -> Table {
    let lines = LineIndex::new(text);
    let (root, _errors) = DeTable::parse_recoverable(text);
    toml_table(root.get_ref(), &lines)
}

/// Converts a JSON document (a remote overlay) into a tree; every value without a
/// config equivalent is reported with its path.
pub fn from_json(value: &serde_json::Value) -> Result<Node, Vec<JsonError>> {
    let mut errors = Vec::new();
    let node = json_node(value, "", &mut errors);
    if errors.is_empty() {
        Ok(node)
    } else {
        Err(errors)
    }
}

/// The parser's message, made readable: a bare "duplicate key" says which key or table.
fn syntax_message(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = one_line(message);
    let Some(span) = span.filter(|_| message == "duplicate key") else {
        return message;
    };
    let key = text.get(span.clone()).unwrap_or_default();
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let line = line.split('#').next().unwrap_or_default().trim();
    if line.starts_with('[') {
        format!("duplicate key {key:?}: table {line} is defined twice")
    } else {
        format!("duplicate key {key:?}: a key is set twice in the same table")
    }
}

/// The parser's message as one lowercase line without a trailing period.
fn one_line(message: &str) -> String {
    let joined = message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let trimmed = joined.trim_end_matches('.');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid toml".to_owned(),
    }
}

/// Byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> u32 {
        let idx = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        u32::try_from(idx + 1).unwrap_or(u32::MAX)
    }
}

fn toml_table(table: &DeTable<'_>, lines: &LineIndex) -> Table {
    let mut entries: Vec<(usize, Entry)> = table
        .iter()
        .map(|(key, value)| {
            let start = key.span().start;
            let entry = Entry {
                key: key.get_ref().to_string(),
                line: Some(lines.line(start)),
                node: toml_node(value, lines),
            };
            (start, entry)
        })
        .collect();
    entries.sort_by_key(|(start, _)| *start);
    Table {
        entries: entries.into_iter().map(|(_, e)| e).collect(),
    }
}

fn toml_node(value: &Spanned<DeValue<'_>>, lines: &LineIndex) -> Node {
    let line = Some(lines.line(value.span().start));
    let value = match value.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::Integer(n),
            // Only a literal past i64 gets here; keep its text so the reader can say so.
            Err(_) => Value::String(i.to_string()),
        },
        DeValue::Float(f) => Value::Float(parse_toml_float(f.as_str())),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|v| toml_node(v, lines)).collect()),
        DeValue::Table(t) => Value::Table(toml_table(t, lines)),
    };
    Node { line, value }
}

/// TOML spells the special floats `inf`, `+inf`, `-inf`, `nan`; readers reject them.
fn parse_toml_float(text: &str) -> f64 {
    match text.trim_start_matches(['+', '-']) {
        "inf" if text.starts_with('-') => f64::NEG_INFINITY,
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => text.parse().unwrap_or(f64::NAN),
    }
}

fn json_node(value: &serde_json::Value, path: &str, errors: &mut Vec<JsonError>) -> Node {
    let value = match value {
        serde_json::Value::Null => {
            errors.push(JsonError {
                path: path_or_root(path),
                message: "null is not a value here".to_owned(),
            });
            Value::Bool(false)
        }
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if n.is_u64() {
                errors.push(JsonError {
                    path: path_or_root(path),
                    message: format!("integer {n} is out of range"),
                });
                Value::Integer(i64::MAX)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_node(v, &format!("{path}[{i}]"), errors))
                .collect(),
        ),
        serde_json::Value::Object(map) => Value::Table(Table {
            entries: map
                .iter()
                .map(|(k, v)| {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    Entry {
                        key: k.clone(),
                        line: None,
                        node: json_node(v, &child, errors),
                    }
                })
                .collect(),
        }),
    };
    Node { line: None, value }
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        "config".to_owned()
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(t: &'a Table, key: &str) -> &'a Entry {
        t.get(key).expect("test key present")
    }

    #[test]
    fn toml_keeps_document_order_and_lines() {
        let text = "zeta = 1\nalpha = \"a\"\n\n[agent]\nid = \"x\"\n\n[[bus]]\nname = \"b\"\n[[bus]]\nname = \"c\"\n";
        let root = from_toml(text).expect("parses");
        let keys: Vec<_> = root.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha", "agent", "bus"]);
        assert_eq!(entry(&root, "alpha").line, Some(2));
        let Value::Table(agent) = &entry(&root, "agent").node.value else {
            panic!("agent is a table")
        };
        assert_eq!(entry(agent, "id").line, Some(5));
        let Value::Array(buses) = &entry(&root, "bus").node.value else {
            panic!("bus is an array")
        };
        assert_eq!(buses.len(), 2);
        let Value::Table(second) = &buses[1].value else {
            panic!("bus entry is a table")
        };
        assert_eq!(entry(second, "name").line, Some(10));
    }

    #[test]
    fn toml_values_convert() {
        let root = from_toml("a = 0x10\nb = 1.5\nc = true\nd = 2026-01-01T00:00:00Z\ne = inf\n")
            .expect("parses");
        assert_eq!(entry(&root, "a").node.value, Value::Integer(16));
        assert_eq!(entry(&root, "b").node.value, Value::Float(1.5));
        assert_eq!(entry(&root, "c").node.value, Value::Bool(true));
        assert_eq!(
            entry(&root, "d").node.value,
            Value::Datetime("2026-01-01T00:00:00Z".into())
        );
        assert_eq!(entry(&root, "e").node.value, Value::Float(f64::INFINITY));
    }

    #[test]
    fn syntax_error_has_line_and_one_line_message() {
        let err = from_toml("a = 1\nb = \n").expect_err("broken");
        assert_eq!(err.line, Some(2));
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn duplicate_keys_say_which() {
        let err = from_toml("a = 1\n[t]\nb = 1\n[t]\n").expect_err("duplicate");
        assert_eq!(
            err,
            SyntaxError {
                line: Some(4),
                message: "duplicate key \"t\": table [t] is defined twice".into()
            }
        );
        let err = from_toml("a = 1\na = 2\n").expect_err("duplicate");
        assert_eq!(
            err.message,
            "duplicate key \"a\": a key is set twice in the same table"
        );
    }

    #[test]
    fn json_has_no_lines_and_reports_null() {
        let v = serde_json::json!({"jobs": {"sample": {"every": "1m"}}, "x": [1, null]});
        let errs = from_json(&v).expect_err("null");
        assert_eq!(
            errs,
            vec![JsonError {
                path: "x[1]".into(),
                message: "null is not a value here".into()
            }]
        );
        let ok = from_json(&serde_json::json!({"a": 1})).expect("converts");
        assert_eq!(ok.line, None);
    }

    #[test]
    fn set_replaces_in_place_or_appends() {
        let mut t = Table::default();
        t.set(
            "a",
            None,
            Node {
                line: None,
                value: Value::Integer(1),
            },
        );
        t.set(
            "b",
            None,
            Node {
                line: None,
                value: Value::Integer(2),
            },
        );
        t.set(
            "a",
            Some(3),
            Node {
                line: None,
                value: Value::Integer(3),
            },
        );
        assert_eq!(t.entries[0].node.value, Value::Integer(3));
        assert_eq!(t.entries.len(), 2);
        assert!(t.remove("b").is_some());
        assert_eq!(t.entries.len(), 1);
    }
}
