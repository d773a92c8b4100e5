//! What the operator sees on stderr: a line when each stage begins and
//! ends, plain in a pipe at every verbosity (no escape codes at all);
//! on a terminal (a pseudo-terminal made by util-linux `script`) a live
//! line with a bar for the long steps, and colour unless NO_COLOR is set;
//! nothing with `--quiet`, and `--json` output untouched.

use crate::build::site;
use crate::util::{TINY_SPEC, patchline, patchline_bin};
use std::path::Path;
use std::process::Command;

const STAGES: [&str; 6] = ["collect", "apply", "build", "publish", "test", "report"];

/// Whether `text` holds an SGR sequence (colour, bold): `ESC [ digits m`.
fn has_colour(text: &str) -> bool {
    text.match_indices("\x1b[").any(|(at, _)| {
        let rest = &text[at + 2..];
        let params = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(rest.len());
        rest[params..].starts_with('m')
    })
}

/// The text a terminal would show last on each line: what follows the
/// last `\r` of it, escape sequences removed.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split('\n')
        .map(|l| {
            l.rsplit('\r')
                .find(|s| !s.is_empty())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[test]
fn in_a_pipe_every_stage_has_a_plain_begin_and_end_line_at_every_verbosity() {
    let site = site(TINY_SPEC);
    let p = site.path();
    for (n, args) in [&["run"][..], &["-v", "run"], &["-vv", "run"]]
        .into_iter()
        .enumerate()
    {
        let ran = patchline(p, args);
        assert_eq!(ran.code(), 0, "{}", ran.describe());
        let stderr = ran.stderr();
        assert!(
            !stderr.contains("\x1b["),
            "an escape code in a pipe\n{}",
            ran.describe()
        );
        let run = n + 1;
        for stage in STAGES {
            assert!(
                stderr.contains(&format!("{stage:<8} started (run {run})\n")),
                "{stage} begins\n{}",
                ran.describe()
            );
            assert!(
                stderr.contains(&format!("\n{stage:<8} ok      ")),
                "{stage} ends\n{}",
                ran.describe()
            );
        }
        if n == 0 {
            // What the first run did, in the end lines.
            for line in [
                "collect  ok      1 mail, 1 patch, 1 series complete (",
                "apply    ok      1 series applied (1 patch) (",
                "build    ok      2 targets built (",
            ] {
                assert!(stderr.contains(line), "{line}\n{}", ran.describe());
            }
        }
    }
    // `--json`: stdout is the one JSON document, stderr has no stage line;
    // `--quiet`: stderr is empty.
    let json = patchline(p, &["run", "--json"]);
    assert_eq!(json.json()["run"]["id"], 4, "{}", json.describe());
    assert!(
        !json.stderr().contains("started (run"),
        "{}",
        json.describe()
    );
    let quiet = patchline(p, &["-q", "run"]);
    assert_eq!(quiet.code(), 0, "{}", quiet.describe());
    assert_eq!(quiet.stderr(), "", "{}", quiet.describe());
    // A per-stage command has its stage's lines.
    let status = patchline(p, &["status", "--json"]).json();
    assert_eq!(status["run"]["id"], 5);
    let build = patchline(p, &["build", "--run", "5"]);
    assert!(
        build
            .stderr()
            .starts_with("build    started (run 5)\nbuild    ok      "),
        "{}",
        build.describe()
    );
}

/// `patchline run` under a pseudo-terminal; returns all it wrote.
fn run_on_a_terminal(site: &Path, env: &[(&str, &str)]) -> String {
    let command = format!("'{}' run", patchline_bin().display());
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(site)
        .env_remove("PATCHLINE_CONFIG")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .envs(env.iter().copied())
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script -qfec {command}: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The end lines on a terminal, each where the live line of its stage
/// was, and the build's bar drawn (`n/2 targets`).
fn check_terminal_view(raw: &str) {
    let lines = screen_lines(raw);
    for stage in STAGES {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{stage:<8} ok      "))),
            "{stage} ends\n{lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains(&format!("{stage:<8} started"))),
            "a terminal has no begin line, but the live one\n{lines:#?}"
        );
    }
    assert!(
        raw.contains("/2 targets"),
        "the build's bar was drawn\n{raw:?}"
    );
    assert!(
        raw.contains("\x1b[2K") || raw.contains('\r'),
        "the live line was redrawn\n{raw:?}"
    );
}

#[test]
fn on_a_terminal_a_live_line_with_a_bar_becomes_the_stages_end_line_in_colour() {
    let site = site(TINY_SPEC);
    let raw = run_on_a_terminal(site.path(), &[]);
    check_terminal_view(&raw);
    assert!(raw.contains("\x1b[32mok"), "ok in green\n{raw:?}");
}

#[test]
fn no_color_on_a_terminal_keeps_the_live_line_and_drops_every_colour() {
    let site = site(TINY_SPEC);
    let raw = run_on_a_terminal(site.path(), &[("NO_COLOR", "1")]);
    check_terminal_view(&raw);
    assert!(!has_colour(&raw), "colour despite NO_COLOR\n{raw:?}");
}
