//! The strict YAML subset an uploaded compose file may use, read from the parser's events so that
//! nothing is resolved behind our back: no tags (`!x`, `!!str`), anchors, aliases, merge keys
//! (`<<`), directives, duplicate keys, complex keys or second documents; bounded size, depth and
//! node count. What is left is plain data — mappings of string keys, sequences and scalars that
//! keep their text and whether they were quoted — which `model` types one key at a time. Compose
//! and we then read the same thing by construction: the file compose runs is one we write (JSON,
//! every string quoted). Pure.

use super::refusal::Refusal;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The largest compose file read (real ones are a few KiB).
pub const MAX_BYTES: usize = 256 * 1024;
/// The deepest nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 24;
/// The most nodes (scalars, mappings, sequences) in one file.
pub const MAX_NODES: usize = 20_000;

/// One node of the file, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `~`, `null`, or nothing (`key:`).
    Null,
    /// A scalar's text as written, and whether it was plain (unquoted, not a block scalar): only
    /// a plain scalar can be a boolean or a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order, each once.
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }
    /// `true` or `false`, unquoted (YAML 1.2's core schema; `yes`, `on` and `"true"` are not).
    pub fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
    /// A scalar's text, whether quoted or not (a string key takes `5000` and `"5000"` alike).
    pub fn as_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    /// What the node is, for messages: "a mapping", "a list", "a string", ….
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "empty",
            Kind::Scalar { plain: false, .. } => "a quoted string",
            Kind::Scalar { .. } if self.as_bool().is_some() => "a boolean",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

fn refuse(line: usize, what: &str) -> Refusal {
    Refusal(format!(
        "the compose file, line {line}: {what}; write plain YAML (mappings, lists, scalars) as the README's table shows"
    ))
}

fn null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Read `text` under the strict subset.
pub fn read(text: &str) -> Result<Node, Refusal> {
    if text.len() > MAX_BYTES {
        return Err(Refusal(format!(
            "the compose file is {} KiB; at most {} KiB is read (an agent's compose file is a few KiB)",
            text.len() / 1024,
            MAX_BYTES / 1024
        )));
    }
    if let Some((i, _)) = text.lines().enumerate().find(|(_, l)| l.starts_with('%')) {
        return Err(refuse(
            i + 1,
            "YAML directives (%YAML, %TAG) are not allowed",
        ));
    }
    let mut p = Parser::new_from_str(text);
    let mut reader = Reader {
        parser: &mut p,
        nodes: 0,
    };
    let mut root = None;
    loop {
        let (ev, mark) = reader.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(refuse(mark.line(), "a second YAML document (---)"));
                }
                let (ev, mark) = reader.next()?;
                root = Some(reader.node(ev, mark, 0)?);
            }
            Event::StreamEnd => break,
            _ => return Err(refuse(mark.line(), "unexpected content")),
        }
    }
    Ok(root.unwrap_or(Node {
        line: 1,
        kind: Kind::Null,
    }))
}

struct Reader<'a, 'b> {
    parser: &'a mut Parser<std::str::Chars<'b>>,
    nodes: usize,
}

impl Reader<'_, '_> {
    fn next(&mut self) -> Result<(Event, Marker), Refusal> {
        self.parser.next_token().map_err(|e| {
            Refusal(format!(
                "the compose file is not valid YAML: {e}; fix the syntax (`docker compose config` shows where)"
            ))
        })
    }

