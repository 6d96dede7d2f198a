//! ARG and ENV scope (dockerfile2llb/convert.go; Docker 20.10's builder/dockerfile): the
//! values each variable may have where an instruction reads it.

use super::*;

/// The values a variable may have; `None` is unset.
pub(super) type Values = Vec<Option<String>>;

pub(super) fn unknown() -> Values {
    vec![None, Some(String::new()), Some(UNKNOWN.into())]
}

pub(super) fn unknown_set() -> Values {
    vec![Some(String::new()), Some(UNKNOWN.into())]
}

/// Without repeats; unknown past MAX_VALUES.
pub(super) fn bounded(values: impl IntoIterator<Item = Option<String>>) -> Values {
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

pub(super) struct Var {
    pub(super) values: Values,
    /// Set by ENV: the legacy builder keeps ENV over a later ARG, BuildKit takes the ARG.
    pub(super) from_env: bool,
    /// When it was set, for `Vars::poisoned`.
    pub(super) set: u64,
}

/// The variables of one scope. A name not here may come from the base image, a parent stage
/// or a built-in ARG: unknown.
#[derive(Default)]
pub(super) struct Vars {
    pub(super) map: HashMap<String, Var>,
    pub(super) sets: u64,
    /// Variables set before this may also have any value (an ENV or ARG set a name that cannot
    /// be worked out).
    pub(super) poisoned: u64,
}

impl Vars {
    pub(super) fn get(&self, name: &str) -> Option<Values> {
        let v = self.map.get(name)?;
        Some(match v.set < self.poisoned {
            true => bounded(v.values.iter().cloned().chain(unknown_set())),
            false => v.values.clone(),
        })
    }

    pub(super) fn set(&mut self, name: &str, values: Values, from_env: bool) {
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

    pub(super) fn poison(&mut self) {
        self.poisoned = self.sets + 1;
    }
}

/// Global ARGs (before the first FROM) and the current stage's ARGs and ENVs.
pub(super) struct Scopes<'a> {
    pub(super) build_args: &'a [(String, String)],
    pub(super) globals: Vars,
    pub(super) stage: Option<Vars>,
}

impl<'a> Scopes<'a> {
    pub(super) fn new(build_args: &'a [(String, String)]) -> Self {
        Scopes {
            build_args,
            globals: Vars::default(),
            stage: None,
        }
    }

    pub(super) fn vars(&mut self) -> &mut Vars {
        self.stage.as_mut().unwrap_or(&mut self.globals)
    }

    pub(super) fn lookup(&self, name: &str) -> Values {
        self.stage
            .as_ref()
            .unwrap_or(&self.globals)
            .get(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(unknown)
    }

    /// Every value `word` may expand to, over the values of the variables it names.
    pub(super) fn expand(
        &self,
        word: &str,
        escape: char,
        work: &Cell<u64>,
    ) -> Result<Vec<String>, LexErr> {
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
    pub(super) fn value_of(
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
    pub(super) fn name_of(
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

    pub(super) fn build_arg(&self, key: &str) -> Option<String> {
        self.build_args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// ARG name[=default] ...: BuildKit reads them one at a time, each default seeing the ones
    /// before it; the legacy builder expands every default first. Both are followed.
    pub(super) fn arg(
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
    pub(super) fn inherited(&self, key: &str) -> Values {
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
    pub(super) fn env(
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

pub(super) fn too_complex(line: usize) -> Refusal {
    at(
        line,
        "the Dockerfile is too complex to check; simplify its variables",
    )
}

/// parseNameVal: `NAME=value ...`, or the old `NAME value`.
pub(super) fn env_pairs(rest: &str, escape: char) -> Option<Vec<(String, String)>> {
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
