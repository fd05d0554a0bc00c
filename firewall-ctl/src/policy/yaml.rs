//! YAML text → a small located tree.
//!
//! Why `saphyr-parser` (pinned `=0.3.4`): serde_yaml is archived, and the
//! policy errors must say `FILE:LINE:COL`, which needs the position of every
//! node. saphyr is the maintained successor of yaml-rust (YAML 1.2, builds on
//! rustc 1.85+, only `arraydeque` and `thiserror` as dependencies), and its
//! parser emits every event with its span. We build our own tree from those
//! events rather than use saphyr's `MarkedYaml` loader because we need three
//! things the loader does not give: maps in file order, duplicate keys
//! reported (a hash map would silently keep the last one), and scalars kept
//! as text so that `ports: 22` and `ports: "22"` are read alike and `yes`
//! never turns into a boolean behind the user's back.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::error::{ErrorKind, Location, PolicyError};

/// A YAML node and where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    pub at: Location,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub enum Value {
    /// `plain` is false for quoted and block scalars: only a plain empty
    /// scalar, `~` or `null` is a null.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars; entries keep their file order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What the node is, for "X where Y was expected" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "an empty value",
            Value::Scalar { .. } => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The key text of a map key node (keys are always scalars).
    pub fn key_text(&self) -> &str {
        match &self.value {
            Value::Scalar { text, .. } => text,
            _ => "",
        }
    }
}

/// Parses one file. `None` for a file with no document (empty or only comments).
pub fn parse(file: &str, file_index: u32, text: &str) -> Result<Option<Node>, PolicyError> {
    Builder { file, file_index, stack: Vec::new(), anchors: HashMap::new(), root: None, docs: 0 }.run(text)
}

/// A collection being built: its start, its items, and for a map the key
/// waiting for its value.
struct Open {
    at: Location,
    anchor: usize,
    items: Vec<Node>,
    is_map: bool,
}

struct Builder<'a> {
    file: &'a str,
    file_index: u32,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    docs: u32,
}

impl Builder<'_> {
    fn at(&self, span: &Span) -> Location {
        Location {
            file_index: self.file_index,
            // saphyr lines count from 1 and columns from 0.
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
            file: self.file.to_owned(),
        }
    }

    fn error(&self, at: &Location, kind: ErrorKind) -> PolicyError {
        PolicyError::new(at, kind)
    }

    fn scan_error(&self, e: &ScanError) -> PolicyError {
        let m = e.marker();
        let at = Location {
            file_index: self.file_index,
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
            file: self.file.to_owned(),
        };
        self.error(&at, ErrorKind::Syntax(e.info().to_owned()))
    }

    fn run(mut self, text: &str) -> Result<Option<Node>, PolicyError> {
        for item in Parser::new_from_str(text) {
            let (event, span) = item.map_err(|e| self.scan_error(&e))?;
            let at = self.at(&span);
            match event {
                Event::DocumentStart(_) => {
                    self.docs += 1;
                    if self.docs > 1 {
                        return Err(self.error(&at, ErrorKind::MultipleDocuments));
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    if tag.is_some() {
                        return Err(self.error(&at, ErrorKind::UnsupportedYaml("YAML tags")));
                    }
                    let plain = style == ScalarStyle::Plain;
                    let node = Node { at, value: Value::Scalar { text: text.into_owned(), plain } };
                    self.push(node, anchor)?;
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    if tag.is_some() {
                        return Err(self.error(&at, ErrorKind::UnsupportedYaml("YAML tags")));
                    }
                    let is_map = matches!(event, Event::MappingStart(..));
                    self.stack.push(Open { at, anchor, items: Vec::new(), is_map });
                }
                Event::SequenceEnd | Event::MappingEnd => self.close()?,
                Event::Alias(id) => {
                    // An alias is a copy of its anchored node, positions included.
                    let node = self
                        .anchors
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| self.error(&at, ErrorKind::Syntax("alias to an unknown anchor".into())))?;
                    self.push(node, 0)?;
                }
                Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            }
        }
        Ok(self.root)
    }

    fn close(&mut self) -> Result<(), PolicyError> {
        let Some(open) = self.stack.pop() else {
            return Ok(());
        };
        let value = if open.is_map {
            let mut entries: Vec<(Node, Node)> = Vec::with_capacity(open.items.len() / 2);
            let mut items = open.items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                if !matches!(key.value, Value::Scalar { .. }) {
                    return Err(self.error(&key.at, ErrorKind::UnsupportedYaml("keys that are lists or maps")));
                }
                if let Some((first, _)) = entries.iter().find(|(k, _)| k.key_text() == key.key_text()) {
                    let kind = ErrorKind::DuplicateKey { key: key.key_text().to_owned(), first: first.at.clone() };
                    return Err(self.error(&key.at, kind));
                }
                entries.push((key, value));
            }
            Value::Map(entries)
        } else {
            Value::Seq(open.items)
        };
        self.push(Node { at: open.at, value }, open.anchor)
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), PolicyError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(open) => open.items.push(node),
            None => self.root = Some(node),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse("t.yaml", 0, text).expect("parses").expect("has a document")
    }

    #[test]
    fn positions_are_one_based() {
        let n = root("a:\n  b: [x, 'y']\n");
        let Value::Map(top) = &n.value else { panic!("map") };
        let Value::Map(inner) = &top[0].1.value else { panic!("map") };
        assert_eq!((inner[0].0.at.line, inner[0].0.at.col), (2, 3));
        let Value::Seq(items) = &inner[0].1.value else { panic!("seq") };
        assert_eq!((items[1].at.line, items[1].at.col), (2, 10));
        assert!(matches!(&items[1].value, Value::Scalar { plain: false, .. }));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let n = root("a: &x [1, 2]\nb: *x\n");
        let Value::Map(top) = &n.value else { panic!("map") };
        assert!(matches!(&top[1].1.value, Value::Seq(v) if v.len() == 2));
    }

    #[test]
    fn empty_file_has_no_document() {
        assert!(parse("t.yaml", 0, "# nothing\n").expect("parses").is_none());
    }
}
