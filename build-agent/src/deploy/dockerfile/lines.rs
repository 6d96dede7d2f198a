//! Lines and instructions as Docker reads them (parser/parser.go, split_command.go,
//! line_parsers.go): continuation, comments, flags, JSON form, heredocs.

use super::*;

/// The arguments in JSON (exec) form, as parseJSON reads them.
pub(super) enum Json {
    No,
    Strings(Vec<String>),
    /// Go's decoder may read what serde_json refuses (lone `\uD800`…`\uDFFF` escapes).
    Unsure,
}

pub(super) struct Instruction {
    pub(super) line: usize,
    /// Lower-cased as Docker dispatches it.
    pub(super) name: String,
    pub(super) flags: Vec<String>,
    /// After the flags, trimmed.
    pub(super) args: String,
    pub(super) json: Json,
    /// The heredocs' names (bodies are passed over).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) heredocs: Vec<String>,
}

pub(super) struct Heredoc {
    pub(super) name: String,
    pub(super) chomp: bool,
}

pub(super) struct Parser<'a> {
    pub(super) lines: std::str::SplitInclusive<'a, char>,
    pub(super) line: usize,
    pub(super) escape: char,
    pub(super) directives: Directives,
    /// Read as buildkit v0.8 does (Docker 20.10).
    pub(super) legacy: bool,
    pub(super) work: &'a Cell<u64>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str, legacy: bool, work: &'a Cell<u64>) -> Self {
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
    pub(super) fn flags_escape(&self) -> char {
        if self.legacy {
            '\\'
        } else {
            self.escape
        }
    }

    pub(super) fn read(&mut self) -> Result<Option<&'a str>, Refusal> {
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
    pub(super) fn process(&mut self, raw: &'a str, strip_left: bool) -> Result<&'a str, Refusal> {
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
    pub(super) fn next(&mut self) -> Result<Option<Instruction>, Refusal> {
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

    pub(super) fn instruction(
        &mut self,
        logical: &str,
        start: usize,
    ) -> Result<Instruction, Refusal> {
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

    pub(super) fn skip_heredoc(&mut self, h: &Heredoc, start: usize) -> Result<(), Refusal> {
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

pub(super) fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// trimContinuationCharacter: an escape token ending the line (before spaces and tabs) and not
/// itself escaped continues the instruction on the next line.
pub(super) fn continued(line: &str, escape: char) -> (&str, bool) {
    if let Some(before) = line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, true);
        }
    }
    (line, false)
}

/// reWhitespace of parser.go: `[\t\v\f\r ]`.
pub(super) fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// strings.ToLower as far as it can give an ASCII instruction name: Go's simple case mapping
/// also lowers U+0130 to `i` and the Kelvin sign to `k`.
pub(super) fn instruction_name(cmd: &str) -> String {
    cmd.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// splitCommand: the instruction and what follows it (flags, then arguments).
pub(super) fn split_command(line: &str) -> (&str, &str) {
    let t = line.trim();
    match t.find(is_re_ws) {
        Some(i) => (&t[..i], t[i..].trim_start_matches(is_re_ws)),
        None => (t, ""),
    }
}

/// extractBuilderFlags, which reads bytes as runes: refused when a flag holds a non-ASCII byte.
pub(super) fn builder_flags(line: &str, escape: char) -> Result<(&str, Vec<String>), String> {
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
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
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
pub(super) fn json_form(args: &str, first_value: bool) -> Json {
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

pub(super) fn has_surrogate_escape(t: &str) -> bool {
    t.as_bytes().windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D') && w[3].is_ascii_hexdigit()
    })
}

/// heredocsFromLine: the words of the whole line, lexed raw with unset variables kept, that
/// read as `<<NAME`. A lexing error means no heredocs, as in Docker.
pub(super) fn heredocs_in(line: &str, work: &Cell<u64>) -> Result<Vec<Heredoc>, LexErr> {
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
pub(super) fn heredoc(word: &str, work: &Cell<u64>) -> Result<Option<Heredoc>, LexErr> {
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
