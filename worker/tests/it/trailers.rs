//! Trailers from review replies, end to end: a series with a cover letter
//! and its replies collected and applied by `patchline run`; the commits
//! (read with real git) carry exactly the trailers `git interpret-trailers`
//! gives the same messages; a reply that arrives after the series was
//! applied is listed in the report and changes no commit; `b4 am` on the
//! same mbox gives the same commit messages. LF and CRLF.

use crate::util::{git, hello_series, patchline};
use std::io::Write;
use std::path::Path;

/// The mails of a `git format-patch --stdout` mbox, without their `From `
/// separator lines.
fn split_format_patch(mbox: &str) -> Vec<String> {
    let mut mails: Vec<String> = Vec::new();
    for line in mbox.split_inclusive('\n') {
        let separator = line.starts_with("From ")
            && line
                .get(5..45)
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
        if separator {
            mails.push(String::new());
        } else if let Some(m) = mails.last_mut() {
            m.push_str(line);
        }
    }
    mails
}

fn message_id(mail: &str) -> String {
    mail.lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID: <")
                .or(l.strip_prefix("Message-Id: <"))
        })
        .and_then(|l| l.strip_suffix('>'))
        .unwrap_or_else(|| panic!("no Message-ID in\n{mail}"))
        .to_owned()
}

/// A reply from `from` in the thread `refs` (oldest first; the last is
/// the mail it answers).
fn reply(id: &str, from: &str, subject: &str, refs: &[&str], body: &str) -> String {
    let parent = refs.last().unwrap();
    let references: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
    format!(
        "From: {from}\nTo: list@example.org\nSubject: {subject}\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-Id: <{id}>\nIn-Reply-To: <{parent}>\nReferences: {}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\n{body}",
        references.join(" ")
    )
}

fn append_mbox(p: &Path, mails: &[String], eol: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p.join("list.mbox"))
        .unwrap();
    for m in mails {
        // mbox_format = "none": written as git format-patch writes them.
        write!(
            f,
            "From mboxrd@z Thu Jan  1 00:00:00 1970\n{}\n",
            m.replace('\n', eol)
        )
        .unwrap();
    }
}

