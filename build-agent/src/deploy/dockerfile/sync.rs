//! Where a package's changed files go in its running container, read from its Dockerfile, for an
//! edit loop that syncs them instead of building (`build-agent sync-plan`, used by
//! `deploy-agent.sh --watch`). Pure. Only what is certain is synced: a file that a plain `COPY` of
//! the single stage puts in place after the last `RUN` (so no build step reads it), as the same
//! bytes at the same path a build would give; anything else asks for a build, with the reason.

use super::lines::{Instruction, Json, Parser};
use std::cell::Cell;
use std::path::Path;

/// The files a build reads itself, or that the build agent reads at a deploy.
const BUILD_INPUTS: [&str; 7] = [
    "Dockerfile",
    ".dockerignore",
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
    "AgentCard.json",
];

/// One plain `COPY`: its sources, its destination (absolute), and whether a `RUN` follows it.
struct Copy {
    line: usize,
    srcs: Vec<String>,
    dst: String,
    before_run: bool,
}

/// For each of `changed` (paths relative to the package root `pkg`, as `/`-separated text), the
/// path in the container a build would put it at; files no `COPY` takes are left out. `Err`: a
/// build is needed, and why.
pub fn sync_plan(pkg: &Path, changed: &[String]) -> Result<Vec<(String, String)>, String> {
    // read as the deploy's check reads it: no more than it would (the package is not checked yet)
    let path = pkg.join("Dockerfile");
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read the Dockerfile: {e}"))?
        .len();
    if size > super::MAX_BYTES as u64 {
        return Err(format!(
            "the Dockerfile is {} KiB, more than a deploy reads ({} KiB)",
            size / 1024,
            super::MAX_BYTES / 1024
        ));
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read the Dockerfile: {e}"))?;
    if pkg.join(".dockerignore").exists() {
        return Err("the package has a .dockerignore, which this plan does not read".into());
    }
    let copies = copies(&text)?;
    let mut plan = Vec::new();
    for f in changed {
        let f = f.trim_start_matches("./");
        if f.is_empty() || f.split('/').any(|p| p == ".." || p == "." || p.is_empty()) {
            return Err(format!("'{f}' is not a plain path in the package"));
        }
        if BUILD_INPUTS.contains(&f) {
            return Err(format!("{f} changed"));
        }
        if !pkg.join(f).is_file() {
            return Err(format!(
                "{f} is gone or not a file (a sync cannot remove it)"
            ));
        }
        // a RUN after any COPY that takes it may have read it
        if let Some(c) = copies
            .iter()
            .find(|c| c.before_run && destination(pkg, c, f).is_some())
        {
            return Err(format!(
                "{f} is copied at line {} before a RUN step, which may read it",
                c.line
            ));
        }
        // where the last COPY that takes it puts it; none: it is not in the image
        if let Some(at) = copies.iter().rev().find_map(|c| destination(pkg, c, f)) {
            plan.push((f.to_string(), at));
        }
    }
    Ok(plan)
}

/// The plain `COPY`s of a single-stage Dockerfile, as Docker 20.10's builder reads it.
fn copies(text: &str) -> Result<Vec<Copy>, String> {
    let work = Cell::new(super::WORK);
    let mut parser = Parser::new(text, true, &work);
    let (mut stages, mut workdir, mut out) = (0, "/".to_string(), Vec::<Copy>::new());
    while let Some(ins) = parser.next().map_err(|r| r.0)? {
        match ins.name.as_str() {
            "from" => stages += 1,
            "workdir" => workdir = absolute(&workdir, plain(&ins, &ins.args)?),
            "run" => out.iter_mut().for_each(|c| c.before_run = true),
            "copy" => out.push(copy(&ins, &workdir)?),
            "add" | "onbuild" => {
                return Err(format!("line {}: {} is not synced", ins.line, ins.name))
            }
            _ => {}
        }
    }
    if stages != 1 {
        return Err(format!(
            "the Dockerfile has {stages} stages; only one is synced"
        ));
    }
    Ok(out)
}

fn copy(ins: &Instruction, workdir: &str) -> Result<Copy, String> {
    if !ins.flags.is_empty() {
        return Err(format!(
            "line {}: COPY {} is not synced",
            ins.line,
            ins.flags.join(" ")
        ));
    }
    let mut words: Vec<String> = match &ins.json {
        Json::Strings(w) => w.clone(),
        Json::Unsure => return Err(format!("line {}: unclear JSON form", ins.line)),
        Json::No => plain(ins, &ins.args)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    for w in &words {
        plain(ins, w)?;
    }
    let dst = words
        .pop()
        .filter(|_| !words.is_empty())
        .ok_or(format!("line {}: COPY without a source", ins.line))?;
    // a destination ending in `/` (or `.`, the folder itself) is a folder, as for several sources
    let dir = dst.ends_with('/') || dst == "." || dst.ends_with("/.") || words.len() > 1;
    let mut dst = absolute(workdir, &dst);
    if dir && !dst.ends_with('/') {
        dst.push('/');
    }
    Ok(Copy {
        line: ins.line,
        srcs: words,
        dst,
        before_run: false,
    })
}

/// `s`, unless it holds what a word can mean more than one thing by (variables, globs, quotes,
/// escapes).
fn plain<'a>(ins: &Instruction, s: &'a str) -> Result<&'a str, String> {
    if s.contains(['$', '*', '?', '[', '"', '\'', '\\', '`']) {
        return Err(format!(
            "line {}: '{s}' has variables, globs or quotes, which are not synced",
            ins.line
        ));
    }
    Ok(s)
}

