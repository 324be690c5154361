//! Laying a remote overlay over the local file, tree on tree (SPEC section 8, "Overlay
//! merge"), before either is validated as a whole.
//!
//! The rules: a job is merged key by key over the file's job of the same name (a new
//! name adds a job), and a trigger key (`every`, `cron`, `at`) in the overlay drops the
//! file's trigger first, so a job never has two; a `[[bus]]`, `[[sensor]]` or
//! `[[alarm]]` entry replaces the file's entry with the same `name`/`id` whole, or is
//! added; `upload` and `buffer` keys override the file's one by one. A value of the
//! wrong type replaces the file's value whole, so the validator names it at its own
//! path. Values below those levels (a job's `retry`, `env`, a sensor's `model`) are
//! replaced whole, never merged.
//!
//! Invariants: the merged tree has no line numbers (a push has none, and a line of the
//! file would mislead in an answer to a push); every array entry of the merged tree
//! knows where it came from ([`Origins`]), so an error is named by the overlay's own
//! index, which is what the sender wrote. This module does not validate: it only moves
//! nodes; duplicate names within one overlay are the one thing it reports itself,
//! because a merge cannot say which of the two was meant.

use std::collections::HashMap;

use crate::config::node::{Node, Table, Value};

/// The sections an overlay may hold.
pub(super) const SECTIONS: [&str; 6] = ["jobs", "bus", "sensor", "alarm", "upload", "buffer"];
/// Sections that stay the local file's alone.
const FILE_ONLY: [&str; 3] = ["agent", "mqtt", "metrics"];
const TRIGGER_KEYS: [&str; 3] = ["every", "cron", "at"];
/// Array sections whose entries are matched by a key, and how errors name that key.
const KEYED: [(&str, &str, &str); 3] = [
    ("bus", "name", "bus name"),
    ("sensor", "id", "sensor id"),
    ("alarm", "id", "alarm id"),
];

/// A problem in the overlay itself, named in the overlay's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub path: String,
    pub message: String,
}

/// Every key of the overlay that is not a section it may hold.
pub(super) fn check_sections(overlay: &Table) -> Vec<Problem> {
    overlay
        .entries
        .iter()
        .filter(|e| !SECTIONS.contains(&e.key.as_str()))
        .map(|e| {
            let why = if FILE_ONLY.contains(&e.key.as_str()) {
                format!("[{}] is the local file's alone", e.key)
            } else {
                format!("unknown section {:?}", e.key)
            };
            Problem {
                path: e.key.clone(),
                message: format!(
                    "{why}: a remote overlay may hold only {}",
                    SECTIONS.join(", ")
                ),
            }
        })
        .collect()
}

/// Where an entry of a merged array came from: its index in the file or the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File(usize),
    Overlay(usize),
}

