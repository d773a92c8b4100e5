//! The apply stage end to end: collect a real `git format-patch` series,
//! apply it to a bare repository, fail cleanly, and resume after a crash
//! between the planned and the done branch move.

use crate::util::{format_series, git, hello_series, patchline};
use std::path::{Path, PathBuf};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn repo(&self) -> PathBuf {
        self.path().join("hello.git")
    }
    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("patchline.db")).unwrap()
    }
    fn tip(&self) -> String {
        git(&self.repo(), &["rev-parse", "master"])
            .trim()
            .to_owned()
    }
}

/// A bare repository `hello.git` (master at "base") and `list.mbox` with a
/// two-patch series made from commits on top of base (`diverge`: the
/// bare master gets a conflicting commit first).
fn site(diverge: bool) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mbox = hello_series(p);
    std::fs::write(
        p.join("list.mbox"),
        mbox.replace("*** SUBJECT HERE ***", "Two changes"),
    )
    .unwrap();
    if diverge {
        let work = p.join("work");
        git(
            p,
            &[
                "clone",
                "-q",
                p.join("hello.git").to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        std::fs::write(work.join("a.txt"), "one\n2\nthree\n").unwrap();
        git(&work, &["commit", "-q", "-am", "diverge"]);
        git(&work, &["push", "-q", "origin", "HEAD:master"]);
    }
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"hello\"\npath = \"hello.git\"\n",
    )
    .unwrap();
    Site { dir }
}

#[test]
fn run_collects_and_applies_then_nothing_twice() {
    let s = site(false);
    let base = s.tip();
    let ran = patchline(s.path(), &["run", "--json"]);
    let status = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let apply = &status["stages"][1];
    assert_eq!(apply["stage"], "apply");
    assert_eq!(apply["state"], "ok");
    assert_eq!(apply["summary"]["series_applied"], 1);
    assert_eq!(apply["summary"]["patches_applied"], 2);
    let tip = s.tip();
    assert_eq!(apply["summary"]["series"][0]["new_tip"], tip.as_str());
    assert_eq!(git(&s.repo(), &["rev-parse", "master~2"]).trim(), base);
    assert_eq!(
        git(&s.repo(), &["log", "-1", "--format=%s", "master"]).trim(),
        "Add bee"
    );
    // No targets configured: the build stage says so instead of nothing.
    let not_built = &status["stages"][2]["summary"]["not_built"][0];
    assert!(
        not_built
            .as_str()
            .unwrap()
            .contains("hello/master: no build targets"),
        "{not_built}"
    );
    // Another run: the series is applied already; nothing moves.
    let again = patchline(s.path(), &["run", "--json"]).json();
    assert_eq!(again["stages"][1]["summary"]["series_applied"], 0);
    assert_eq!(s.tip(), tip);
}

#[test]
fn a_series_that_does_not_apply_fails_the_stage_and_leaves_the_branch() {
    let s = site(true);
    let before = s.tip();
    let ran = patchline(s.path(), &["run"]).fails_with(1);
    assert!(
        ran.stdout()
            .contains("[failed] Two changes -> hello/master"),
        "{}",
        ran.describe()
    );
    assert_eq!(s.tip(), before);
    let status = patchline(s.path(), &["status", "--json"]).json();
    let apply = &status["stages"][1];
    assert_eq!(apply["state"], "failed");
    let series = &apply["summary"]["series"][0];
    assert_eq!(series["error"]["path"], "a.txt");
    assert_eq!(series["error"]["hunk"], "@@ -1,3 +1,3 @@");
    assert!(
        series["failed_patch"]
            .as_str()
            .unwrap()
            .ends_with("0001-shout-two.patch"),
        "{series}"
    );
    let state: String = s
        .db()
        .query_row("SELECT state FROM series", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "failed");
}

