//! The shell lexer of Dockerfile words (shell/lex.go): quotes, escapes, `$VAR` expansion.

use super::*;

#[derive(Debug)]
pub(super) enum LexErr {
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

impl std::error::Error for LexErr {}

#[derive(Clone, Copy, Default)]
pub(super) struct Opts {
    pub(super) raw_quotes: bool,
    pub(super) raw_escapes: bool,
    pub(super) skip_unset: bool,
}

pub(super) type Env<'e> = dyn Fn(&str) -> Result<Option<String>, LexErr> + 'e;

pub(super) fn no_env(_: &str) -> Result<Option<String>, LexErr> {
    Ok(None)
}

pub(super) fn spend(work: &Cell<u64>, n: usize) -> Result<(), LexErr> {
    let left = work.get().checked_sub(n as u64).ok_or(LexErr::Work)?;
    work.set(left);
    Ok(())
}

/// Words split on whitespace, with the buffer shared by nested calls as in lex.go (an inner
/// `${x:-…}` resets the outer word).
#[derive(Default)]
pub(super) struct Words {
    pub(super) words: Vec<String>,
    pub(super) in_word: bool,
}

impl Words {
    pub(super) fn add_char(&mut self, buf: &mut String, c: char) {
        if !c.is_whitespace() {
            buf.push(c);
            self.in_word = true;
        } else if self.in_word && !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
    }
    pub(super) fn add_raw(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }
    pub(super) fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

pub(super) struct Lex<'a> {
    pub(super) src: Vec<char>,
    pub(super) pos: usize,
    pub(super) escape: char,
    pub(super) opts: Opts,
    pub(super) raw_escapes: bool,
    pub(super) buf: String,
    pub(super) env: &'a Env<'a>,
    pub(super) depth: usize,
    pub(super) work: &'a Cell<u64>,
}

impl<'a> Lex<'a> {
    pub(super) fn new(
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
    pub(super) fn word(mut self) -> Result<String, LexErr> {
        let raw = self.raw_escapes;
        Ok(self.stop_on(None, raw)?.0)
    }

    /// ProcessWords: the same, split into words.
    pub(super) fn words(mut self) -> Result<Vec<String>, LexErr> {
        let raw = self.raw_escapes;
        Ok(self.stop_on(None, raw)?.1)
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    pub(super) fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    pub(super) fn lookup(&self, name: &str) -> Result<Option<String>, LexErr> {
        let v = (self.env)(name)?;
        spend(self.work, v.as_ref().map_or(0, String::len))?;
        Ok(v)
    }

    /// processStopOn: up to `stop` (or the end).
    pub(super) fn stop_on(
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

    pub(super) fn stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), LexErr> {
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

    pub(super) fn single_quoted(&mut self) -> Result<String, LexErr> {
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

    pub(super) fn double_quoted(&mut self) -> Result<String, LexErr> {
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

    pub(super) fn possible_heredoc(&mut self) -> String {
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

    pub(super) fn name(&mut self) -> Result<String, LexErr> {
        let (name, n) = read_name(&self.src[self.pos.min(self.src.len())..])?;
        self.pos += n;
        Ok(name)
    }

    /// processDollar. `${x#…}`, `${x%…}` and `${x/…/…}` of a set variable are not worked out:
    /// they read as unknown.
    pub(super) fn dollar(&mut self) -> Result<String, LexErr> {
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
        match ch {
            Some('}') => Ok(match self.lookup(&name)? {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => self.modifier(&name, ch),
            Some('/') => self.substitution(&name),
            _ => syntax("unsupported modifier in substitution"),
        }
    }

    /// `${name:-word}`, `${name-word}`, `:+`, `+`, `:?`, `?`, `#`, `%` (`ch` read already).
    fn modifier(&mut self, name: &str, ch: Option<char>) -> Result<String, LexErr> {
        let mut chs = ch.map_or('\u{fffd}', |c| c).to_string();
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
            Err(e) => return Err(self.missing(e, "syntax error: missing '}'")),
        };
        let value = self.lookup(name)?;
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
            (Some('?'), _) => syntax(&format!("{name}: is not allowed to be unset or empty")),
            (Some('#' | '%'), None) => Ok(String::new()),
            (Some('#' | '%'), Some(_)) => Ok(UNKNOWN.into()),
            _ => syntax("unsupported modifier in substitution"),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}` (the first `/` read).
    fn substitution(&mut self, name: &str) -> Result<String, LexErr> {
        if self.peek() == Some('/') {
            self.next();
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(e) => return Err(self.missing(e, "syntax error: missing '/' in ${}")),
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(e) => return Err(self.missing(e, "syntax error: missing '}'")),
        };
        if self.opts.skip_unset && self.lookup(name)?.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        Ok(UNKNOWN.into())
    }

    /// A syntax error at the end of the input is the missing closer `m`, as moby says it.
    fn missing(&self, e: LexErr, m: &str) -> LexErr {
        match e {
            LexErr::Syntax(_) if self.peek().is_none() => LexErr::Syntax(m.into()),
            e => e,
        }
    }
}

fn syntax(m: &str) -> Result<String, LexErr> {
    Err(LexErr::Syntax(m.into()))
}

/// processName: digits, one special parameter, or letters, digits and `_`; how many characters
/// it took. Go's unicode.IsLetter decides past ASCII, so a non-ASCII character there is uncertain.
pub(super) fn read_name(s: &[char]) -> Result<(String, usize), LexErr> {
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
pub(super) fn names_in(word: &str) -> Result<Vec<String>, LexErr> {
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