/// For each keyed array of a merged tree, where each of its entries came from.
#[derive(Debug, Default)]
pub(super) struct Origins {
    arrays: Vec<(&'static str, Vec<Origin>)>,
}

impl Origins {
    /// A merged tree's error path in the sender's terms: `sensor[4].slave` becomes
    /// `sensor[1].slave` when the overlay's second sensor landed there. An entry that
    /// came from the local file keeps the file's index and is said to be the file's.
    pub(super) fn rename(&self, path: &str, message: &str) -> (String, String) {
        for (key, origins) in &self.arrays {
            let Some(rest) = path.strip_prefix(key).and_then(|r| r.strip_prefix('[')) else {
                continue;
            };
            let Some((index, rest)) = rest.split_once(']') else {
                continue;
            };
            let Some(origin) = index.parse::<usize>().ok().and_then(|i| origins.get(i)) else {
                continue;
            };
            return match origin {
                Origin::Overlay(i) => (format!("{key}[{i}]{rest}"), message.to_owned()),
                Origin::File(j) => (
                    format!("{key}[{j}]{rest}"),
                    format!("{message} (in the local file)"),
                ),
            };
        }
        (path.to_owned(), message.to_owned())
    }
}

/// The file's tree with the overlay laid over it, where each array entry came from,
/// and the overlay's own problems.
pub(super) fn lay_over(file: &Table, overlay: &Table) -> (Table, Origins, Vec<Problem>) {
    let mut root = file.clone();
    strip_lines(&mut root);
    let mut problems = Vec::new();
    let mut origins = Origins::default();
    for (key, id_key, what) in KEYED {
        let mut from = match root.get(key).map(|e| &e.node.value) {
            Some(Value::Array(items)) => (0..items.len()).map(Origin::File).collect(),
            _ => Vec::new(),
        };
        if let Some(entry) = overlay.get(key) {
            merge_entries(
                &mut root,
                (key, id_key, what),
                &entry.node,
                &mut from,
                &mut problems,
            );
        }
        origins.arrays.push((key, from));
    }
    if let Some(entry) = overlay.get("jobs") {
        merge_jobs(&mut root, &entry.node);
    }
    for key in ["upload", "buffer"] {
        if let Some(entry) = overlay.get(key) {
            merge_keys(&mut root, key, &entry.node);
        }
    }
    (root, origins, problems)
}

/// `[[bus]]`, `[[sensor]]` or `[[alarm]]`: an entry replaces the file's entry with the
/// same name whole, or is added after the file's.
fn merge_entries(
    root: &mut Table,
    (key, id_key, what): (&'static str, &str, &str),
    node: &Node,
    origins: &mut Vec<Origin>,
    problems: &mut Vec<Problem>,
) {
    let Value::Array(items) = &node.value else {
        root.set(key, None, unlined(node));
        origins.clear();
        return;
    };
    if !matches!(root.get(key).map(|e| &e.node.value), Some(Value::Array(_))) {
        root.set(key, None, array(Vec::new()));
        origins.clear();
    }
    let Some(Value::Array(merged)) = root.get_mut(key).map(|e| &mut e.node.value) else {
        return;
    };
    // The file's entries by name: an overlay of thousands of entries stays linear.
    let in_file: HashMap<String, usize> = merged
        .iter()
        .enumerate()
        .filter_map(|(at, m)| Some((entry_key(m, id_key)?.to_owned(), at)))
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(id) = entry_key(item, id_key) {
            if let Some(first) = seen.get(id) {
                problems.push(Problem {
                    path: format!("{key}[{i}].{id_key}"),
                    message: format!("duplicate {what} {id:?} (also {key}[{first}])"),
                });
                continue;
            }
            seen.insert(id, i);
            if let Some(&at) = in_file.get(id)
                && let (Some(slot), Some(origin)) = (merged.get_mut(at), origins.get_mut(at))
            {
                *slot = unlined(item);
                *origin = Origin::Overlay(i);
                continue;
            }
        }
        merged.push(unlined(item));
        origins.push(Origin::Overlay(i));
    }
}

/// Jobs: key by key over the file's job of the same name; a trigger replaces a trigger.
fn merge_jobs(root: &mut Table, node: &Node) {
    let Value::Table(jobs) = &node.value else {
        root.set("jobs", None, unlined(node));
        return;
    };
    if !matches!(
        root.get("jobs").map(|e| &e.node.value),
        Some(Value::Table(_))
    ) {
        root.set("jobs", None, table(Table::default()));
    }
    let Some(Value::Table(merged)) = root.get_mut("jobs").map(|e| &mut e.node.value) else {
        return;
    };
    for job in &jobs.entries {
        let existing = merged.get_mut(&job.key).map(|e| &mut e.node.value);
        match (existing, &job.node.value) {
            (Some(Value::Table(file_job)), Value::Table(over)) => {
                if over
                    .entries
                    .iter()
                    .any(|e| TRIGGER_KEYS.contains(&e.key.as_str()))
                {
                    for key in TRIGGER_KEYS {
                        file_job.remove(key);
                    }
                }
                for e in &over.entries {
                    file_job.set(&e.key, None, unlined(&e.node));
                }
            }
            _ => merged.set(&job.key, None, unlined(&job.node)),
        }
    }
}

/// `upload`, `buffer`: the overlay's keys override the file's.
fn merge_keys(root: &mut Table, key: &str, node: &Node) {
    match (root.get_mut(key).map(|e| &mut e.node.value), &node.value) {
        (Some(Value::Table(file)), Value::Table(over)) => {
            for e in &over.entries {
                file.set(&e.key, None, unlined(&e.node));
            }
        }
        _ => root.set(key, None, unlined(node)),
    }
}

fn entry_key<'n>(item: &'n Node, id_key: &str) -> Option<&'n str> {
    let Value::Table(t) = &item.value else {
        return None;
    };
    match &t.get(id_key)?.node.value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn unlined(node: &Node) -> Node {
    let mut node = node.clone();
    strip_node(&mut node);
    node
}