#[test]
fn an_interrupted_branch_move_is_finished_once_on_resume() {
    let s = site(false);
    let base = s.tip();
    patchline(s.path(), &["run"]).ok();
    let tip = s.tip();
    // As if the run died after writing the plan but before moving the
    // branch: state `applying`, branch back at the old tip.
    s.db()
        .execute("UPDATE series SET state = 'applying'", [])
        .unwrap();
    git(&s.repo(), &["update-ref", "refs/heads/master", &base]);
    let ran = patchline(s.path(), &["apply", "--json"]);
    let summary = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    assert_eq!(summary["series_applied"], 1);
    assert_eq!(s.tip(), tip, "the planned commits, not new ones");
    // As if it died after moving the branch but before recording it.
    s.db()
        .execute("UPDATE series SET state = 'applying'", [])
        .unwrap();
    patchline(s.path(), &["apply"]).ok();
    assert_eq!(s.tip(), tip, "nothing applied twice");
    // Someone else moved the branch meanwhile: fail, do not touch it.
    s.db()
        .execute("UPDATE series SET state = 'applying'", [])
        .unwrap();
    git(
        &s.repo(),
        &["update-ref", "refs/heads/master", &format!("{tip}~1")],
    );
    let moved = s.tip();
    let ran = patchline(s.path(), &["apply"]).fails_with(1);
    assert!(ran.stdout().contains("moved"), "{}", ran.describe());
    assert_eq!(s.tip(), moved);
}

#[test]
fn a_url_repository_is_cloned_and_a_missing_branch_made_from_its_base() {
    let s = site(false);
    let p = s.path();
    let mbox = std::fs::read_to_string(p.join("list.mbox"))
        .unwrap()
        .replace("[master PATCH hello", "[next PATCH hello");
    std::fs::write(p.join("list.mbox"), mbox).unwrap();
    let url = format!("file://{}", s.repo().display());
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"hello\"\nurl = \"{url}\"\nbranches = [\"master\", \"next\"]\nbase_branch = \"master\"\n\n[state]\ndb = \"state/patchline.db\"\n"
        ),
    )
    .unwrap();
    let ran = patchline(p, &["run", "--json"]);
    let status = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    assert_eq!(status["stages"][1]["summary"]["series_applied"], 1);
    let clone = p.join("state/repos/hello.git");
    assert_eq!(
        git(&clone, &["rev-parse", "next~2"]).trim(),
        git(&clone, &["rev-parse", "master"]).trim(),
        "next was made from master, then the two patches applied"
    );
    assert_eq!(
        git(&clone, &["log", "-1", "--format=%s", "next"]).trim(),
        "Add bee"
    );
}

#[test]
fn a_dry_run_applies_but_publishes_nothing_and_repos_are_checked() {
    let s = site(false);
    let ran = patchline(s.path(), &["run", "--dry-run", "--repo", "hello", "--json"]);
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let status = ran.json();
    let state = |stage: &str| {
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .map(|s| s["state"].clone())
    };
    assert_eq!(state("apply").unwrap(), "ok", "{status}");
    assert_eq!(state("publish").unwrap(), "skipped", "{status}");
    assert_eq!(
        status["run"]["state"], "ok",
        "a skipped publish is not a failure"
    );
    let ran = patchline(s.path(), &["run", "--repo", "nope"]).fails_with(2);
    assert!(
        ran.stderr()
            .contains("\"nope\" is not a configured repository"),
        "{}",
        ran.describe()
    );
}

/// The series of `site` again as `git format-patch -v2` ("Add bee" now adds
/// "bees"), in a new thread with the same cover subject.
fn reroll(s: &Site) -> String {
    let src = s.path().join("src");
    git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(src.join("b.txt"), "bees\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "Add bee"]);
    format_series(&src, &["-v2"])
        .replace("*** SUBJECT HERE ***", "Two changes")
        // git makes Message-IDs from the commit and the second it runs in: v1's
        // unchanged first patch, made in the same second, would get v1's id.
        .replace(".git.", ".v2.git.")
}

fn append(s: &Site, mails: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path().join("list.mbox"))
        .unwrap();
    f.write_all(mails.as_bytes()).unwrap();
}

