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

use std::{
    collections::{hash_map::Entry, HashMap},
    rc::Rc,
};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::{
    error::{ErrorKind, Location, PolicyError},
    limits,
};

/// A YAML node and where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    pub at: Location,
    pub value: Value,
}

/// Texts, lists and maps are shared, so an alias costs one pointer here;
/// what it costs the later stages is charged to the [`Budget`] when it is read.
#[derive(Clone, Debug)]
pub enum Value {
    /// `plain` is false for quoted and block scalars: only a plain empty
    /// scalar, `~` or `null` is a null.
    Scalar {
        text: Rc<str>,
        plain: bool,
    },
    Seq(Rc<[Node]>),
    /// Keys are scalars; entries keep their file order.
    Map(Rc<[(Node, Node)]>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(&**text, "" | "~" | "null" | "Null" | "NULL"))
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

/// What is left of the node allowance ([`limits::MAX_NODES`]) of one policy;
/// every file of the policy draws on the same budget.
#[derive(Debug)]
pub struct Budget {
    pub nodes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self { nodes: limits::MAX_NODES }
    }
}

/// Parses one file. `None` for a file with no document (empty or only comments).
pub fn parse(file: &str, file_index: u32, text: &str, budget: &mut Budget) -> Result<Option<Node>, PolicyError> {
    // YAML allows only printable characters; the parser takes a NUL for the
    // end of a line without counting it, so later positions would be wrong.
    if let Some((offset, c)) = text.char_indices().find(|&(_, c)| !is_yaml_printable(c)) {
        let start = Location { file_index, line: 1, col: 1, file: file.to_owned() };
        return Err(PolicyError::new(&location_at(&start, text, offset), ErrorKind::Unprintable(c)));
    }
    // saphyr-parser 0.3.4 counts the bytes of a directive's parameters as
    // characters, which misplaces every later position; directives are
    // ASCII (`%YAML 1.2`, `%TAG`), so a line that starts like one and is not
    // is refused here, where it is.
    for (index, line) in yaml_lines(text).into_iter().enumerate() {
        if let Some(col) = line.strip_prefix('%').and_then(|rest| rest.chars().position(|c| !c.is_ascii())) {
            let at = Location {
                file_index,
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
                col: u32::try_from(col + 2).unwrap_or(u32::MAX),
                file: file.to_owned(),
            };
            return Err(PolicyError::new(&at, ErrorKind::NonAsciiDirective));
        }
    }
    let builder = Builder { file, file_index, budget, stack: Vec::new(), anchors: HashMap::new(), root: None, docs: 0 };
    builder.run(text)
}

/// YAML 1.2's `c-printable`: tab, line breaks, and printable Unicode.
fn is_yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// The line and column (counting characters, as the YAML parser does) of
/// byte `offset` of `text`, which starts at `start`.
pub fn location_at(start: &Location, text: &str, offset: usize) -> Location {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let lines = yaml_lines(&text[..offset]);
    let col = lines.last().map_or(0, |l| l.chars().count()) + 1;
    Location {
        line: u32::try_from(lines.len()).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
        ..start.clone()
    }
}

/// The lines of `text` as YAML counts them: a line ends at `\n`, `\r\n` or
/// a lone `\r`. Never empty: an empty text is one empty line.
pub fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\n', '\r']) {
        lines.push(&rest[..i]);
        let len = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + len..];
    }
    lines.push(rest);
    lines
}

/// A collection being built: its start, its items, and for a map the key
/// waiting for its value.
struct Open {
    at: Location,
    anchor: usize,
    items: Vec<Node>,
    is_map: bool,
    /// Nodes in the collection so far, itself and aliases expanded included.
    size: usize,
    /// Levels of lists and maps it spans so far, itself included (1 for a
    /// list of scalars; a scalar spans 0).
    height: usize,
}

/// An anchored node, with what a copy of it costs.
struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