fn array(items: Vec<Node>) -> Node {
    Node {
        line: None,
        value: Value::Array(items),
    }
}

fn table(t: Table) -> Node {
    Node {
        line: None,
        value: Value::Table(t),
    }
}

/// Removes every line number: the merged document answers a push, which has none.
pub(super) fn strip_lines(t: &mut Table) {
    for e in &mut t.entries {
        e.line = None;
        strip_node(&mut e.node);
    }
}

fn strip_node(node: &mut Node) {
    node.line = None;
    match &mut node.value {
        Value::Table(t) => strip_lines(t),
        Value::Array(items) => items.iter_mut().for_each(strip_node),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node;

    fn tree(json: serde_json::Value) -> Table {
        match node::from_json(&json).expect("json converts").value {
            Value::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    /// Lays `overlay` over the TOML `file` and compares the result with `expected`.
    fn check(file: &str, overlay: serde_json::Value, expected: serde_json::Value) {
        let file = node::from_toml(file).expect("file parses");
        let (merged, _, problems) = lay_over(&file, &tree(overlay));
        assert_eq!(problems, []);
        assert_eq!(to_json(&Value::Table(merged)), expected);
    }

    fn to_json(v: &Value) -> serde_json::Value {
        match v {
            Value::String(s) | Value::Datetime(s) => s.clone().into(),
            Value::Integer(i) => (*i).into(),
            Value::Float(f) => (*f).into(),
            Value::Bool(b) => (*b).into(),
            Value::Array(items) => items.iter().map(|n| to_json(&n.value)).collect(),
            Value::Table(t) => t
                .entries
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.node.value)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    #[test]
    fn jobs_merge_key_by_key_and_a_trigger_replaces_a_trigger() {
        check(
            "[jobs.sample]\nevery = \"5m\"\njitter = \"1s\"\n[jobs.x]\nkind = \"upload\"\ncron = \"0 * * * *\"\n",
            serde_json::json!({"jobs": {
                "sample": {"timeout": "10s"},
                "x": {"every": "1h"},
                "new": {"kind": "sample"},
            }}),
            serde_json::json!({"jobs": {
                "sample": {"every": "5m", "jitter": "1s", "timeout": "10s"},
                "x": {"kind": "upload", "every": "1h"},
                "new": {"kind": "sample"},
            }}),
        );
    }

    #[test]
    fn keyed_entries_are_replaced_whole_or_added() {
        check(
            "[[sensor]]\nid = \"a\"\nbus = \"b\"\nslave = 1\nunit = \"x\"\n[[sensor]]\nid = \"c\"\nbus = \"b\"\n",
            serde_json::json!({"sensor": [{"id": "c", "bus": "b2"}, {"id": "d", "bus": "b"}]}),
            serde_json::json!({"sensor": [
                {"id": "a", "bus": "b", "slave": 1, "unit": "x"},
                {"id": "c", "bus": "b2"},
                {"id": "d", "bus": "b"},
            ]}),
        );
    }

    #[test]
    fn upload_and_buffer_keys_override() {
        check(
            "[upload]\nurl = \"https://a\"\ngzip = true\n[buffer]\nmax_rows = 5\n",
            serde_json::json!({"upload": {"gzip": false}, "buffer": {"keep_uploaded": "1d"}}),
            serde_json::json!({
                "upload": {"url": "https://a", "gzip": false},
                "buffer": {"max_rows": 5, "keep_uploaded": "1d"},
            }),
        );
        check(
            "[agent]\nid = \"p\"\n",
            serde_json::json!({"upload": {"url": "https://b"}}),
            serde_json::json!({"agent": {"id": "p"}, "upload": {"url": "https://b"}}),
        );
    }

    #[test]
    fn wrong_types_replace_whole_so_the_validator_names_them() {
        check(
            "[jobs.sample]\nevery = \"5m\"\n[[bus]]\nname = \"b\"\n",
            serde_json::json!({"jobs": {"sample": 5}, "bus": {"name": "b"}}),
            serde_json::json!({"jobs": {"sample": 5}, "bus": {"name": "b"}}),
        );
    }

    #[test]
    fn merged_tree_has_no_lines() {
        let file = node::from_toml("[agent]\nid = \"p\"\n").expect("parses");
        let (merged, _, _) = lay_over(&file, &Table::default());
        let agent = merged.get("agent").expect("agent");
        assert_eq!(agent.line, None);
        let Value::Table(t) = &agent.node.value else {
            panic!("table")
        };
        assert_eq!(t.get("id").expect("id").line, None);
    }

    #[test]
    fn errors_are_named_by_the_overlays_index() {
        let file = node::from_toml(
            "[[sensor]]\nid = \"a\"\nbus = \"b\"\n[[sensor]]\nid = \"b\"\nbus = \"b\"\n",
        )
        .expect("parses");
        let overlay = tree(serde_json::json!({"sensor": [{"id": "z"}, {"id": "a"}]}));
        let (_, origins, _) = lay_over(&file, &overlay);
        // Merged: a (overlay 1), b (file 1), z (overlay 0).
        let check = |path: &str, expected: &str| {
            assert_eq!(origins.rename(path, "m").0, expected, "{path}");
        };
        check("sensor[0].slave", "sensor[1].slave");
        check("sensor[2]", "sensor[0]");
        check("sensor[1].bus", "sensor[1].bus");
        check("jobs.x.every", "jobs.x.every");
        check("sensor[9]", "sensor[9]");
        assert!(
            origins
                .rename("sensor[1].bus", "m")
                .1
                .contains("local file")
        );
        assert_eq!(origins.rename("sensor[0]", "m").1, "m");
    }

    #[test]
    fn a_name_given_twice_in_one_overlay_is_reported_not_guessed() {
        let file = node::from_toml("[agent]\nid = \"p\"\n").expect("parses");
        let overlay =
            tree(serde_json::json!({"bus": [{"name": "x"}, {"name": "y"}, {"name": "x"}]}));
        let (_, _, problems) = lay_over(&file, &overlay);
        assert_eq!(
            problems,
            [Problem {
                path: "bus[2].name".into(),
                message: "duplicate bus name \"x\" (also bus[0])".into()
            }]
        );
    }

    #[test]
    fn sections_outside_the_overlay_are_named() {
        let problems = check_sections(&tree(serde_json::json!({
            "agent": {"id": "x"}, "jobs": {}, "metrics": {}, "colour": 1
        })));
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["agent", "colour", "metrics"]);
        assert_eq!(
            problems[0].message,
            "[agent] is the local file's alone: a remote overlay may hold only jobs, bus, sensor, alarm, upload, buffer"
        );
    }
}