/// `(key, version, state)` of every stored series, by key.
fn series_states(s: &Site) -> Vec<(String, u32, String)> {
    let db = s.db();
    let mut stmt = db
        .prepare("SELECT key, version, state FROM series ORDER BY key")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_superseded_version_is_never_applied_in_later_runs() {
    let s = site(false);
    let base = s.tip();
    append(&s, &reroll(&s));
    let mut tip = None;
    for round in 1..=3 {
        let ran = patchline(s.path(), &["run", "--json"]);
        assert_eq!(ran.code(), 0, "round {round}: {}", ran.describe());
        let status = ran.json();
        let apply = &status["stages"][1]["summary"];
        assert_eq!(apply["series_failed"], 0, "round {round}: {apply}");
        let applied: Vec<u64> = apply["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["version"].as_u64())
            .collect();
        assert!(
            applied.iter().all(|v| *v == 2),
            "round {round}: only v2 may be applied: {apply}"
        );
        let states = series_states(&s);
        let v1: Vec<_> = states.iter().filter(|r| r.1 == 1).collect();
        let v2: Vec<_> = states.iter().filter(|r| r.1 == 2).collect();
        assert_eq!(v1.len(), 1, "round {round}: {states:?}");
        assert_eq!(v1[0].2, "superseded", "round {round}: {states:?}");
        assert_eq!(v2.len(), 1, "round {round}: {states:?}");
        assert_eq!(v2[0].2, "applied", "round {round}: {states:?}");
        let now = s.tip();
        assert_eq!(
            git(&s.repo(), &["rev-parse", "master~2"]).trim(),
            base,
            "round {round}: exactly v2's two patches on the base"
        );
        assert_eq!(
            git(&s.repo(), &["show", "master:b.txt"]).trim(),
            "bees",
            "round {round}"
        );
        if let Some(before) = &tip {
            assert_eq!(&now, before, "round {round}: nothing applied again");
        }
        tip = Some(now);
        let failures: i64 = s
            .db()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE CAST(raw AS TEXT) LIKE '%rebase%' OR subject LIKE '%fail%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(failures, 0, "round {round}: no failure report");
        // The mailbox grows between runs: a reply in v1's thread.
        let v1_cover = std::fs::read_to_string(s.path().join("list.mbox"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Message-ID: ")
                    .or(l.strip_prefix("Message-Id: "))
            })
            .unwrap()
            .to_owned();
        append(
            &s,
            &format!(
                "From mboxrd@z Thu Jan  1 00:00:00 1970\nMessage-ID: <reply-{round}@example.org>\nIn-Reply-To: {v1_cover}\nReferences: {v1_cover}\nFrom: Reviewer <rev@example.org>\nSubject: Re: [master PATCH hello 0/2] Two changes\nDate: Mon, 1 Dec 2026 10:00:0{round} +0000\n\nLooks good.\n\n"
            ),
        );
    }
}

#[test]
fn late_mails_of_an_applied_series_are_never_applied_on_their_own() {
    let s = site(false);
    patchline(s.path(), &["run"]).ok();
    let tip = s.tip();
    let mbox = std::fs::read_to_string(s.path().join("list.mbox")).unwrap();
    // A late correction of patch 2/2, in the applied series' thread.
    let second = mbox
        .match_indices("\nFrom ")
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    let late = mbox[second..]
        .replacen("Message-ID: <", "Message-ID: <late-", 1)
        .replace("+bee", "+bees");
    append(&s, &late);
    // The whole series sent again, in a new thread.
    append(&s, &mbox.replace(".git.", ".again.git."));
    for round in 1..=2 {
        let ran = patchline(s.path(), &["run", "--json"]);
        assert_eq!(ran.code(), 0, "round {round}: {}", ran.describe());
        let apply = &ran.json()["stages"][1]["summary"];
        assert_eq!(apply["series_applied"], 0, "round {round}: {apply}");
        assert_eq!(apply["series_failed"], 0, "round {round}: {apply}");
        assert_eq!(s.tip(), tip);
    }
    let states = series_states(&s);
    let applied = states.iter().filter(|r| r.2 == "applied").count();
    let superseded = states.iter().filter(|r| r.2 == "superseded").count();
    assert_eq!((applied, superseded, states.len()), (1, 2, 3), "{states:?}");
}
