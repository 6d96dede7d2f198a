//! `${…}` in a package's compose file, resolved by us from an explicit list of variables — the
//! values the platform gives agents and the package's own `.env`, taken as literal text — never
//! from the build agent's environment. The syntax is compose's: `$$`, `$NAME`, `${NAME}`,
//! `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `${NAME:+alt}`,
//! `${NAME+alt}`, with defaults themselves interpolated. Anything else with a `$` is refused. Pure.

/// The variables a package's compose file may use.
#[derive(Debug, Clone, Default)]
pub struct Vars(pub Vec<(String, String)>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How deep defaults may nest (`${A:-${B:-${C}}}`).
const MAX_NESTING: usize = 8;

fn name_char(c: char, first: bool) -> bool {
    c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit())
}

/// Why a text cannot be resolved: what compose would refuse or read otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolvable {
    /// Defaults nest deeper than [`MAX_NESTING`].
    TooDeep { text: String },
    /// A `${` without its `}`.
    Unterminated { text: String },
    /// A `$` followed by neither `$`, `{` nor a name.
    StrayDollar { text: String },
    /// The result would grow past `limit` bytes.
    TooLong { limit: usize },
    /// `${…}` without a variable name.
    NoName { body: String },
    /// `${NAME:?message}` or `${NAME?message}` with NAME unset (or empty).
    Required { name: String, message: String },
    /// `${NAME…}` with an operator compose does not know.
    UnknownForm { body: String },
}

impl std::fmt::Display for Unresolvable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolvable::TooDeep { text } => {
                write!(f, "'{text}' nests ${{…}} deeper than {MAX_NESTING}")
            }
            Unresolvable::Unterminated { text } => write!(f, "'{text}' has an unterminated ${{"),
            Unresolvable::StrayDollar { text } => write!(
                f,
                "'{text}' has a '$' that starts no variable; write '$$' for a literal '$'"
            ),
            Unresolvable::TooLong { limit } => write!(
                f,
                "a value grows past {} KiB once its variables are filled in",
                limit >> 10
            ),
            Unresolvable::NoName { body } => write!(
                f,
                "'${{{body}}}' names no variable (letters, digits and '_')"
            ),
            Unresolvable::Required { name, message } => {
                write!(f, "the variable {name} is required: {message}")
            }
            Unresolvable::UnknownForm { body } => write!(
                f,
                "'${{{body}}}' is not a form compose knows (${{NAME}}, ${{NAME:-default}}, …)"
            ),
        }
    }
}

impl std::error::Error for Unresolvable {}

/// Resolve `text` into at most `limit` bytes; the error says what is wrong with it.
pub fn resolve(text: &str, vars: &Vars, limit: usize) -> Result<String, Unresolvable> {
    let out = resolve_at(text, vars, 0, limit)?;
    Ok(out)
}

fn resolve_at(text: &str, vars: &Vars, depth: usize, limit: usize) -> Result<String, Unresolvable> {
    if depth > MAX_NESTING {
        return Err(Unresolvable::TooDeep { text: text.into() });
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body)
                .ok_or_else(|| Unresolvable::Unterminated { text: text.into() })?;
            out.push_str(&braced(&body[..end], vars, depth, limit)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .char_indices()
                .take_while(|(j, c)| name_char(*c, *j == 0))
                .count();
            if len == 0 {
                return Err(Unresolvable::StrayDollar { text: text.into() });
            }
            out.push_str(vars.get(&after[..len]).unwrap_or(""));
            rest = &after[len..];
        }
        if out.len() > limit {
            return Err(Unresolvable::TooLong { limit });
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${`, counting nested `${…}`.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut prev_dollar = false;
    for (i, c) in body.char_indices() {
        match c {
            '{' if prev_dollar => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        prev_dollar = c == '$' && !prev_dollar;
    }
    None
}

fn braced(body: &str, vars: &Vars, depth: usize, limit: usize) -> Result<String, Unresolvable> {
    let len = body
        .char_indices()
        .take_while(|(j, c)| name_char(*c, *j == 0))
        .count();
    let (name, op) = body.split_at(len);
    if name.is_empty() {
        return Err(Unresolvable::NoName { body: body.into() });
    }
    let value = vars.get(name);
    let set = value.is_some();
    let non_empty = value.is_some_and(|v| !v.is_empty());
    let arg = |s: &str| resolve_at(s, vars, depth + 1, limit);
    Ok(match op {
        "" => value.unwrap_or("").to_string(),
        _ if op.starts_with(":-") => {
            if non_empty {
                value.unwrap_or("").to_string()
            } else {
                arg(&op[2..])?
            }
        }
        _ if op.starts_with(":+") => {
            if non_empty {
                arg(&op[2..])?
            } else {
                String::new()
            }
        }
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let required = if op.starts_with(':') { non_empty } else { set };
            if !required {
                let message = arg(op.trim_start_matches(':').trim_start_matches('?'))?;
                return Err(Unresolvable::Required {
                    name: name.into(),
                    message,
                });
            }
            value.unwrap_or("").to_string()
        }
        _ if op.starts_with('-') => {
            if set {
                value.unwrap_or("").to_string()
            } else {
                arg(&op[1..])?
            }
        }
        _ if op.starts_with('+') => {
            if set {
                arg(&op[1..])?
            } else {
                String::new()
            }
        }
        _ => return Err(Unresolvable::UnknownForm { body: body.into() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars(vec![
            ("OPENAI_API_KEY".into(), "sk-1".into()),
            ("EMPTY".into(), String::new()),
            ("PRICE".into(), "a$b".into()),
        ])
    }

    #[test]
    fn the_forms_compose_knows_resolve_from_the_list_only() {
        let v = vars();
        for (text, want) in [
            ("${OPENAI_API_KEY:-}", "sk-1"),
            ("$OPENAI_API_KEY/x", "sk-1/x"),
            ("${REDIS_URL}", ""),
            ("${HOME:-/root}", "/root"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${OPENAI_API_KEY:+set}", "set"),
            ("${EMPTY:+set}", ""),
            ("${EMPTY+set}", "set"),
            ("${UNSET:-${OPENAI_API_KEY}}", "sk-1"),
            ("cost $$5", "cost $5"),
            ("${PRICE}", "a$b"),
            ("no dollars", "no dollars"),
        ] {
            assert_eq!(resolve(text, &v, 1 << 20).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn what_compose_would_refuse_or_read_otherwise_is_refused() {
        let v = vars();
        for (text, needle) in [
            ("${", "unterminated"),
            ("${A", "unterminated"),
            ("$", "starts no variable"),
            ("$(id)", "starts no variable"),
            ("${}", "names no variable"),
            ("${A*B}", "not a form"),
            ("${UNSET:?set it}", "required: set it"),
            ("${UNSET?}", "required"),
        ] {
            let e = resolve(text, &v, 1 << 20).unwrap_err().to_string();
            assert!(e.contains(needle), "{text} → {e}");
        }
        let deep = format!("{}x{}", "${U:-".repeat(20), "}".repeat(20));
        assert!(resolve(&deep, &v, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("deeper"));
        // a small value that would grow to gigabytes stops at the limit
        let big = Vars(vec![("A".into(), "x".repeat(64 << 10))]);
        let e = resolve(&"$A".repeat(100_000), &big, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("grows past 1024 KiB"), "{e}");
    }
}
