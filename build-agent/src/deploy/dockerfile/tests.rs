//! The Dockerfile policy's tests: hostile Dockerfiles in every spelling, the allowed ones, and
//! the line rules, each assertion on the message.

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
    assert!(refusal("FROM x\nRUN echo \\\\\nADD http://127.0.0.1/ /x\n", &[]).contains("line 3"));
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
