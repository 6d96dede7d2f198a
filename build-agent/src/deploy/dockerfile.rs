//! The Dockerfile policy: a package's Dockerfile read the way Docker reads it, and refused when a
//! step would reach outside its build container: ADD of a URL or git remote (the daemon fetches
//! it from the host's own network namespace), a `# syntax=` frontend (code of the package's
//! choosing), RUN mounts, networks and privileges beyond the container, ONBUILD. Pure.
//!
//! It follows moby/buildkit `frontend/dockerfile`: `parser/parser.go` (lines, continuation,
//! comments, heredocs), `parser/directives.go` (directives, `DetectSyntax`),
//! `parser/split_command.go` (flags), `parser/line_parsers.go` (ENV/ARG words, JSON form),
//! `shell/lex.go` (quotes, escapes, `$VAR` expansion), `instructions/parse.go`, `bflag.go`,
//! `commands_runmount.go`, `commands_runnetwork.go`, `commands_runsecurity.go`, and
//! `dockerfile2llb/convert.go`, `convert_copy.go` (ARG/ENV scope; which ADD sources are fetched).
//! The file is read twice: as current releases read it, and as the parser of buildkit v0.8 that
//! Docker 20.10's legacy builder uses (no heredocs, flags always escaped with `\`, only the first
//! JSON value read). Where it cannot be sure what Docker does, it refuses.

use super::policy::Refusal;
use std::cell::Cell;
use std::collections::HashMap;

/// The largest Dockerfile read.
pub const MAX_BYTES: usize = 1 << 20;
/// Docker's longest line (bufio.Scanner's token limit, parser.go): a longer one fails the build.
const MAX_LINE: usize = 64 * 1024 - 1;
/// The deepest `${…}` nesting followed.
const MAX_DEPTH: usize = 32;
/// The most combinations of variable values one word is expanded for.
const MAX_COMBINATIONS: usize = 64;
/// The most values a variable is followed with; beyond, it is unknown.
const MAX_VALUES: usize = 16;
const MAX_VALUE_LEN: usize = 64 * 1024;
/// What the shell lexer may do in one check: characters read and written, and a fixed cost for
/// each word (a few seconds' work at most).
const WORK: u64 = 32 << 20;
const WORK_PER_WORD: usize = 256;
/// A value that cannot be known here: from the base image, a built-in ARG, or too many options.
const UNKNOWN: &str = "\u{0}\u{fdd0}unknown\u{fdd0}\u{0}";

/// Check a package's Dockerfile `text` before `docker build` runs it. `build_args` are the
/// --build-arg values the build agent will pass (they override ARG defaults).
pub fn check(text: &str, build_args: &[(String, String)]) -> Result<(), Refusal> {
    if text.len() > MAX_BYTES {
        return Err(Refusal(format!(
            "the Dockerfile is {} KiB; at most {} KiB is read (a Dockerfile is a few KiB)",
            text.len() / 1024,
            MAX_BYTES / 1024
        )));
    }
    check_build_args(build_args)?;
    check_syntax_directive(text)?;
    let work = Cell::new(WORK);
    check_reading(text, build_args, false, &work)?;
    check_reading(text, build_args, true, &work).map_err(|Refusal(m)| {
        Refusal(format!(
            "{m} (as Docker 20.10, without heredocs, reads the file)"
        ))
    })
}

/// One reading of the file; the `legacy` one lets be what only fails the build.
fn check_reading(
    text: &str,
    build_args: &[(String, String)],
    legacy: bool,
    work: &Cell<u64>,
) -> Result<(), Refusal> {
    let mut parser = Parser::new(text, legacy, work);
    let mut scopes = Scopes::new(build_args);
    while let Some(ins) = parser.next()? {
        check_instruction(&ins, &mut scopes, parser.escape, work, !legacy)?;
    }
    Ok(())
}

fn at(line: usize, msg: impl std::fmt::Display) -> Refusal {
    Refusal(format!("line {line}: {msg}"))
}

/// `s` for a one-line message: control characters as `?`, long text cut.
fn show(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(160)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(160).is_some() {
        out.push('…');
    }
    out
}

/// BUILDKIT_SYNTAX picks the frontend as `# syntax=` does (builder/build.go); the other
/// BUILDKIT_* arguments configure BuildKit itself.
fn check_build_args(build_args: &[(String, String)]) -> Result<(), Refusal> {
    match build_args
        .iter()
        .find(|(k, _)| k.to_ascii_uppercase().starts_with("BUILDKIT_"))
    {
        Some((k, _)) => Err(Refusal(format!(
            "build argument '{}' is refused: it configures BuildKit itself (BUILDKIT_SYNTAX runs \
             a frontend image of the package's choosing); remove it from build.args",
            show(k)
        ))),
        None => Ok(()),
    }
}

// ---- parser directives (parser/directives.go) ----

/// `key=value` after a directive's `#`: `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, key lower-cased.
fn directive(s: &str) -> Option<(String, String)> {
    let re_ws = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let key_end = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let key = &s[..key_end];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = s[key_end..].trim_start_matches(re_ws).strip_prefix('=')?;
    let value = after.trim_start_matches(re_ws);
    let value = if value.is_empty() {
        // `\s*` gives one whitespace character back to `.+?`
        after.chars().last()?.to_string()
    } else {
        value.trim_end_matches(re_ws).to_string()
    };
    Some((key.to_ascii_lowercase(), value))
}

/// DetectSyntax (directives.go) forwards the build to the frontend image named by a leading
/// `# syntax=`, `// syntax=` or a JSON `{"syntax": …}` document, after a `#!` line. Read more
/// widely than any Docker release does: blank lines and any directive-shaped line are passed over.
fn check_syntax_directive(text: &str) -> Result<(), Refusal> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (text, skipped) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 1),
        None if text.starts_with("#!") => ("", 1),
        _ => (text, 0),
    };
    let line = |i: usize| i + 1 + skipped;
    if text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        return Err(at(line(0), "a Dockerfile that is a JSON document is refused: BuildKit reads a \"syntax\" key from it and runs that frontend image; write a plain Dockerfile"));
    }
    for (i, l) in text.split('\n').enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let Some(rest) = l.strip_prefix('#').or_else(|| l.strip_prefix("//")) else {
            break;
        };
        match directive(rest.trim_start()) {
            Some((key, _)) if key == "syntax" => return Err(at(line(i), "the '# syntax=' parser directive is refused: it makes BuildKit run the named frontend image, code of the package's choosing, on the build host; remove the line (the built-in Dockerfile frontend is used)")),
            Some(_) => {}
            None => break,
        }
    }
    Ok(())
}

/// Docker's DirectiveParser.ParseLine over the first lines: `escape` sets the escape token.
#[derive(Default)]
struct Directives {
    done: bool,
    seen: Vec<String>,
}

impl Directives {
    fn parse_line(&mut self, line: &str, no: usize) -> Result<Option<char>, Refusal> {
        if self.done {
            return Ok(None);
        }
        let parsed = line
            .strip_prefix('#')
            .and_then(|r| directive(r.trim_start()))
            .filter(|(k, _)| matches!(k.as_str(), "syntax" | "escape" | "check"));
        let Some((key, value)) = parsed else {
            self.done = true;
            return Ok(None);
        };
        if self.seen.contains(&key) {
            return Err(at(
                no,
                format!("a second '{key}' parser directive, which Docker refuses; keep one"),
            ));
        }
        self.seen.push(key.clone());
        match (key.as_str(), value.as_str()) {
            ("escape", "\\") => Ok(Some('\\')),
            ("escape", "`") => {
                // releases before 2024 read `escape` only on the first line and only as
                // `#[ \t]*escape[ \t]*=[ \t]*<char>`; elsewhere they keep `\`
                let strict = line
                    .strip_prefix('#')
                    .map(|r| r.trim_start_matches([' ', '\t']))
                    .filter(|r| r.get(..6).is_some_and(|k| k.eq_ignore_ascii_case("escape")))
                    .and_then(|r| r.get(6..))
                    .and_then(|r| r.trim_start_matches([' ', '\t']).strip_prefix('='))
                    .is_some_and(|r| r.trim_matches([' ', '\t']) == "`");
                if no != 1 || !strict {
                    return Err(at(no, "this escape directive is read differently by older Docker releases; write it as the first line, exactly '# escape=`'"));
                }
                Ok(Some('`'))
            }
            ("escape", v) => Err(at(
                no,
                format!(
                    "escape directive '{}': Docker accepts only ` or \\",
                    show(v)
                ),
            )),
            _ => Ok(None),
        }
    }
}

// ---- lines and instructions (parser/parser.go, split_command.go, line_parsers.go) ----

/// The arguments in JSON (exec) form, as parseJSON reads them.
enum Json {
    No,
    Strings(Vec<String>),
    /// Go's decoder may read what serde_json refuses (lone `\uD800`…`\uDFFF` escapes).
    Unsure,
}