/// What `git interpret-trailers --if-exists addIfDifferent` makes of
/// `message` with `trailers`: the oracle.
fn interpret_trailers(cwd: &Path, message: &str, trailers: &[String]) -> String {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("git");
    cmd.args(["interpret-trailers", "--if-exists", "addIfDifferent"])
        .current_dir(cwd);
    for t in trailers {
        cmd.arg("--trailer").arg(t);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git interpret-trailers failed");
    String::from_utf8(out.stdout).unwrap()
}

const ADA: &str = "Reviewed-by: Ada Lovelace <ada@example.org>";
const BOB: &str = "Acked-by: Bob Builder <bob@example.org>";
const CAROL: &str = "Tested-by: Carol Tester <carol@example.org>";
const CAROL_RB: &str = "Reviewed-by: Carol Tester <carol@example.org>";
const DAVE: &str = "Tested-by: Dave Late <dave@example.org>";
const COMMITTER: &str = "Signed-off-by: Test Committer <committer@example.org>";

/// In a temp dir: `hello.git`, its work repository `src` with the two
/// commits, and `list.mbox` with their series (cover letter and two
/// patches) and four replies (`eol` line endings); `patchline.toml` with
/// `repo_keys` in its `[[repos]]`. Returns the dir and the Message-IDs of
/// the cover letter and the patches.
fn reviewed_series(eol: &str, repo_keys: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let series = hello_series(p).replace("*** SUBJECT HERE ***", "Two changes");
    let mails = split_format_patch(&series);
    assert_eq!(mails.len(), 3, "cover and two patches");
    let ids: Vec<String> = mails.iter().map(|m| message_id(m)).collect();
    let (cover, p1, p2) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let replies = [
        // To the cover letter: every patch.
        reply(
            "r1@example.org",
            "Ada Lovelace <ada@example.org>",
            "Re: [master PATCH hello 0/2] Two changes",
            &[cover],
            &format!("> Two changes\n\nThe series looks right.\n\n{ADA}\n-- \nAda\n"),
        ),
        // To patch 2, quoting its own trailer-like lines.
        reply(
            "r2@example.org",
            "Bob Builder <bob@example.org>",
            "Re: [master PATCH hello 2/2] Add bee",
            &[cover, p2],
            &format!(
                "On Tue, Test Author wrote:\n> Add bee\n>\n> Reviewed-by: Quoted Person <quoted@example.org>\n> ---\n\n{BOB}\n"
            ),
        ),
        // Someone else's Reviewed-by: not taken by default.
        reply(
            "r3@example.org",
            "Eve Forwarder <eve@example.org>",
            "Re: [master PATCH hello 1/2] Shout two",
            &[cover, p1],
            &format!("Carol told me:\n\n{CAROL_RB}\n"),
        ),
        // A reply to the reply to the cover: every patch.
        reply(
            "r4@example.org",
            "Carol Tester <carol@example.org>",
            "Re: [master PATCH hello 0/2] Two changes",
            &[cover, "r1@example.org"],
            &format!("> {ADA}\n\nWorks here.\n\n{CAROL}\n"),
        ),
    ];
    let mut all = mails.clone();
    all.extend(replies.iter().cloned());
    append_mbox(p, &all, eol);
    std::fs::write(
        p.join("patchline.toml"),
        format!("[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"hello\"\npath = \"hello.git\"\n{repo_keys}"),
    )
    .unwrap();
    (dir, ids)
}

/// Each commit of `branch` (`master~1`, `master`) against what `git
/// interpret-trailers` makes of the original commit with `trailers`.
fn assert_commits(p: &Path, trailers: &[Vec<String>], what: &str) {
    let repo = p.join("hello.git");
    let src = p.join("src");
    for (i, (ours, theirs)) in [("master~1", "HEAD~1"), ("master", "HEAD")]
        .iter()
        .enumerate()
    {
        let got = git(&repo, &["log", "-1", "--format=%B", ours]);
        let original = git(&src, &["log", "-1", "--format=%B", theirs]);
        let want = interpret_trailers(p, original.trim_end(), &trailers[i]);
        assert_eq!(got.trim_end(), want.trim_end(), "{ours} ({what})");
    }
}

#[test]
fn review_replies_give_their_trailers_and_late_ones_are_reported() {
    for eol in ["\n", "\r\n"] {
        let (dir, ids) = reviewed_series(
            eol,
            "link = \"https://lore.example.org/r/{message_id}\"\nsign_off = true\n",
        );
        let p = dir.path();
        let (cover, p1, p2) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
        let ran = patchline(p, &["run", "--json"]);
        assert_eq!(ran.code(), 0, "{}", ran.describe());
        let repo = p.join("hello.git");
        let link = |id: &str| format!("Link: https://lore.example.org/r/{id}");
        let expected = [
            vec![
                ADA.to_owned(),
                CAROL.to_owned(),
                link(p1),
                COMMITTER.to_owned(),
            ],
            vec![
                BOB.to_owned(),
                ADA.to_owned(),
                CAROL.to_owned(),
                link(p2),
                COMMITTER.to_owned(),
            ],
        ];
        assert_commits(p, &expected, eol);
        let status = patchline(p, &["status", "--json"]).json();
        let outcome = &status["stages"][1]["summary"]["series"][0];
        assert_eq!(outcome["trailers"][0]["index"], 1, "{outcome}");
        assert_eq!(outcome["trailers"][0]["trailers"][0], ADA, "{outcome}");
        assert_eq!(outcome["trailers"][1]["index"], 2, "{outcome}");
        assert_eq!(outcome["trailers"][1]["trailers"][0], BOB, "{outcome}");
        assert_eq!(
            outcome["trailers"][1]["trailers"].as_array().unwrap().len(),
            5,
            "{outcome}"
        );
        let tip = git(&repo, &["rev-parse", "master"]);
        // As if the run died after the plan, before the branch moved: the
        // resumed series has the same commits and says the same trailers.
        let db = rusqlite::Connection::open(p.join("patchline.db")).unwrap();
        db.execute("UPDATE series SET state = 'applying'", [])
            .unwrap();
        git(&repo, &["update-ref", "refs/heads/master", "master~2"]);
        let resumed = patchline(p, &["apply", "--json"]).json();
        assert_eq!(git(&repo, &["rev-parse", "master"]), tip);
        assert_eq!(
            resumed["series"][0]["trailers"], outcome["trailers"],
            "{resumed}"
        );

        // A late Tested-by to patch 1, and a repeated Reviewed-by to the
        // cover (the commits have it: not listed).
        let late = [
            reply(
                "r5@example.org",
                "Dave Late <dave@example.org>",
                "Re: [master PATCH hello 1/2] Shout two",
                &[cover, p1],
                &format!("{DAVE}\n"),
            ),
            reply(
                "r6@example.org",
                "Ada Lovelace <ada@example.org>",
                "Re: [master PATCH hello 0/2] Two changes",
                &[cover],
                &format!("Again: {ADA}\n\n{ADA}\n"),
            ),
        ];
        append_mbox(p, &late, eol);
        let ran = patchline(p, &["run", "--json"]);
        assert_eq!(ran.code(), 0, "{}", ran.describe());
        assert_eq!(git(&repo, &["rev-parse", "master"]), tip, "not rewritten");
        let status = ran.json();
        let late = &status["stages"][1]["summary"]["late_trailers"];
        assert_eq!(late.as_array().unwrap().len(), 1, "{late}");
        assert_eq!(late[0]["trailer"], DAVE, "{late}");
        assert_eq!(late[0]["patches"], serde_json::json!([1]), "{late}");
        let report_file = status["stages"][5]["summary"]["file"]
            .as_str()
            .unwrap_or_default();
        let report = std::fs::read_to_string(report_file)
            .unwrap_or_else(|e| panic!("no report {report_file:?}: {e}\n{status}"));
        assert!(
            report.contains(&format!(
                "arrived after it was applied: {DAVE} on patch 1/2"
            )),
            "{report}"
        );
        // A third run finds nothing new.
        let again = patchline(p, &["run", "--json"]).json();
        assert_eq!(
            again["stages"][1]["summary"]["late_trailers"],
            serde_json::json!([]),
            "{again}"
        );
    }
}

/// `trailers_from_sender_only = false` takes the trailer Eve passed on
/// for Carol; `trailers = false` takes none and looks for no late ones.
#[test]
fn the_sender_check_and_the_trailers_switch_off() {
    for eol in ["\n", "\r\n"] {
        let (dir, _) = reviewed_series(eol, "trailers_from_sender_only = false\n");
        let p = dir.path();
        patchline(p, &["run"]).ok();
        let expected = [
            vec![CAROL_RB.to_owned(), ADA.to_owned(), CAROL.to_owned()],
            vec![BOB.to_owned(), ADA.to_owned(), CAROL.to_owned()],
        ];
        assert_commits(p, &expected, eol);

        let (dir, ids) = reviewed_series(eol, "trailers = false\n");
        let p = dir.path();
        patchline(p, &["run"]).ok();
        assert_commits(p, &[vec![], vec![]], eol);
        let status = patchline(p, &["status", "--json"]).json();
        assert_eq!(
            status["stages"][1]["summary"]["series"][0]["trailers"],
            serde_json::json!([]),
            "{status}"
        );
        append_mbox(
            p,
            &[reply(
                "late@example.org",
                "Dave Late <dave@example.org>",
                "Re: [master PATCH hello 1/2] Shout two",
                &[&ids[0], &ids[1]],
                &format!("{DAVE}\n"),
            )],
            eol,
        );
        let again = patchline(p, &["run", "--json"]).json();
        assert_eq!(
            again["stages"][1]["summary"]["late_trailers"],
            serde_json::json!([]),
            "{again}"
        );
    }
}

/// b4: `$PATCHLINE_B4`, else the virtualenv `scripts/setup.sh` makes.
/// Missing: the test fails in CI (`CI=true`) and when `$PATCHLINE_B4`
/// names it, and is skipped with a note only in a bare `cargo test`
/// elsewhere (as the koji CLI tests do).
fn b4() -> Option<std::path::PathBuf> {
    let named = std::env::var_os("PATCHLINE_B4").map(std::path::PathBuf::from);
    let required = named.is_some();
    let path = named
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/b4-venv/bin/b4"));
    if path.is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci && !required,
        "b4 is missing at {}: run scripts/setup.sh",
        path.display()
    );
    eprintln!(
        "SKIPPED: b4 is missing at {}; run scripts/setup.sh",
        path.display()
    );
    None
}