/// `p` against `workdir`, its `.` and `..` resolved (a trailing `/` kept).
fn absolute(workdir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{workdir}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Where `c` puts package file `f`, if it takes it: a source that is the file, a folder holding it
/// (its contents go into the destination), or the whole context.
fn destination(pkg: &Path, c: &Copy, f: &str) -> Option<String> {
    let dir_dst = |rest: &str| format!("{}/{rest}", c.dst.trim_end_matches('/'));
    c.srcs.iter().rev().find_map(|src| {
        let src = src.trim_start_matches("./").trim_end_matches('/');
        if src.is_empty() || src == "." {
            Some(dir_dst(f))
        } else if src == f {
            let name = f.rsplit('/').next().unwrap_or(f);
            Some(if c.dst.ends_with('/') {
                dir_dst(name)
            } else {
                c.dst.clone()
            })
        } else {
            let rest = f.strip_prefix(src)?.strip_prefix('/')?;
            pkg.join(src).is_dir().then(|| dir_dst(rest))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package folder of the test's, removed on drop.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn package(dockerfile: &str, files: &[&str]) -> Dir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = Dir(std::env::temp_dir().join(format!("sync-plan-{}-{n}", std::process::id())));
        std::fs::create_dir_all(d.path()).unwrap();
        std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        d
    }

    fn plan(
        dockerfile: &str,
        files: &[&str],
        changed: &[&str],
    ) -> Result<Vec<(String, String)>, String> {
        let d = package(dockerfile, files);
        let changed: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
        sync_plan(d.path(), &changed)
    }

    #[test]
    fn files_a_plain_copy_puts_in_place_after_the_last_run_go_where_a_build_puts_them() {
        let hello = "FROM nasiko/agent-base:local\nCOPY agent.sh AgentCard.json /app/\n";
        assert_eq!(
            plan(
                hello,
                &["agent.sh", "AgentCard.json", "README.md"],
                &["agent.sh", "README.md"]
            ),
            Ok(vec![("agent.sh".into(), "/app/agent.sh".into())]),
            "README.md is in no COPY: nothing to sync"
        );
        let python = "FROM python:3.12-slim\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY src/ ./src\nCOPY main.py run.py\nCMD [\"python\", \"-m\", \"src\"]\n";
        let files = [
            "requirements.txt",
            "src/__main__.py",
            "src/a/b.py",
            "main.py",
        ];
        assert_eq!(
            plan(python, &files, &["src/a/b.py", "main.py"]),
            Ok(vec![
                ("src/a/b.py".into(), "/app/src/a/b.py".into()),
                ("main.py".into(), "/app/run.py".into())
            ])
        );
        assert_eq!(
            plan("FROM x\nWORKDIR /srv\nCOPY . .\n", &["a/b.py"], &["a/b.py"]),
            Ok(vec![("a/b.py".into(), "/srv/a/b.py".into())])
        );
        assert_eq!(
            plan("FROM x\nWORKDIR /w\nCOPY a.py .\n", &["a.py"], &["a.py"]),
            Ok(vec![("a.py".into(), "/w/a.py".into())])
        );
        assert_eq!(
            plan("FROM x\nCOPY [\"a.py\", \"/opt/\"]\n", &["a.py"], &["a.py"]),
            Ok(vec![("a.py".into(), "/opt/a.py".into())])
        );
    }

    #[test]
    fn what_a_build_reads_or_what_cannot_be_sure_asks_for_a_build_with_the_reason() {
        let python = "FROM x\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY . .\n";
        let files = ["requirements.txt", "app.py", "docker-compose.yml"];
        for (df, changed, why) in [
            (python, "requirements.txt", "before a RUN step"),
            (python, "Dockerfile", "Dockerfile changed"),
            (python, "docker-compose.yml", "docker-compose.yml changed"),
            (python, "gone.py", "gone"),
            (python, "../etc/passwd", "not a plain path"),
            (
                "FROM x AS b\nRUN make\nFROM y\nCOPY --from=b /out /app\n",
                "app.py",
                "COPY --from=b",
            ),
            ("FROM x\nCOPY --chown=1:1 . /app\n", "app.py", "--chown"),
            ("FROM x\nADD . /app\n", "app.py", "add is not synced"),
            ("FROM x\nCOPY *.py /app/\n", "app.py", "globs"),
            ("FROM x\nARG D=/app\nCOPY . $D\n", "app.py", "variables"),
            ("FROM x\nFROM y\nCOPY . /app\n", "app.py", "2 stages"),
        ] {
            let got = plan(df, &files, &[changed]);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{df:?} with {changed} changed: {got:?}, expected a build because {why}"
            );
        }
        let big = format!(
            "FROM x\nCOPY . /app\n{}",
            "#".repeat(super::super::MAX_BYTES)
        );
        assert!(
            plan(&big, &["a.py"], &["a.py"]).is_err_and(|e| e.contains("more than a deploy reads"))
        );
        let d = package("FROM x\nCOPY . /app\n", &["a.py"]);
        std::fs::write(d.path().join(".dockerignore"), "*.md").unwrap();
        assert!(sync_plan(d.path(), &["a.py".into()]).is_err_and(|e| e.contains(".dockerignore")));
    }
}