struct Instruction {
    line: usize,
    /// Lower-cased as Docker dispatches it.
    name: String,
    flags: Vec<String>,
    /// After the flags, trimmed.
    args: String,
    json: Json,
    /// The heredocs' names (bodies are passed over).
    #[cfg_attr(not(test), allow(dead_code))]
    heredocs: Vec<String>,
}

struct Heredoc {
    name: String,
    chomp: bool,
}

struct Parser<'a> {
    lines: std::str::SplitInclusive<'a, char>,
    line: usize,
    escape: char,
    directives: Directives,
    /// Read as buildkit v0.8 does (Docker 20.10).
    legacy: bool,
    work: &'a Cell<u64>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, legacy: bool, work: &'a Cell<u64>) -> Self {
        Parser {
            lines: text.split_inclusive('\n'),
            line: 0,
            escape: '\\',
            directives: Directives::default(),
            legacy,
            work,
        }
    }

    /// The escape token of flags: v0.8 always used `\`.
    fn flags_escape(&self) -> char {
        if self.legacy {
            '\\'
        } else {
            self.escape
        }
    }

    fn read(&mut self) -> Result<Option<&'a str>, Refusal> {
        let Some(raw) = self.lines.next() else {
            return Ok(None);
        };
        self.line += 1;
        let content = raw.strip_suffix('\n').unwrap_or(raw);
        if content.len() > MAX_LINE {
            return Err(at(
                self.line,
                "the line is longer than 64 KiB, which Docker does not read either; split it",
            ));
        }
        // current releases drop every carriage return before the newline, v0.8 only one
        if content.ends_with("\r\r") {
            return Err(at(self.line, "the line ends in more than one carriage return, which Docker releases read differently; end it with \\n or \\r\\n"));
        }
        Ok(Some(if self.line == 1 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        }))
    }

    /// processLine: the line without its newline (and leading space), through the directive
    /// parser; a comment reads as empty.
    fn process(&mut self, raw: &'a str, strip_left: bool) -> Result<&'a str, Refusal> {
        let mut t = raw.trim_end_matches(['\r', '\n']);
        if strip_left {
            t = t.trim_start();
        }
        if let Some(e) = self.directives.parse_line(t, self.line)? {
            self.escape = e;
        }
        Ok(if is_comment(t) { "" } else { t })
    }

    /// The next instruction, its continuation lines joined and its heredoc bodies passed over.
    fn next(&mut self) -> Result<Option<Instruction>, Refusal> {
        loop {
            let Some(raw) = self.read()? else {
                return Ok(None);
            };
            let first = self.process(raw, true)?;
            let start = self.line;
            let (text, mut more) = continued(first, self.escape);
            if !more && text.is_empty() {
                continue;
            }
            let mut logical = text.to_string();
            while more {
                let Some(raw) = self.read()? else { break };
                let t = self.process(raw, false)?;
                // comment lines and empty lines do not end the instruction
                if is_comment(raw) || t.trim_start().is_empty() {
                    continue;
                }
                let (text, m) = continued(t, self.escape);
                logical.push_str(text);
                more = m;
            }
            return self.instruction(&logical, start).map(Some);
        }
    }

    fn instruction(&mut self, logical: &str, start: usize) -> Result<Instruction, Refusal> {
        let (cmd, after) = split_command(logical);
        let name = instruction_name(cmd);
        let (flags, args) = match builder_flags(after, self.flags_escape()) {
            Ok((rest, flags)) => (flags, rest.trim().to_string()),
            Err(e) if matches!(name.as_str(), "run" | "add" | "copy" | "arg" | "env") => {
                return Err(at(start, e))
            }
            Err(_) => (Vec::new(), String::new()), // flags this check does not read
        };
        let files = |name: &str| matches!(name, "add" | "copy" | "run");
        let json = if files(&name) {
            json_form(&args, self.legacy)
        } else {
            Json::No
        };
        // canContainHeredoc: ADD, COPY and RUN not in JSON form, also as ONBUILD's trigger
        let (sub, sub_json) = match name.as_str() {
            "onbuild" => {
                let (cmd, after) = split_command(&args);
                let rest = builder_flags(after, self.flags_escape())
                    .map_or(String::new(), |r| r.0.trim().to_string());
                (instruction_name(cmd), json_form(&rest, self.legacy))
            }
            _ => (String::new(), Json::No),
        };
        let (can, form) = match name.as_str() {
            "onbuild" => (files(&sub), &sub_json),
            n => (files(n), &json),
        };
        let mut heredocs = Vec::new();
        if !self.legacy && can && !matches!(form, Json::Strings(_)) && logical.contains("<<") {
            if matches!(form, Json::Unsure) {
                return Err(at(start, "cannot tell whether this is JSON or shell form, so where its heredocs end; write plain JSON strings"));
            }
            let docs = heredocs_in(logical, self.work).map_err(|e| {
                at(start, format!("cannot tell where its heredoc ends as Docker would ({e}); use a plain name like <<EOF"))
            })?;
            for h in docs {
                self.skip_heredoc(&h, start)?;
                heredocs.push(h.name);
            }
        }
        Ok(Instruction {
            line: start,
            name,
            flags,
            args,
            json,
            heredocs,
        })
    }

    fn skip_heredoc(&mut self, h: &Heredoc, start: usize) -> Result<(), Refusal> {
        loop {
            let Some(raw) = self.read()? else {
                return Err(at(start, format!("the heredoc <<{} never ends, which Docker refuses; end it with a line '{}'", show(&h.name), show(&h.name))));
            };
            let t = raw.trim_end_matches(['\r', '\n']);
            let t = if h.chomp {
                t.trim_start_matches('\t')
            } else {
                t
            };
            if t == h.name {
                return Ok(());
            }
        }
    }
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// trimContinuationCharacter: an escape token ending the line (before spaces and tabs) and not
/// itself escaped continues the instruction on the next line.
fn continued(line: &str, escape: char) -> (&str, bool) {
    if let Some(before) = line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, true);
        }
    }
    (line, false)
}

/// reWhitespace of parser.go: `[\t\v\f\r ]`.
fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// strings.ToLower as far as it can give an ASCII instruction name: Go's simple case mapping
/// also lowers U+0130 to `i` and the Kelvin sign to `k`.
fn instruction_name(cmd: &str) -> String {
    cmd.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// splitCommand: the instruction and what follows it (flags, then arguments).
fn split_command(line: &str) -> (&str, &str) {
    let t = line.trim();
    match t.find(is_re_ws) {
        Some(i) => (&t[..i], t[i..].trim_start_matches(is_re_ws)),
        None => (t, ""),
    }
}

/// extractBuilderFlags, which reads bytes as runes: refused when a flag holds a non-ASCII byte.
fn builder_flags(line: &str, escape: char) -> Result<(&str, Vec<String>), String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(u8),
    }
    let non_ascii = || {
        "an instruction flag with a non-ASCII character (Docker reads its bytes as Latin-1); write flags in ASCII".to_string()
    };
    let b = line.as_bytes();
    let esc = escape as u8;
    let space = |c: u8| matches!(c, b'\t'..=b'\r' | b' ' | 0x85 | 0xa0);
    let (mut words, mut word, mut blank_ok) = (Vec::new(), String::new(), false);
    let mut phase = Phase::Spaces;
    let mut pos = 0;
    loop {
        if phase == Phase::Spaces {
            let Some(&c) = b.get(pos) else { break };
            if space(c) {
                pos += 1;
                continue;
            }
            if c != b'-' || b.get(pos + 1) != Some(&b'-') {
                return Ok((line.get(pos..).ok_or_else(non_ascii)?, words));
            }
            phase = Phase::Word;
        }
        let Some(&c) = b.get(pos) else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        let mut c = c;
        pos += 1;
        match phase {
            Phase::Word if space(c) => {
                phase = Phase::Spaces;
                if word == "--" {
                    return Ok((line.get(pos - 1..).ok_or_else(non_ascii)?, words));
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            Phase::Word if c == b'\'' || c == b'"' => {
                phase = Phase::Quote(c);
                blank_ok = true;
                continue;
            }
            Phase::Quote(q) if c == q => {
                phase = Phase::Word;
                continue;
            }
            _ if c == esc => {
                let Some(&n) = b.get(pos) else {
                    phase = Phase::Word;
                    continue;
                };
                c = n;
                pos += 1;
            }
            _ => {}
        }
        if !c.is_ascii() {
            return Err(non_ascii());
        }
        word.push(c as char);
    }
    Ok(("", words))
}

/// parseWords: words of ENV and ARG, quotes and escapes kept for the expansion to read.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let (mut words, mut word, mut blank_ok) = (Vec::new(), String::new(), false);
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let mut c = chars[i];
        i += 1;
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None if c.is_whitespace() => {
                in_word = false;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
        }
        if c == escape && quote != Some('\'') {
            let Some(&n) = chars.get(i) else {
                quote = None;
                continue; // an escape token ending the text is dropped
            };
            word.push(c);
            c = n;
            i += 1;
        }
        word.push(c);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// parseJSON: arguments that start with `[` and are a JSON array of strings (in v0.8, that start
/// with one: a json.Decoder read the first value).
fn json_form(args: &str, first_value: bool) -> Json {
    let t = args.trim_start();
    if !t.starts_with('[') {
        return Json::No;
    }
    let parsed = match first_value {
        true => serde_json::Deserializer::from_str(t)
            .into_iter::<Vec<serde_json::Value>>()
            .next()
            .unwrap_or_else(|| serde_json::from_str(t)),
        false => serde_json::from_str(t),
    };
    match parsed {
        Ok(v) => match v
            .into_iter()
            .map(|x| match x {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            Some(s) => Json::Strings(s),
            None => Json::Unsure, // Docker fails the build on it
        },
        Err(_) if has_surrogate_escape(t) => Json::Unsure,
        Err(_) => Json::No,
    }
}

fn has_surrogate_escape(t: &str) -> bool {
    t.as_bytes().windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D') && w[3].is_ascii_hexdigit()
    })
}