struct Builder<'a> {
    file: &'a str,
    file_index: u32,
    budget: &'a mut Budget,
    stack: Vec<Open>,
    anchors: HashMap<usize, Anchored>,
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

    /// Charges `nodes` to the budget, refusing the node at `at` when it runs out.
    fn charge(&mut self, at: &Location, nodes: usize) -> Result<(), PolicyError> {
        match self.budget.nodes.checked_sub(nodes) {
            Some(left) => {
                self.budget.nodes = left;
                Ok(())
            }
            None => Err(self.error(at, ErrorKind::TooManyNodes { max: limits::MAX_NODES })),
        }
    }

    /// Refuses a node at `at` whose own nesting is `height`, if it would
    /// end up deeper than [`limits::MAX_DEPTH`] where it stands.
    fn check_depth(&self, at: &Location, height: usize) -> Result<(), PolicyError> {
        if self.stack.len() + height > limits::MAX_DEPTH {
            return Err(self.error(at, ErrorKind::TooDeep { max: limits::MAX_DEPTH }));
        }
        Ok(())
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
                    self.charge(&at, 1)?;
                    if text.len() > limits::MAX_SCALAR_BYTES {
                        let start = text.chars().take(20).collect();
                        let kind = ErrorKind::ScalarTooLong { start, len: text.len(), max: limits::MAX_SCALAR_BYTES };
                        return Err(self.error(&at, kind));
                    }
                    let plain = style == ScalarStyle::Plain;
                    let node = Node { at, value: Value::Scalar { text: text.into(), plain } };
                    self.push(node, anchor, 1, 0);
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    if tag.is_some() {
                        return Err(self.error(&at, ErrorKind::UnsupportedYaml("YAML tags")));
                    }
                    self.charge(&at, 1)?;
                    self.check_depth(&at, 1)?;
                    let is_map = matches!(event, Event::MappingStart(..));
                    self.stack.push(Open { at, anchor, items: Vec::new(), is_map, size: 1, height: 1 });
                }
                Event::SequenceEnd | Event::MappingEnd => self.close()?,
                Event::Alias(id) => {
                    // An alias is a copy of its anchored node, positions
                    // included. It shares the node's lists and maps, but the
                    // later stages read every copy: it costs its full size.
                    let Some(anchored) = self.anchors.get(&id) else {
                        return Err(self.error(&at, ErrorKind::Syntax("alias to an unknown anchor".into())));
                    };
                    let (node, size, height) = (anchored.node.clone(), anchored.size, anchored.height);
                    self.charge(&at, size)?;
                    self.check_depth(&at, height)?;
                    self.push(node, 0, size, height);
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
            let mut first_at: HashMap<&str, &Location> = HashMap::with_capacity(open.items.len() / 2);
            let mut items = open.items.iter();
            while let (Some(key), Some(_)) = (items.next(), items.next()) {
                match &key.value {
                    Value::Scalar { text, plain: true } if &**text == "<<" => {
                        return Err(self.error(&key.at, ErrorKind::MergeKey));
                    }
                    Value::Scalar { .. } => {}
                    _ => return Err(self.error(&key.at, ErrorKind::UnsupportedYaml("keys that are lists or maps"))),
                }
                match first_at.entry(key.key_text()) {
                    Entry::Occupied(first) => {
                        let kind =
                            ErrorKind::DuplicateKey { key: key.key_text().to_owned(), first: (*first.get()).clone() };
                        return Err(self.error(&key.at, kind));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(&key.at);
                    }
                }
            }
            drop(first_at);
            let mut items = open.items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                entries.push((key, value));
            }
            Value::Map(entries.into())
        } else {
            Value::Seq(open.items.into())
        };
        self.push(Node { at: open.at, value }, open.anchor, open.size, open.height);
        Ok(())
    }

    /// Adds a finished node (of `size` nodes, `height` levels) to the open
    /// collection, or makes it the document's root.
    fn push(&mut self, node: Node, anchor: usize, size: usize, height: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, Anchored { node: node.clone(), size, height });
        }
        match self.stack.last_mut() {
            Some(open) => {
                open.items.push(node);
                open.size += size;
                open.height = open.height.max(height + 1);
            }
            None => self.root = Some(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse("t.yaml", 0, text, &mut Budget::default()).expect("parses").expect("has a document")
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
        assert!(parse("t.yaml", 0, "# nothing\n", &mut Budget::default()).expect("parses").is_none());
    }
}