    fn node(&mut self, ev: Event, mark: Marker, depth: usize) -> Result<Node, Refusal> {
        let line = mark.line();
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(refuse(line, &format!("more than {MAX_NODES} values")));
        }
        if depth > MAX_DEPTH {
            return Err(refuse(line, &format!("nesting deeper than {MAX_DEPTH}")));
        }
        let kind = match ev {
            Event::Alias(_) => return Err(refuse(line, "an alias (*name)")),
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) if anchor != 0 => {
                return Err(refuse(line, "an anchor (&name)"))
            }
            Event::MappingStart(anchor, _) if anchor != 0 => {
                return Err(refuse(line, "an anchor (&name)"))
            }
            Event::Scalar(_, _, _, Some(t))
            | Event::SequenceStart(_, Some(t))
            | Event::MappingStart(_, Some(t)) => {
                return Err(refuse(
                    line,
                    &format!(
                        "a tag ({}{}) changes how a value is read",
                        t.handle, t.suffix
                    ),
                ))
            }
            Event::Scalar(text, style, _, None) => {
                let plain = style == TScalarStyle::Plain;
                if plain && null_text(&text) {
                    Kind::Null
                } else {
                    Kind::Scalar { text, plain }
                }
            }
            Event::SequenceStart(_, None) => self.seq(depth)?,
            Event::MappingStart(_, None) => self.map(depth)?,
            _ => return Err(refuse(line, "unexpected content")),
        };
        Ok(Node { line, kind })
    }

    /// A sequence's items, up to its end (its start read).
    fn seq(&mut self, depth: usize) -> Result<Kind, Refusal> {
        let mut items = Vec::new();
        loop {
            let (ev, mark) = self.next()?;
            if ev == Event::SequenceEnd {
                return Ok(Kind::Seq(items));
            }
            items.push(self.node(ev, mark, depth + 1)?);
        }
    }

    /// A mapping's entries, up to its end (its start read): keys are plain names, each once, and
    /// never the merge key.
    fn map(&mut self, depth: usize) -> Result<Kind, Refusal> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        loop {
            let (ev, mark) = self.next()?;
            if ev == Event::MappingEnd {
                return Ok(Kind::Map(entries));
            }
            let key = match self.node(ev, mark, depth + 1)? {
                Node {
                    kind: Kind::Scalar { text, plain },
                    ..
                } => {
                    if plain && text == "<<" {
                        return Err(refuse(mark.line(), "a merge key (<<)"));
                    }
                    text
                }
                _ => {
                    return Err(refuse(
                        mark.line(),
                        "a key that is not a string (keys are names)",
                    ))
                }
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(refuse(
                    mark.line(),
                    &format!("the key '{key}' appears twice in one mapping"),
                ));
            }
            let (ev, vmark) = self.next()?;
            let value = self.node(ev, vmark, depth + 1)?;
            entries.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(t: &str) -> String {
        read(t).unwrap_err().0
    }

    #[test]
    fn plain_data_is_read_with_its_text_and_quoting() {
        let n = read("a: 5000\nb: '5000'\nc: yes\nd: true\ne:\nf: [x, {g: ~}]\n").unwrap();
        assert_eq!(n.get("a").unwrap().as_text(), Some("5000"));
        assert_eq!(n.get("b").unwrap().describe(), "a quoted string");
        assert_eq!(n.get("c").unwrap().as_bool(), None, "yes is a string");
        assert_eq!(n.get("c").unwrap().as_text(), Some("yes"));
        assert_eq!(n.get("d").unwrap().as_bool(), Some(true));
        assert!(n.get("e").unwrap().is_null());
        assert!(n.get("f").unwrap().as_seq().unwrap()[1]
            .get("g")
            .unwrap()
            .is_null());
        assert_eq!(
            read("x: \"true\"").unwrap().get("x").unwrap().as_bool(),
            None
        );
    }

    #[test]
    fn every_feature_that_resolves_behind_the_reader_is_refused_with_its_line() {
        let cases = [
            (
                "services:\n  a:\n    volumes: [!x \"/:/host\"]\n",
                "line 3: a tag (!x)",
            ),
            ("a: !!str 1\n", "a tag (tag:yaml.org,2002:str)"),
            ("a: !!binary aGk=\n", "a tag"),
            ("a: !custom {b: 1}\n", "a tag"),
            ("a: &x 1\nb: *x\n", "line 1: an anchor"),
            ("a: *x\n", "anchor"),
            ("x: &a {k: v}\n", "an anchor"),
            ("a:\n  <<: {b: 1}\n", "line 2: a merge key"),
            ("a: 1\na: 2\n", "line 2: the key 'a' appears twice"),
            ("? [a, b]\n: 1\n", "not a string"),
            ("%YAML 1.1\n---\na: 1\n", "line 1: YAML directives"),
            ("%TAG ! tag:x,2000:\n---\na: 1\n", "directives"),
            ("a: 1\n---\nb: 2\n", "a second YAML document"),
            ("a: [1, 2\n", "not valid YAML"),
        ];
        assert_eq!(cases.len(), 14);
        for (text, needle) in cases {
            let e = refused(text);
            assert!(e.contains(needle), "{text:?} → {e}");
        }
    }

    #[test]
    fn bombs_and_giants_are_refused_before_they_cost_anything() {
        // the billion-laughs shape: refused at the first anchor, long before any expansion
        let mut bomb =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for i in 1..30 {
            bomb.push_str(&format!("b{i}: &b{i} [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"));
        }
        assert!(refused(&bomb).contains("anchor"));
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_BYTES));
        assert!(refused(&big).contains("at most 256 KiB"));
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(refused(&deep).contains("nesting deeper than 24"));
        let many = format!("[{}]", vec!["1"; MAX_NODES + 1].join(","));
        assert!(refused(&many).contains("more than 20000 values"));
    }
}