/// heredocsFromLine: the words of the whole line, lexed raw with unset variables kept, that
/// read as `<<NAME`. A lexing error means no heredocs, as in Docker.
fn heredocs_in(line: &str, work: &Cell<u64>) -> Result<Vec<Heredoc>, LexErr> {
    let opts = Opts {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
    };
    let words = match Lex::new(line, '\\', opts, &no_env, work)?.words() {
        Ok(w) => w,
        Err(LexErr::Syntax(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut docs = Vec::new();
    for w in &words {
        if let Some(h) = heredoc(w, work)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// ParseHeredoc: `^(\d*)<<(-?)\s*([^<]*)$`, the rest lexing to one word, the name.
fn heredoc(word: &str, work: &Cell<u64>) -> Result<Option<Heredoc>, LexErr> {
    let r = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(r) = r.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, r) = match r.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, r),
    };
    let rest = r.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut opts = Opts {
        raw_quotes: false,
        raw_escapes: false,
        skip_unset: true,
    };
    let words = Lex::new(rest, '\\', opts, &no_env, work)?.words()?;
    if words.len() != 1 {
        return Ok(None);
    }
    opts.raw_quotes = true;
    if Lex::new(rest, '\\', opts, &no_env, work)?.words()?.len() != 1 {
        return Err(LexErr::Syntax("inconsistent heredoc name".into()));
    }
    Ok(words.into_iter().next().map(|name| Heredoc { name, chomp }))
}

// ---- the shell lexer (shell/lex.go) ----

#[derive(Debug)]
enum LexErr {
    /// An error Docker's lexer reports too.
    Syntax(String),
    /// A variable name next to a non-ASCII character: Go's Unicode tables may read it otherwise.
    Uncertain,
    TooDeep,
    TooMany,
    Work,
}

impl std::fmt::Display for LexErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LexErr::Syntax(m) => f.write_str(m),
            LexErr::Uncertain => f.write_str("a variable name next to a non-ASCII character"),
            LexErr::TooDeep => write!(f, "${{…}} nested more than {MAX_DEPTH} deep"),
            LexErr::TooMany => f.write_str("its variables have too many possible values"),
            LexErr::Work => f.write_str("too much to expand"),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Opts {
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
}

type Env<'e> = dyn Fn(&str) -> Result<Option<String>, LexErr> + 'e;

fn no_env(_: &str) -> Result<Option<String>, LexErr> {
    Ok(None)
}

fn spend(work: &Cell<u64>, n: usize) -> Result<(), LexErr> {
    let left = work.get().checked_sub(n as u64).ok_or(LexErr::Work)?;
    work.set(left);
    Ok(())
}

/// Words split on whitespace, with the buffer shared by nested calls as in lex.go (an inner
/// `${x:-…}` resets the outer word).
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, c: char) {
        if !c.is_whitespace() {
            buf.push(c);
            self.in_word = true;
        } else if self.in_word && !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
    }
    fn add_raw(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

struct Lex<'a> {
    src: Vec<char>,
    pos: usize,
    escape: char,
    opts: Opts,
    raw_escapes: bool,
    buf: String,
    env: &'a Env<'a>,
    depth: usize,
    work: &'a Cell<u64>,
}

impl<'a> Lex<'a> {
    fn new(
        word: &str,
        escape: char,
        opts: Opts,
        env: &'a Env<'a>,
        work: &'a Cell<u64>,
    ) -> Result<Self, LexErr> {
        spend(work, word.len() + WORK_PER_WORD)?;
        let src: Vec<char> = word.chars().collect();
        // text/scanner drops a byte-order mark that starts the input
        let pos = usize::from(src.first() == Some(&'\u{feff}'));
        Ok(Lex {
            src,
            pos,
            escape,
            opts,
            raw_escapes: opts.raw_escapes,
            buf: String::new(),
            env,
            depth: 0,
            work,
        })
    }

    /// ProcessWord: the word expanded, quotes and escapes removed.
    fn word(mut self) -> Result<String, LexErr> {
        let raw = self.raw_escapes;
        Ok(self.stop_on(None, raw)?.0)
    }

    /// ProcessWords: the same, split into words.
    fn words(mut self) -> Result<Vec<String>, LexErr> {
        let raw = self.raw_escapes;
        Ok(self.stop_on(None, raw)?.1)
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn lookup(&self, name: &str) -> Result<Option<String>, LexErr> {
        let v = (self.env)(name)?;
        spend(self.work, v.as_ref().map_or(0, String::len))?;
        Ok(v)
    }

    /// processStopOn: up to `stop` (or the end).
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexErr> {
        if self.depth >= MAX_DEPTH {
            return Err(LexErr::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), LexErr> {
        let mut result = String::new();
        self.buf.clear();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish(&mut self.buf)));
            }
            let special = match c {
                '$' => Some(self.dollar()?),
                '<' => Some(self.possible_heredoc()),
                '\'' => Some(self.single_quoted()?),
                '"' => Some(self.double_quoted()?),
                _ => None,
            };
            if let Some(s) = special {
                result.push_str(&s);
                if c == '$' {
                    s.chars().for_each(|ch| words.add_char(&mut self.buf, ch));
                } else {
                    words.add_raw(&mut self.buf, &s);
                }
                continue;
            }
            self.next();
            if c != self.escape {
                words.add_char(&mut self.buf, c);
                result.push(c);
                continue;
            }
            if self.raw_escapes {
                words.add_raw(&mut self.buf, &c.to_string());
                result.push(c);
            }
            let Some(n) = self.next() else { break };
            words.add_raw(&mut self.buf, &n.to_string());
            result.push(n);
        }
        if let Some(s) = stop {
            return Err(LexErr::Syntax(format!(
                "unexpected end of statement while looking for matching {s}"
            )));
        }
        Ok((result, words.finish(&mut self.buf)))
    }

    fn single_quoted(&mut self) -> Result<String, LexErr> {
        let mut r = String::new();
        let q = self.next().unwrap_or('\'');
        if self.opts.raw_quotes {
            r.push(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(LexErr::Syntax(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        r.push('\'');
                    }
                    return Ok(r);
                }
                Some(c) => r.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, LexErr> {
        let mut r = String::new();
        let q = self.next().unwrap_or('"');
        if self.opts.raw_quotes {
            r.push(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(LexErr::Syntax(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        r.push('"');
                    }
                    return Ok(r);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    r.push_str(&v);
                }
                Some(_) => {
                    let mut c = self.next().unwrap_or_default();
                    if c == self.escape {
                        if self.raw_escapes {
                            r.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                c = n;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    r.push(c);
                }
            }
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut r = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            r.push(c);
            self.next();
        }
        r
    }

    fn name(&mut self) -> Result<String, LexErr> {
        let (name, n) = read_name(&self.src[self.pos.min(self.src.len())..])?;
        self.pos += n;
        Ok(name)
    }

    /// processDollar. `${x#…}`, `${x%…}` and `${x/…/…}` of a set variable are not worked out:
    /// they read as unknown.
    fn dollar(&mut self) -> Result<String, LexErr> {
        let syntax = |m: &str| Err(LexErr::Syntax(m.into()));
        self.next();
        if self.peek() != Some('{') {
            let name = self.name()?;
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name)? {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return syntax("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return syntax("syntax error: bad substitution"),
            Some(_) => {}
        }
        let name = self.name()?;
        let ch = self.next();
        let mut chs = ch.map_or('\u{fffd}', |c| c).to_string();
        let missing = |e: LexErr, this: &Self, m: &str| match e {
            LexErr::Syntax(_) if this.peek().is_none() => LexErr::Syntax(m.into()),
            e => e,
        };
        match ch {
            Some('}') => Ok(match self.lookup(&name)? {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = ch == Some(':');
                let op = if null_is_unset {
                    let c2 = self.next();
                    chs.push(c2.unwrap_or('\u{fffd}'));
                    c2
                } else {
                    ch
                };
                let raw = matches!(op, Some('#' | '%'));
                if null_is_unset && raw {
                    return syntax("unsupported modifier in substitution");
                }
                let word = match self.stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => return Err(missing(e, self, "syntax error: missing '}'")),
                };
                let value = self.lookup(&name)?;
                if self.opts.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match (op, value) {
                    (Some('-'), v) => Ok(if empty { word } else { v.unwrap_or_default() }),
                    (Some('+'), _) => Ok(if empty { String::new() } else { word }),
                    (Some('?'), v) if !empty => Ok(v.unwrap_or_default()),
                    (Some('?'), _) => {
                        syntax(&format!("{name}: is not allowed to be unset or empty"))
                    }
                    (Some('#' | '%'), None) => Ok(String::new()),
                    (Some('#' | '%'), Some(_)) => Ok(UNKNOWN.into()),
                    _ => syntax("unsupported modifier in substitution"),
                }
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let pattern = match self.stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => return Err(missing(e, self, "syntax error: missing '/' in ${}")),
                };
                let replacement = match self.stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => return Err(missing(e, self, "syntax error: missing '}'")),
                };
                if self.opts.skip_unset && self.lookup(&name)?.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                Ok(UNKNOWN.into())
            }
            _ => syntax("unsupported modifier in substitution"),
        }
    }
}

/// processName: digits, one special parameter, or letters, digits and `_`; how many characters
/// it took. Go's unicode.IsLetter decides past ASCII, so a non-ASCII character there is uncertain.
fn read_name(s: &[char]) -> Result<(String, usize), LexErr> {
    let mut name = String::new();
    for &c in s {
        if !c.is_ascii() {
            return Err(LexErr::Uncertain);
        }
        let digits = !name.is_empty() && name.starts_with(|d: char| d.is_ascii_digit());
        if digits && !c.is_ascii_digit() {
            break;
        }
        if name.is_empty() && !c.is_ascii_digit() && "@*#?-$!0".contains(c) {
            return Ok((c.to_string(), 1));
        }
        if !c.is_ascii_alphanumeric() && c != '_' {
            break;
        }
        name.push(c);
    }
    let n = name.chars().count();
    Ok((name, n))
}

/// Every name a word may look up: those after each `$` and `${`.
fn names_in(word: &str) -> Result<Vec<String>, LexErr> {
    let chars: Vec<char> = word.chars().collect();
    let mut names: Vec<String> = Vec::new();
    for (i, _) in chars.iter().enumerate().filter(|(_, c)| **c == '$') {
        let j = i + 1 + usize::from(chars.get(i + 1) == Some(&'{'));
        let (name, _) = read_name(chars.get(j..).unwrap_or_default())?;
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        if names.len() > MAX_COMBINATIONS {
            return Err(LexErr::TooMany);
        }
    }
    Ok(names)
}

// ---- ARG and ENV scope (dockerfile2llb/convert.go; Docker 20.10's builder/dockerfile) ----

/// The values a variable may have; `None` is unset.
type Values = Vec<Option<String>>;

fn unknown() -> Values {
    vec![None, Some(String::new()), Some(UNKNOWN.into())]
}

fn unknown_set() -> Values {
    vec![Some(String::new()), Some(UNKNOWN.into())]
}

/// Without repeats; unknown past MAX_VALUES.
fn bounded(values: impl IntoIterator<Item = Option<String>>) -> Values {
    let mut out: Values = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    match out.len() > MAX_VALUES {
        true if out.contains(&None) => unknown(),
        true => unknown_set(),
        false => out,
    }
}

struct Var {
    values: Values,
    /// Set by ENV: the legacy builder keeps ENV over a later ARG, BuildKit takes the ARG.
    from_env: bool,
    /// When it was set, for `Vars::poisoned`.
    set: u64,
}

/// The variables of one scope. A name not here may come from the base image, a parent stage
/// or a built-in ARG: unknown.
#[derive(Default)]
struct Vars {
    map: HashMap<String, Var>,
    sets: u64,
    /// Variables set before this may also have any value (an ENV or ARG set a name that cannot
    /// be worked out).
    poisoned: u64,
}

impl Vars {
    fn get(&self, name: &str) -> Option<Values> {
        let v = self.map.get(name)?;
        Some(match v.set < self.poisoned {
            true => bounded(v.values.iter().cloned().chain(unknown_set())),
            false => v.values.clone(),
        })
    }

    fn set(&mut self, name: &str, values: Values, from_env: bool) {
        self.sets += 1;
        let set = self.sets;
        self.map.insert(
            name.to_string(),
            Var {
                values,
                from_env,
                set,
            },
        );
    }

    fn poison(&mut self) {
        self.poisoned = self.sets + 1;
    }
}

/// Global ARGs (before the first FROM) and the current stage's ARGs and ENVs.
struct Scopes<'a> {
    build_args: &'a [(String, String)],
    globals: Vars,
    stage: Option<Vars>,
}

impl<'a> Scopes<'a> {
    fn new(build_args: &'a [(String, String)]) -> Self {
        Scopes {
            build_args,
            globals: Vars::default(),
            stage: None,
        }
    }

    fn vars(&mut self) -> &mut Vars {
        self.stage.as_mut().unwrap_or(&mut self.globals)
    }

    fn lookup(&self, name: &str) -> Values {
        self.stage
            .as_ref()
            .unwrap_or(&self.globals)
            .get(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(unknown)
    }

    /// Every value `word` may expand to, over the values of the variables it names.
    fn expand(&self, word: &str, escape: char, work: &Cell<u64>) -> Result<Vec<String>, LexErr> {
        let names = names_in(word)?;
        let vars: Vec<(String, Values)> = names
            .into_iter()
            .map(|n| {
                let v = self.lookup(&n);
                (n, v)
            })
            .collect();
        let combinations = vars.iter().try_fold(1usize, |n, (_, v)| {
            n.checked_mul(v.len()).filter(|&n| n <= MAX_COMBINATIONS)
        });
        let combinations = combinations.ok_or(LexErr::TooMany)?;
        let mut out: Vec<String> = Vec::new();
        for mut k in 0..combinations {
            let env: Vec<(&str, &Option<String>)> = vars
                .iter()
                .map(|(name, values)| {
                    let v = &values[k % values.len()];
                    k /= values.len();
                    (name.as_str(), v)
                })
                .collect();
            let get = |n: &str| match env.iter().find(|(k, _)| *k == n) {
                Some((_, v)) => Ok((*v).clone()),
                None => Err(LexErr::Uncertain),
            };
            let value = Lex::new(word, escape, Opts::default(), &get, work)?.word()?;
            if !out.contains(&value) {
                out.push(value);
            }
        }
        Ok(out)
    }

    /// The values of an ENV or ARG value: unknown when it cannot be worked out.
    fn value_of(
        &self,
        word: &str,
        escape: char,
        work: &Cell<u64>,
        line: usize,
    ) -> Result<Values, Refusal> {
        match self.expand(word, escape, work) {
            Err(LexErr::Work) => Err(too_complex(line)),
            Ok(v) if v.len() <= MAX_VALUES && v.iter().all(|s| s.len() <= MAX_VALUE_LEN) => {
                Ok(v.into_iter().map(Some).collect())
            }
            _ => Ok(unknown_set()),
        }
    }

    /// A name as Docker will read it (the legacy builder expands ARG names, both expand ENV
    /// names); None when it cannot be worked out.
    fn name_of(
        &self,
        word: &str,
        escape: char,
        work: &Cell<u64>,
        line: usize,
    ) -> Result<Option<String>, Refusal> {
        match self.expand(word, escape, work) {
            Err(LexErr::Work) => Err(too_complex(line)),
            Ok(mut v) if v.len() == 1 && !v[0].contains(UNKNOWN) => Ok(v.pop()),
            _ => Ok(None),
        }
    }

    fn build_arg(&self, key: &str) -> Option<String> {
        self.build_args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// ARG name[=default] ...: BuildKit reads them one at a time, each default seeing the ones
    /// before it; the legacy builder expands every default first. Both are followed.
    fn arg(
        &mut self,
        ins: &Instruction,
        escape: char,
        work: &Cell<u64>,
        strict: bool,
    ) -> Result<(), Refusal> {
        let words = parse_words(&ins.args, escape);
        if words.is_empty() && strict {
            return Err(at(ins.line, "ARG needs a name"));
        }
        let mut pairs = Vec::new();
        for w in &words {
            let (key, default) = match w.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (w.as_str(), None),
            };
            match (key.is_empty(), strict) {
                (true, true) => return Err(at(ins.line, "ARG names cannot be blank")),
                (true, false) => return Ok(()),
                _ => {}
            }
            let legacy = match default {
                Some(d) => self.value_of(d, escape, work, ins.line)?,
                None => Vec::new(),
            };
            pairs.push((key, default, legacy));
        }
        for (key, default, legacy) in pairs {
            let values = match (self.build_arg(key), default) {
                (Some(v), _) => vec![Some(v)],
                (None, Some(d)) => bounded(
                    self.value_of(d, escape, work, ins.line)?
                        .into_iter()
                        .chain(legacy),
                ),
                (None, None) => self.inherited(key),
            };
            let expanded = self.name_of(key, escape, work, ins.line)?;
            let vars = self.vars();
            // the legacy builder keeps an earlier ENV of the name: both values may be read
            let env = vars.map.get(key).filter(|v| v.from_env).and(vars.get(key));
            let from_env = env.is_some();
            let values = bounded(values.into_iter().chain(env.unwrap_or_default()));
            vars.set(key, values, from_env);
            if expanded.as_deref() != Some(key) {
                vars.poison();
            }
        }
        Ok(())
    }

    /// An ARG without a default or build argument: the global's value, or else it stays as it was.
    fn inherited(&self, key: &str) -> Values {
        let before = self.lookup(key);
        if self.stage.is_none() {
            return before;
        }
        match self.globals.get(key) {
            None => unknown(), // a built-in (TARGETOS, …), or as it was
            Some(g) => bounded(g.into_iter().flat_map(|v| match v {
                Some(_) => vec![v],
                None => before.clone(),
            })),
        }
    }

    /// ENV: all pairs expanded with the variables as they were before the instruction.
    fn env(
        &mut self,
        ins: &Instruction,
        escape: char,
        work: &Cell<u64>,
        strict: bool,
    ) -> Result<(), Refusal> {
        let Some(pairs) = env_pairs(&ins.args, escape) else {
            return match strict {
                true => Err(at(ins.line, "ENV needs NAME=value pairs (or NAME value)")),
                false => Ok(()),
            };
        };
        let mut sets = Vec::new();
        for (k, v) in &pairs {
            let key = self.name_of(k, escape, work, ins.line)?;
            sets.push((key, self.value_of(v, escape, work, ins.line)?));
        }
        let Some(stage) = &mut self.stage else {
            return Ok(()); // ENV before FROM fails the build
        };
        for (key, values) in sets {
            match key {
                Some(k) => stage.set(&k, values, true),
                None => stage.poison(),
            }
        }
        Ok(())
    }
}

fn too_complex(line: usize) -> Refusal {
    at(
        line,
        "the Dockerfile is too complex to check; simplify its variables",
    )
}

/// parseNameVal: `NAME=value ...`, or the old `NAME value`.
fn env_pairs(rest: &str, escape: char) -> Option<Vec<(String, String)>> {
    let words = parse_words(rest, escape);
    if !words.first()?.contains('=') {
        let i = rest.find(is_re_ws)?;
        let value = rest[i..].trim_start_matches(is_re_ws);
        return Some(vec![(rest[..i].to_string(), value.to_string())]);
    }
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

// ---- the policy per instruction ----

const ADD_FLAGS: &[&str] = &[
    "chown",
    "chmod",
    "link",
    "keep-git-dir",
    "checksum",
    "unpack",
    "exclude",
    "from",
];
const COPY_FLAGS: &[&str] = &["chown", "from", "chmod", "link", "exclude", "parents"];

/// One instruction; not `strict`, what only fails the build is let be.
fn check_instruction(
    ins: &Instruction,
    scopes: &mut Scopes,
    escape: char,
    work: &Cell<u64>,
    strict: bool,
) -> Result<(), Refusal> {
    match ins.name.as_str() {
        "onbuild" => Err(at(ins.line, "ONBUILD is refused: its trigger runs in some later build, where this check never sees it; write the instruction itself in this Dockerfile")),
        "from" => {
            scopes.stage = Some(Vars::default());
            Ok(())
        }
        "arg" => scopes.arg(ins, escape, work, strict),
        "env" => scopes.env(ins, escape, work, strict),
        "add" => {
            check_add_sources(ins, scopes, escape, work)?;
            match strict {
                true => check_flags(ins, "ADD", ADD_FLAGS),
                false => Ok(()),
            }
        }
        "copy" if strict => check_flags(ins, "COPY", COPY_FLAGS),
        "run" => check_run_flags(ins, strict),
        _ => Ok(()),
    }
}

fn flag(f: &str) -> (&str, Option<&str>) {
    let f = f.strip_prefix("--").unwrap_or(f);
    match f.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (f, None),
    }
}

fn check_flags(ins: &Instruction, cmd: &str, allowed: &[&str]) -> Result<(), Refusal> {
    match ins
        .flags
        .iter()
        .map(|f| flag(f).0)
        .find(|n| !allowed.contains(n))
    {
        Some(n) => Err(at(
            ins.line,
            format!(
                "{cmd} --{} is not a flag Docker takes there; remove it",
                show(n)
            ),
        )),
        None => Ok(()),
    }
}

/// ADD's sources (every argument but the last), each expanded as Docker does (shell/lex.go over
/// the stage's ARGs and ENVs), in every value its variables may have.
fn check_add_sources(
    ins: &Instruction,
    scopes: &Scopes,
    escape: char,
    work: &Cell<u64>,
) -> Result<(), Refusal> {
    let args: Vec<&str> = match &ins.json {
        Json::Strings(v) => v.iter().map(String::as_str).collect(),
        Json::Unsure => return Err(at(ins.line, "ADD's arguments start with '[' but are not plain JSON strings; write them as a JSON array of strings")),
        Json::No => ins.args.split(is_re_ws).filter(|s| !s.is_empty()).collect(),
    };
    let sources = match args.len() {
        0 | 1 => &args[..],
        n => &args[..n - 1],
    };
    for raw in sources {
        let values = match scopes.expand(raw, escape, work) {
            Ok(v) => v,
            Err(LexErr::Work) => return Err(too_complex(ins.line)),
            Err(e) => return Err(at(ins.line, format!("ADD source '{}' cannot be expanded with certainty ({e}); write the path literally", show(raw)))),
        };
        for v in &values {
            if let Some(what) = remote(v) {
                let expands = if v == raw {
                    String::new()
                } else {
                    format!(" (from '{}')", show(raw))
                };
                return Err(at(ins.line, format!(
                    "ADD of {what} '{}'{expands} is refused: the Docker daemon fetches it from the host's own network, its loopback services included; fetch it in a RUN step instead (RUN curl -fsSLO … or pip install …, which run in the build container's network), or COPY a file from the package",
                    show(v)
                )));
            }
        }
        if values.iter().any(|v| v.contains(UNKNOWN)) {
            return Err(at(ins.line, format!("ADD source '{}' depends on a variable whose value is not known before the build (from the base image, a built-in or an undeclared build argument); write the path literally, or declare it in this stage with ARG NAME=value", show(raw))));
        }
        if values.iter().any(|v| v.contains('$')) {
            return Err(at(ins.line, format!("ADD source '{}' still holds a '$' after expansion; write the path without '$', or use COPY", show(raw))));
        }
    }
    Ok(())
}

/// What ADD would fetch rather than read from the context (convert_copy.go, dfgitutil,
/// util/gitutil, util/sshutil): any `scheme://`; an scp-like git remote `user@host:path`; and the
/// `git@` and `github.com/` prefixes older releases took for git.
fn remote(source: &str) -> Option<&'static str> {
    let s = source.to_ascii_lowercase();
    let head = s.split('/').next().unwrap_or_default();
    if s.contains("://") {
        Some("a URL")
    } else if head.find('@').is_some_and(|i| head[i..].contains(':'))
        || s.starts_with("git@")
        || s.starts_with("github.com/")
    {
        Some("a git remote")
    } else {
        None
    }
}

/// RUN's flags: --mount (tmpfs, or a bind of a path in the context), --network=default|none,
/// --security=sandbox; nothing else (not `strict`: flags Docker releases before heredocs did not
/// know fail the build there).
fn check_run_flags(ins: &Instruction, strict: bool) -> Result<(), Refusal> {
    for f in &ins.flags {
        match flag(f) {
            ("mount", v) => check_mount(v.unwrap_or_default(), ins.line)?,
            ("network", Some("default" | "none")) | ("security", Some("sandbox")) => {}
            ("network", v) => return Err(at(ins.line, format!("RUN --network={} is refused: only default and none are allowed (host runs the step in the Docker host's network, its loopback services included); remove the flag", show(v.unwrap_or_default())))),
            ("security", v) => return Err(at(ins.line, format!("RUN --security={} is refused: insecure runs the step with the host's privileges; remove the flag", show(v.unwrap_or_default())))),
            (n, _) if strict => return Err(at(ins.line, format!("RUN --{} is refused (only --mount, --network=default|none and --security=sandbox are allowed); remove it", show(n)))),
            _ => {}
        }
    }
    Ok(())
}

/// One --mount (commands_runmount.go): comma-separated fields, later ones winning, type bind by
/// default. Plain ASCII without quotes, `$` or escapes, so that Docker's CSV reading and
/// expansion leave it as written.
fn check_mount(value: &str, line: usize) -> Result<(), Refusal> {
    let refuse = |what: String| {
        Err(at(
            line,
            format!("RUN --mount={} is refused: {what}", show(value)),
        ))
    };
    if !value.chars().all(|c| c.is_ascii_graphic()) || value.contains(['"', '\'', '$', '\\', '`']) {
        return refuse(
            "write it as plain key=value pairs, without quotes, variables, escapes or spaces"
                .into(),
        );
    }
    let (mut kind, mut from, mut sources, mut other) =
        ("bind".to_string(), false, Vec::new(), None);
    for field in value.split(',') {
        let (key, v) = field.split_once('=').unwrap_or((field, ""));
        match (key.to_ascii_lowercase().as_str(), field.contains('=')) {
            ("type", true) => kind = v.to_ascii_lowercase(),
            ("from", true) => from = true,
            ("source" | "src", true) => sources.push(v),
            ("target" | "dst" | "destination" | "size", true) => {}
            ("readonly" | "ro" | "readwrite" | "rw", _) => {}
            _ => other = other.or(Some(key)),
        }
    }
    match kind.as_str() {
        "cache" => return refuse("cache mounts live on the build host and are shared between builds; install without a cache (pip install --no-cache-dir …)".into()),
        "secret" | "ssh" => return refuse(format!("{kind} mounts hand the build host's secrets or SSH agent to the step; put what the build needs in the package")),
        "tmpfs" | "bind" => {}
        _ => return refuse("only type=tmpfs and type=bind of a path inside the package are allowed".into()),
    }
    if from {
        return refuse(
            "it mounts another image or stage; COPY --from=… what the step needs".into(),
        );
    }
    if let Some(key) = other {
        return refuse(format!("option '{}' is not allowed; use type=tmpfs, or type=bind with a source inside the package", show(key)));
    }
    match sources
        .iter()
        .find(|s| kind == "bind" && (s.starts_with('/') || s.split('/').any(|c| c == "..")))
    {
        Some(s) => refuse(format!(
            "source '{}' is not a relative path inside the package",
            show(s)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Dockerfile, its build arguments, and what the refusal must say.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal(df: &str, build_args: &[(&str, &str)]) -> String {
        match check(df, &args(build_args)) {
            Err(Refusal(m)) => m,
            Ok(()) => panic!("not refused:\n{df}"),
        }
    }

    fn allowed(df: &str, build_args: &[(&str, &str)]) {
        if let Err(Refusal(m)) = check(df, &args(build_args)) {
            panic!("refused: {m}\n{df}");
        }
    }

    /// Each Dockerfile refused, the message holding every expected piece.
    fn assert_refused(cases: &[Case], at_least: usize) {
        assert!(cases.len() >= at_least, "{} cases", cases.len());
        for (df, build_args, expected) in cases {
            let m = refusal(df, build_args);
            assert!(!m.contains('\n'), "not one line: {m}");
            for e in *expected {
                assert!(m.contains(e), "{m:?} lacks {e:?}\n{df}");
            }
        }
    }

    const PYTHON: &str = "FROM python:3.12-slim\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nEXPOSE 5000\nCMD [\"python\", \"-m\", \"src\"]\n";

    #[test]
    fn add_of_a_url_is_refused_in_every_spelling() {
        const LOOP: &str = "http://127.0.0.1:9101";
        let cases: &[Case] = &[
            ("FROM x\nadd http://127.0.0.1:9101/services /x\n", &[], &["line 2", "ADD of a URL 'http://127.0.0.1:9101/services'", "RUN curl"]),
            ("FROM x\nAdD [\"http://127.0.0.1:9101/x\",\"/y\"]\n", &[], &["line 2", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nADD HTTP://127.0.0.1:9101/x /y\n", &[], &["line 2", "'HTTP://127.0.0.1:9101/x'"]),
            ("FROM x\nADD https://example.com/a.tgz /y\n", &[], &["line 2", "'https://example.com/a.tgz'"]),
            ("FROM x\nAD\\\nD http://127.0.0.1:9101/x /y\n", &[], &["line 2", "ADD of a URL"]),
            ("FROM x\nADD \\\n  http://127.0.0.1:9101/x /y\n", &[], &["line 2", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nRUN echo hi\nADD \\\n# a comment\n\n   http://127.0.0.1:9101/x \\\n  /y\n", &[], &["line 3", "'http://127.0.0.1:9101/x'"]),
            ("ARG U=http://127.0.0.1:9101\nFROM x\nARG U\nADD $U/services /x\n", &[], &["line 4", "(from '$U/services')", LOOP]),
            ("FROM x\nARG U=http://127.0.0.1:9101\nADD ${U}/s /x\n", &[], &["line 3", "'http://127.0.0.1:9101/s'"]),
            ("FROM x\nARG U\nADD $U /x\n", &[("U", "http://127.0.0.1:9101/")], &["line 3", "'http://127.0.0.1:9101/'"]),
            ("ARG U\nFROM x\nARG U\nADD $U /x\n", &[("U", "http://127.0.0.1:9101/")], &["line 4", "'http://127.0.0.1:9101/'"]),
            ("FROM x\nENV U http://127.0.0.1:9101/a\nADD ${U} /x\n", &[], &["line 3", "'http://127.0.0.1:9101/a'"]),
            ("FROM x\nENV U=\"http://127.0.0.1:9101/b\" V=1\nADD \"$U\" /x\n", &[], &["line 3", "'http://127.0.0.1:9101/b'"]),
            ("FROM x\nARG H=127.0.0.1:9101\nADD http://${H}/x /y\n", &[], &["line 3", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nADD ${NOPE:-http://127.0.0.1:9101/x} /y\n", &[], &["line 2", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nARG S=1\nADD ${S:+http://127.0.0.1:9101/x} /y\n", &[], &["line 3", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nADD h\\ttp://127.0.0.1:9101/x /y\n", &[], &["line 2", "'http://127.0.0.1:9101/x'"]),
            ("FROM x\nADD 'http'\"://\"127.0.0.1/x /y\n", &[], &["line 2", "'http://127.0.0.1/x'"]),
            ("# escape=`\nFROM x\nADD `\n  http://127.0.0.1:9101/x /y\n", &[], &["line 3", "'http://127.0.0.1:9101/x'"]),
            ("# escape=`\nFROM x\nRUN echo \\\nADD http://127.0.0.1:9101/x /y\n", &[], &["line 4", "ADD of a URL"]),
            ("FROM x\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://127.0.0.1:9101/x /y\n", &[], &["line 2", "'https://127.0.0.1:9101/x'"]),
            ("FROM x\nADD git@github.com:x/y.git /z\n", &[], &["line 2", "ADD of a git remote 'git@github.com:x/y.git'"]),
            ("FROM x\nADD git://127.0.0.1/r.git /z\n", &[], &["line 2", "'git://127.0.0.1/r.git'"]),
            ("FROM x\nADD ssh://git@127.0.0.1/r /z\n", &[], &["line 2", "'ssh://git@127.0.0.1/r'"]),
            ("FROM x\nADD https://github.com/a/b.git#main /z\n", &[], &["line 2", "'https://github.com/a/b.git#main'"]),
            ("FROM x\nADD --keep-git-dir=true github.com/a/b.git /z\n", &[], &["line 2", "git remote 'github.com/a/b.git'"]),
            ("FROM x\nADD git@127.0.0.1/r.git /z\n", &[], &["line 2", "git remote 'git@127.0.0.1/r.git'"]),
            ("FROM x\nADD ./a http://127.0.0.1/ /dst/\n", &[], &["line 2", "'http://127.0.0.1/'"]),
            ("FROM x\nADD --from=img http://127.0.0.1/ /dst/\n", &[], &["line 2", "'http://127.0.0.1/'"]),
            ("\u{feff}FROM x\n  add\thttp://127.0.0.1/a /b\n", &[], &["line 2", "'http://127.0.0.1/a'"]),
            ("FROM x\nADD ftp://127.0.0.1/a /b\n", &[], &["line 2", "'ftp://127.0.0.1/a'"]),
            // the body of an unterminated-looking heredoc: the name is `A\`, so ADD is an instruction
            ("FROM x\nRUN <<'A\\'\nA\\\nADD http://127.0.0.1:9101/ /x\n", &[], &["line 4", "ADD of a URL"]),
            // Docker releases without heredocs read the body as instructions
            ("FROM x\nRUN <<CMD\nADD http://127.0.0.1:9101/ /x\nCMD\n", &[], &["line 3", "ADD of a URL", "Docker 20.10"]),
            ("FROM x\nADD ONBUILD:x http://127.0.0.1/ /y\n", &[], &["line 2", "'http://127.0.0.1/'"]),
            // buildkit v0.8 reads the first JSON value and ignores the rest
            ("FROM x\nADD [\"\\u0068ttp\\u003a//127.0.0.1:9101/\", \"/y\"] z\n", &[], &["line 2", "'http://127.0.0.1:9101/'", "Docker 20.10"]),
            // and escapes flags with \ whatever the escape directive says
            ("# escape=`\nFROM x\nADD --chown=1` http://127.0.0.1:9101/ /dst x\n", &[], &["line 3", "'http://127.0.0.1:9101/'", "Docker 20.10"]),
            // the legacy builder expands ARG names, and all of an ARG's defaults before setting any
            ("FROM x\nARG U=a.tgz K=U\nARG $K=http://127.0.0.1:9101/\nADD $U /x\n", &[], &["line 4", "'$U'", "not known"]),
            ("FROM x\nARG A=http://127.0.0.1:9101/\nARG A=a.tgz B=$A\nADD $B /x\n", &[], &["line 4", "'http://127.0.0.1:9101/'"]),
            // the legacy builder keeps ENV over a later ARG, BuildKit takes the ARG: both are followed
            ("FROM x\nENV U=a.tgz\nARG U\nADD $U /x\n", &[("U", "http://127.0.0.1:9101/")], &["line 4", "'http://127.0.0.1:9101/'"]),
        ];
        assert_refused(cases, 30);
    }

    #[test]
    fn add_of_an_unknown_variable_is_refused() {
        let cases: &[Case] = &[
            (
                "FROM x\nADD $FROM_IMAGE /x\n",
                &[],
                &["line 2", "'$FROM_IMAGE'", "not known"],
            ),
            (
                "ARG U=http://127.0.0.1\nFROM x\nADD $U /x\n",
                &[],
                &["line 3", "'$U'", "declare it"],
            ),
            (
                "FROM x\nARG U\nADD ${U}/a /x\n",
                &[],
                &["line 3", "'${U}/a'"],
            ),
            (
                "FROM x\nARG U=a\nADD ${U#a} /x\n",
                &[],
                &["line 3", "'${U#a}'"],
            ),
            (
                "FROM x\nENV $K=http://127.0.0.1/ B=1\nARG U=a\nENV $K=1\nADD $U /x\n",
                &[],
                &["line 5", "'$U'"],
            ),
            (
                "FROM x\nADD '$U' /x\n",
                &[],
                &["line 2", "still holds a '$'"],
            ),
            (
                "FROM x\nADD ${U /x\n",
                &[],
                &["line 2", "cannot be expanded"],
            ),
        ];
        assert_refused(cases, 7);
    }

    #[test]
    fn syntax_directives_are_refused() {
        let cases: &[Case] = &[
            (
                "# syntax=docker/dockerfile:1\nFROM x\n",
                &[],
                &["line 1", "'# syntax='", "remove the line"],
            ),
            (
                "#SYNTAX = docker/dockerfile:1\nFROM x\n",
                &[],
                &["line 1", "syntax"],
            ),
            (
                "# escape=`\n# syntax=evil/frontend\nFROM x\n",
                &[],
                &["line 2", "syntax"],
            ),
            (
                "#!/usr/bin/env buildctl\n# syntax=evil\nFROM x\n",
                &[],
                &["line 2", "syntax"],
            ),
            (
                "// syntax=evil/frontend\nFROM x\n",
                &[],
                &["line 1", "syntax"],
            ),
            (
                "\u{feff}  #  Syntax\t=\tevil\nFROM x\n",
                &[],
                &["line 1", "syntax"],
            ),
            (
                "# foo=bar\n\n# syntax=evil\nFROM x\n",
                &[],
                &["line 3", "syntax"],
            ),
            (
                "{\"syntax\": \"evil/frontend\"}\n",
                &[],
                &["line 1", "JSON document"],
            ),
            (
                "FROM x\n",
                &[("BUILDKIT_SYNTAX", "evil/frontend")],
                &["'BUILDKIT_SYNTAX'", "build.args"],
            ),
        ];
        assert_refused(cases, 9);
    }

    #[test]
    fn run_mounts_networks_and_privileges_are_refused() {
        let cases: &[Case] = &[
            (
                "FROM x\nRUN --mount=type=cache,target=/root/.cache pip install x\n",
                &[],
                &["line 2", "type=cache", "no-cache-dir"],
            ),
            (
                "FROM x\nRUN --mount=type=secret,id=k cat /run/secrets/k\n",
                &[],
                &["line 2", "secret mounts"],
            ),
            (
                "FROM x\nRUN --mount=type=ssh git clone x\n",
                &[],
                &["line 2", "ssh mounts"],
            ),
            (
                "FROM x\nRUN --mount=type=bind,from=evil/img,target=/m ls\n",
                &[],
                &["line 2", "another image or stage"],
            ),
            (
                "FROM x\nRUN --mount=source=../..,target=/m ls\n",
                &[],
                &["line 2", "source '../..'"],
            ),
            (
                "FROM x\nRUN --mount=type=bind,src=/etc,target=/m ls\n",
                &[],
                &["line 2", "source '/etc'"],
            ),
            (
                "FROM x\nRUN --mount=type=tmpfs,type=cache,target=/m ls\n",
                &[],
                &["line 2", "type=cache"],
            ),
            (
                "FROM x\nRUN --mount=type=\\\"cache\\\",target=/m ls\n",
                &[],
                &["line 2", "plain key=value"],
            ),
            (
                "FROM x\nRUN --mount=type=\"cache\",target=/m ls\n",
                &[],
                &["line 2", "type=cache,target=/m"],
            ),
            (
                "FROM x\nRUN --mount=type=$T,target=/m ls\n",
                &[],
                &["line 2", "plain key=value"],
            ),
            (
                "FROM x\nRUN --mount=type=tmpfs,target=/m,uid=0 ls\n",
                &[],
                &["line 2", "option 'uid'"],
            ),
            (
                "FROM x\nRUN --network=host curl http://127.0.0.1:9101/\n",
                &[],
                &["line 2", "--network=host", "loopback"],
            ),
            (
                "FROM x\nRUN --network=\"host\" curl x\n",
                &[],
                &["line 2", "--network=host"],
            ),
            (
                "FROM x\nrun \\\n  --network=host curl x\n",
                &[],
                &["line 2", "--network=host"],
            ),
            (
                "FROM x\nRUN --security=insecure id\n",
                &[],
                &["line 2", "--security=insecure", "privileges"],
            ),
            (
                "FROM x\nRUN --device=nvidia.com/gpu=all id\n",
                &[],
                &["line 2", "RUN --device"],
            ),
            (
                "FROM x\nRUN --network=none --mount=type=cache,target=/x ls\n",
                &[],
                &["line 2", "type=cache"],
            ),
        ];
        assert_refused(cases, 16);
    }

    #[test]
    fn onbuild_is_refused() {
        let cases: &[Case] = &[
            (
                "FROM x\nONBUILD ADD http://127.0.0.1/ /x\n",
                &[],
                &["line 2", "ONBUILD is refused"],
            ),
            ("FROM x\nonbuild RUN id\n", &[], &["line 2", "ONBUILD"]),
            ("FROM x\nON\\\nBUILD RUN id\n", &[], &["line 2", "ONBUILD"]),
            (
                "FROM x\nONBU\u{130}LD RUN id\n",
                &[],
                &["line 2", "ONBUILD"],
            ),
        ];
        assert_refused(cases, 4);
    }

    #[test]
    fn what_docker_cannot_read_either_is_refused() {
        let long = format!("FROM x\nRUN echo {}\n", "a".repeat(70_000));
        let huge = format!("FROM x\n{}", "RUN true\n".repeat(MAX_BYTES / 9 + 1));
        let cases: &[Case] = &[
            (&long, &[], &["line 2", "64 KiB"]),
            (&huge, &[], &["KiB; at most 1024 KiB"]),
            (
                "# check=skip=all\n# escape=`\nFROM x\n",
                &[],
                &["line 2", "first line"],
            ),
            ("#\u{c}escape=`\nFROM x\n", &[], &["line 1", "first line"]),
            (
                "# escape=\\\n# escape=\\\nFROM x\n",
                &[],
                &["line 2", "second 'escape'"],
            ),
            (
                "# escape=x\nFROM x\n",
                &[],
                &["line 1", "escape directive 'x'"],
            ),
            (
                "FROM x\nCOPY <<EOF /a\nnever closed\n",
                &[],
                &["line 2", "<<EOF never ends"],
            ),
            (
                "FROM x\nRUN --mount=type=tmpfs,target=/t\u{e9} x\n",
                &[],
                &["line 2", "non-ASCII"],
            ),
            (
                "FROM x\nRUN echo \\\r\r\nADD http://127.0.0.1/ /x\n",
                &[],
                &["line 2", "carriage return"],
            ),
            (
                "FROM x\nADD [\"\\ud800\", \"/y\"]\n",
                &[],
                &["line 2", "JSON"],
            ),
        ];
        assert_refused(cases, 10);
    }

    #[test]
    fn upstream_shaped_dockerfiles_are_allowed() {
        let cases = [
            PYTHON.to_string(),
            "FROM x\nADD local.tar.gz /x\n".into(),
            "FROM x\nADD --chown=1:1 src/ /app/\n".into(),
            "FROM golang:1.22 AS build\nRUN go build -o /out .\nFROM debian\nCOPY --from=build /out /app\nCOPY --from=nginx:latest /etc/nginx /n\n".into(),
            "ARG BASE=python:3.12\nFROM $BASE\nRUN true\n".into(),
            "FROM x\nRUN --mount=type=tmpfs,target=/tmp x\n".into(),
            "FROM x\nRUN --mount=type=bind,source=requirements.txt,target=/r.txt pip install -r /r.txt\n".into(),
            "FROM x\nRUN --network=none --security=sandbox make\n".into(),
            "# fetched from http://example.com/x\nFROM x\n# ADD http://127.0.0.1/ /x\n".into(),
            "FROM x\nRUN curl -fsSLO http://example.com/a.tgz\n".into(),
            "FROM x\nLABEL url=http://x\n".into(),
            "# escape=`\nFROM x\nRUN echo a `\n    && echo b\nCOPY C:\\src /dst\n".into(),
            "FROM x\nARG V=1.0\nENV APP=/app PATH=$APP/bin:$PATH\nADD app-${V}.tar.gz $APP/\n".into(),
            "FROM x\nARG F\nADD ${F:+extra}.tgz /x\n".into(),
            "FROM x\nCOPY <<EOF /etc/x.conf\nlisten 80\nEOF\nADD <<-EOT /y\n\tcontent\n\tEOT\n".into(),
            "FROM x\nRUN <<EOF\nenv\nrun --foo\narg\nEOF\n".into(),
            "FROM x\nRUN <<EOF\nset -e\npip install x\nEOF\n".into(),
            "FROM x\nHEALTHCHECK --interval=5s CMD curl -f http://localhost:5000/ || exit 1\n".into(),
            "FROM x\nENTRYPOINT [\"python\"]\nSTOPSIGNAL SIGTERM\n".into(),
            "FROM x\nADD . /app\n".into(),
            "FROM x\nADD vendor/lib.git/ /app/lib\n".into(),
        ];
        for df in &cases {
            allowed(df, &[("VERSION", "1")]);
        }
        assert_eq!(cases.len(), 21);
    }

    #[test]
    fn docker_line_rules_are_followed() {
        // a backslash ending a line joins the next one, across comments and empty lines: the
        // ADD is part of the RUN's shell command, not an instruction
        allowed(
            "FROM x\nRUN echo \\\n# c\n\nADD http://127.0.0.1/ /x\n",
            &[],
        );
        // an escaped escape does not continue the line
        assert!(
            refusal("FROM x\nRUN echo \\\\\nADD http://127.0.0.1/ /x\n", &[]).contains("line 3")
        );
        // with escape=` a backslash is a plain character
        assert!(refusal(
            "# escape=`\nFROM x\nRUN echo \\\nADD http://127.0.0.1/ /x\n",
            &[]
        )
        .contains("line 4"));
        // a directive after a blank line is a comment to every Docker release, `# syntax` aside
        allowed("\n# escape=`\nFROM x\nRUN echo \\\n  ok\n", &[]);
        // build args override only declared ARGs
        allowed("FROM x\nADD a.tgz /x\n", &[("U", "http://127.0.0.1/")]);
        // ARG values are found once declared in the stage
        allowed("ARG V=1\nFROM x\nARG V\nADD v$V.tgz /x\n", &[]);
    }

    #[test]
    fn instructions_read_as_docker_reads_them() {
        let work = Cell::new(WORK);
        let df = "FROM alpine\nRUN <<EMPTY\nEMPTY\nRUN 3<<EMPTY2\nEMPTY2\nRUN \"<<NOHEREDOC\"\nRUN <<-UNINDENT\n\tbaz\n\tUNINDENT\nCOPY <<FILE1 <<FILE2 /dest\n1\nFILE1\n2\nFILE2\nRUN <<eo'f'\necho\neof\nRUN <<eo\\'f\necho\neo'f\nRUN <<'one two'\none two\nRUN <<$EOF\n$EOF\nRUN <<  EOF  > foo\nEOF\nRUN [\"<<X\"]\n";
        let mut p = Parser::new(df, false, &work);
        let mut got = Vec::new();
        while let Some(i) = p.next().unwrap() {
            got.push(i.heredocs.join(","));
        }
        let want = [
            "",
            "EMPTY",
            "EMPTY2",
            "",
            "UNINDENT",
            "FILE1,FILE2",
            "eof",
            "eo'f",
            "one two",
            "$EOF",
            "EOF",
            "",
        ];
        assert_eq!(got, want);
        // flags, quotes and escapes in them, and `--` ending them
        let (cmd, after) = split_command(" RUN\t --a=\"b c\" --d=e\\ f -- --g x");
        let (rest, flags) = builder_flags(after, '\\').unwrap();
        assert_eq!(
            (cmd, flags, rest.trim()),
            (
                "RUN",
                vec!["--a=b c".to_string(), "--d=e f".into()],
                "--g x"
            )
        );
        assert_eq!(
            parse_words("A=\"x y\" B='$z' C=a\\ b", '\\'),
            ["A=\"x y\"", "B='$z'", "C=a\\ b"]
        );
    }

    #[test]
    fn variables_expand_as_in_shell_lex() {
        let work = Cell::new(WORK);
        let env = |n: &str| -> Result<Option<String>, LexErr> {
            Ok(match n {
                "PWD" => Some("/home".into()),
                "SHELL" => Some("bash".into()),
                "NULL" => Some(String::new()),
                _ => None,
            })
        };
        // from buildkit's frontend/dockerfile/shell/envVarTest
        let cases = [
            ("he'll'o", Some("hello")),
            ("he\\'llo", Some("he'llo")),
            ("he\\\\'llo", None),
            ("\"abc\\tdef\"", Some("abc\\tdef")),
            ("hello\\", Some("hello")),
            ("\"hello\\\"", None),
            ("'hello\\'", Some("hello\\")),
            ("$.", Some("$.")),
            ("he$1x", Some("hex")),
            ("he\\\\$PWD", Some("he\\/home")),
            ("\"he\\\\$PWD\"", Some("he\\/home")),
            ("${}", None),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:YYY}", None),
            ("he${XXX?}", None),
            ("he${NULL?}", Some("he")),
            ("he${NULL:?}", None),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("'he${XX}'", Some("he${XX}")),
            ("\"he'$PWD'\"", Some("he'/home'")),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
            ("${aaa}}", Some("}")),
            ("${aaa:-bbb {foo}", Some("bbb {foo")),
            ("${:+bbb}", None),
            ("$999aaa", Some("aaa")),
            ("$@@@", Some("@@")),
            ("${0:-bbb}", Some("bbb")),
        ];
        for (src, want) in cases {
            let got = Lex::new(src, '\\', Opts::default(), &env, &work)
                .unwrap()
                .word();
            match want {
                Some(w) => assert_eq!(got.unwrap(), w, "{src}"),
                None => assert!(matches!(got, Err(LexErr::Syntax(_))), "{src}: {got:?}"),
            }
        }
        assert_eq!(cases.len(), 29);
    }

    #[test]
    fn weird_and_huge_input_is_bounded() {
        let nested = format!(
            "FROM x\nADD {}a{} /x\n",
            "${A:-".repeat(5000),
            "}".repeat(5000)
        );
        assert!(refusal(&nested, &[]).contains("nested more than"));
        let deep_heredoc = format!(
            "FROM x\nRUN {}x{} <<EOF\nEOF\n",
            "${A:-".repeat(5000),
            "}".repeat(5000)
        );
        assert!(refusal(&deep_heredoc, &[]).contains("heredoc"));
        let continued = format!("FROM x\nRUN echo \\\n{}done\n", "a \\\n".repeat(100_000));
        allowed(&continued, &[]);
        let many: String = (0..10).map(|i| format!("ENV A{i}=x\nARG A{i}\n")).collect();
        let combos: String = (0..10).map(|i| format!("${{A{i}}}")).collect();
        let df = format!("FROM x\n{many}ADD {combos} /x\n");
        assert!(refusal(
            &df,
            &[
                ("A1", "y"),
                ("A2", "y"),
                ("A3", "y"),
                ("A4", "y"),
                ("A5", "y"),
                ("A6", "y"),
                ("A7", "y")
            ]
        )
        .contains("too many possible values"));
        let doubling: String = (1..40)
            .map(|i| format!("ENV V{i}=$V{p}$V{p}\n", p = i - 1))
            .collect();
        allowed(
            &format!("FROM x\nENV V0=aaaaaaaa\n{doubling}ADD ok /x\n"),
            &[],
        );
        for garbage in [
            "\0\0\0",
            "\u{feff}",
            "\\",
            "`",
            "RUN \"",
            "ADD [",
            "ADD \"",
            "FROM\u{a0}x\nADD\u{85}\u{a0}x y\n",
            "ADD --a=\u{e9} x y\n",
            "ENV\n",
            "ARG =x\n",
        ] {
            let _ = check(garbage, &[]);
        }
    }
}
