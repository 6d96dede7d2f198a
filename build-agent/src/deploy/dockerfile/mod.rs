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

use super::refusal::Refusal;
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
    pub(super) done: bool,
    pub(super) seen: Vec<String>,
}

impl Directives {
    pub(super) fn parse_line(&mut self, line: &str, no: usize) -> Result<Option<char>, Refusal> {
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

mod lex;
mod lines;
mod scope;
mod sync;
#[cfg(test)]
mod tests;

use lex::*;
use lines::*;
use scope::*;
pub use sync::sync_plan;