/// The same mbox through `b4 am` (applied with real `git am`) and through
/// `patchline run`: the same commit messages, trailer for trailer.
#[test]
fn the_commits_carry_what_b4_am_gives() {
    let Some(b4) = b4() else {
        return;
    };
    for eol in ["\n", "\r\n"] {
        let (dir, ids) = reviewed_series(eol, "");
        let p = dir.path();
        patchline(p, &["run"]).ok();
        let ran = crate::util::run_in(
            p,
            &b4,
            &[
                "--offline-mode",
                "am",
                "-m",
                "list.mbox",
                "-o",
                "b4-out",
                "-n",
                "series",
                &ids[0],
            ],
        );
        assert!(ran.output.status.success(), "{}", ran.describe());
        let work = p.join("b4-work");
        git(
            p,
            &[
                "clone",
                "-q",
                p.join("src").to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
        git(
            &work,
            &["am", "-q", p.join("b4-out/series.mbx").to_str().unwrap()],
        );
        for (ours, theirs) in [("master~1", "HEAD~1"), ("master", "HEAD")] {
            assert_eq!(
                git(&p.join("hello.git"), &["log", "-1", "--format=%B", ours]),
                git(&work, &["log", "-1", "--format=%B", theirs]),
                "{ours} ({eol:?})"
            );
        }
    }
}
