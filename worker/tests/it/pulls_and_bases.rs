//! What reviewers and maintainers send besides plain series, end to end
//! through `patchline collect` + `apply`: a series that only applies from
//! its `base-commit:`, a series waiting for the series it is `Based-on:`,
//! and `[GIT PULL]` requests (real `git request-pull` text, a real `git
//! daemon` on loopback): landed by fast-forward and by merge with the
//! same commit ids, refused when the branch moved, when the URL is not
//! allowed and (ff-only) when it cannot fast-forward.

use crate::util::{git, patchline};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// `git daemon` serving every repository under `base` on 127.0.0.1.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `git-daemon` itself, not `git daemon`: killing the `git` wrapper
        // would leave the daemon running, orphaned, holding the test's
        // output pipes open.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon runs");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed().as_secs() < 20, "git daemon never listened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn append(p: &Path, mails: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p.join("list.mbox"))
        .unwrap()
        .write_all(mails.as_bytes())
        .unwrap();
}

/// A request mail in mbox form around real `git request-pull` output.
fn request_mail(id: &str, subject: &str, request: &str) -> String {
    format!(
        "From maintainer@example.org Mon Nov 30 10:00:00 2026\nFrom: Mia Maintainer <mia@example.org>\nTo: dev@lists.example.org\nSubject: {subject}\nDate: Mon, 30 Nov 2026 10:00:00 +0000\nMessage-ID: <{id}>\n\nHi,\n\nplease pull.\n\n{request}\n"
    )
}

fn apply(p: &Path) -> serde_json::Value {
    let ran = patchline(p, &["collect", "--json"]);
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let ran = patchline(p, &["apply", "--json"]);
    assert!(ran.code() == 0 || ran.code() == 1, "{}", ran.describe());
    ran.json()
}

fn site(extra_repo: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_owned();
    let src = p.join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    let lines: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    commit(&src, "f.txt", &lines, "base");
    git(
        &p,
        &["clone", "-q", "--bare", src.to_str().unwrap(), "hello.git"],
    );
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"hello\"\npath = \"hello.git\"\n{extra_repo}\n"
        ),
    )
    .unwrap();
    std::fs::write(p.join("list.mbox"), "").unwrap();
    (dir, src)
}

/// Someone pushes to the site's `hello.git` master (through a clone in
/// `p/<clone>`): `file` becomes `content`. Returns the new tip.
fn push_to_master(p: &Path, clone: &str, file: &str, content: &str, message: &str) -> String {
    let work = p.join(clone);
    git(
        p,
        &[
            "clone",
            "-q",
            p.join("hello.git").to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let tip = commit(&work, file, content, message);
    git(&work, &["push", "-q", "origin", "HEAD:master"]);
    tip
}

fn tip(p: &Path) -> String {
    git(&p.join("hello.git"), &["rev-parse", "master"])
        .trim()
        .to_owned()
}

/// A series made on an older commit whose context the branch changed
/// since: not on the tip, but from its base (the report says so); a
/// series `Based-on:` another waits for it and applies after it in the
/// same run.
#[test]
fn a_series_applies_from_its_base_commit_and_after_the_series_it_is_based_on() {
    let (dir, src) = site("");
    let p = dir.path();
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    let lines = std::fs::read_to_string(src.join("f.txt")).unwrap();
    // The series, made on `base`: line 10, then line 25.
    git(&src, &["checkout", "-q", "-b", "topic"]);
    commit(
        &src,
        "f.txt",
        &lines.replace("line 10\n", "line ten\n"),
        "Ten",
    );
    let now = std::fs::read_to_string(src.join("f.txt")).unwrap();
    commit(
        &src,
        "f.txt",
        &now.replace("line 25\n", "line twenty-five\n"),
        "Twenty-five",
    );
    let series = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--cover-letter",
            "--thread=shallow",
            "--base",
            &base,
            "--subject-prefix=PATCH",
            "HEAD~2",
        ],
    );
    let series = series.replace("*** SUBJECT HERE ***", "Numbers in words");
    assert!(series.contains(&format!("base-commit: {base}")));
    // A second series, based on the first (Patchew's `Based-on:`), adds a
    // file; it arrives first.
    git(&src, &["checkout", "-q", "-b", "second"]);
    commit(&src, "g.txt", "g\n", "Add g");
    let cover_id = series
        .lines()
        .find(|l| l.starts_with("Message-ID: <cover."))
        .map(|l| l.trim_start_matches("Message-ID: ").to_owned())
        .unwrap();
    let second = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--cover-letter",
            "--thread=shallow",
            "--subject-prefix=PATCH",
            "-1",
        ],
    )
    .replace("*** SUBJECT HERE ***", "Add g")
    // Its own Message-IDs, not the first series'.
    .replace("@example.org>", ".second@example.org>")
    .replace(
        "*** BLURB HERE ***",
        &format!("Needs the numbers series.\n\nBased-on: {cover_id}"),
    );
    // The branch moved on: line 8 (context of the first patch) changed.
    let moved = push_to_master(
        p,
        "work",
        "f.txt",
        &lines.replace("line 8\n", "changed on master\n"),
        "Change line 8",
    );
    append(p, &second);
    append(p, &series);

    let summary = apply(p);
    assert_eq!(summary["series_applied"], 2, "{summary:#}");
    let outcomes = summary["series"].as_array().unwrap();
    let numbers = outcomes
        .iter()
        .find(|s| s["title"] == "Numbers in words")
        .unwrap();
    assert_eq!(numbers["base_commit"], base.as_str(), "{numbers:#}");
    assert_eq!(numbers["applied_from"], base.as_str(), "{numbers:#}");
    let g = outcomes.iter().find(|s| s["title"] == "Add g").unwrap();
    assert_eq!(g["based_on"][0], cover_id.trim_matches(['<', '>']), "{g:#}");
    assert_eq!(g["state"], "applied", "{g:#}");
    // On the moved master, in order: the numbers, then g.
    let log = git(
        &p.join("hello.git"),
        &["log", "--format=%s", &format!("{moved}..master")],
    );
    assert_eq!(log, "Add g\nTwenty-five\nTen\n");
    let f = git(&p.join("hello.git"), &["show", "master:f.txt"]);
    assert!(
        f.contains("changed on master") && f.contains("line ten") && f.contains("line twenty-five"),
        "{f}"
    );
    git(&p.join("hello.git"), &["fsck", "--strict"]);
}

/// Real `git request-pull` output for branches of a contributor's
/// repository served by `git daemon`.
#[test]
fn pull_requests_land_with_their_commit_ids_or_are_refused_changing_nothing() {
    let served = tempfile::tempdir().unwrap();
    let daemon = GitDaemon::start(served.path());
    let url = daemon.url("contrib.git");
    let (dir, src) = site(&format!(
        "pull_urls = [\"git://127.0.0.1:{}/\"]",
        daemon.port
    ));
    let p = dir.path();
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    let lines = std::fs::read_to_string(src.join("f.txt")).unwrap();
    // The contributor's branches: `feature` (lands) and `fixes` (moves
    // after its request was sent).
    git(&src, &["checkout", "-q", "-b", "feature"]);
    commit(
        &src,
        "f.txt",
        &lines.replace("line 3\n", "line three\n"),
        "Three",
    );
    let feature_tip = commit(&src, "h.txt", "h\n", "Add h");
    git(&src, &["checkout", "-q", "-b", "fixes", &base]);
    let fixes_tip = commit(&src, "i.txt", "i\n", "Add i");
    let contrib = served.path().join("contrib.git");
    git(
        served.path(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            contrib.to_str().unwrap(),
        ],
    );
    // `git request-pull` checks the URL has the commits: run it where the
    // daemon serves them.
    let request = |start: &str, branch: &str| git(&src, &["request-pull", start, &url, branch]);
    let feature_request = request(&base, "feature");
    assert!(feature_request.contains(&format!("for you to fetch changes up to {feature_tip}")));
    let fixes_request = request(&base, "fixes");
    // After sending it, the contributor adds to `fixes`.
    git(&src, &["checkout", "-q", "fixes"]);
    commit(&src, "j.txt", "j\n", "Add j");
    git(
        &src,
        &["push", "-q", "--force", contrib.to_str().unwrap(), "fixes"],
    );
    let elsewhere = feature_request.replace(&url, "https://git.evil.example/contrib.git");

    // master moved on meanwhile: the feature lands as a merge commit.
    let moved = push_to_master(
        p,
        "work",
        "f.txt",
        &lines.replace("line 28\n", "line 28!\n"),
        "Shout 28",
    );
    append(
        p,
        &request_mail(
            "pull-1@example.org",
            "[GIT PULL] Feature h",
            &feature_request,
        ),
    );
    append(
        p,
        &request_mail("pull-2@example.org", "[GIT PULL] Fix i", &fixes_request),
    );
    append(
        p,
        &request_mail("pull-3@example.org", "[PULL] From elsewhere", &elsewhere),
    );

    let summary = apply(p);
    assert_eq!(summary["pulls_landed"], 1, "{summary:#}");
    assert_eq!(summary["pulls_refused"], 2, "{summary:#}");
    let pulls = summary["pulls"].as_array().unwrap();
    let feature = &pulls[0];
    assert_eq!(feature["state"], "landed", "{feature:#}");
    assert_eq!(feature["landed"], "merge", "{feature:#}");
    assert_eq!(feature["up_to"], feature_tip.as_str());
    let repo = p.join("hello.git");
    let merge = tip(p);
    assert_eq!(feature["merge_commit"], merge.as_str());
    assert_eq!(git(&repo, &["rev-parse", "master^1"]).trim(), moved);
    assert_eq!(
        git(&repo, &["rev-parse", "master^2"]).trim(),
        feature_tip,
        "same ids"
    );
    let message = git(&repo, &["log", "-1", "--format=%s", "master"]);
    assert_eq!(message.trim(), format!("Merge branch 'feature' of {url}"));
    let fixes = &pulls[1];
    assert_eq!(fixes["state"], "refused", "{fixes:#}");
    let why = fixes["error"].as_str().unwrap();
    assert!(
        why.contains("moved since the request was sent") && why.contains(&fixes_tip),
        "{why}"
    );
    let evil = &pulls[2];
    let why = evil["error"].as_str().unwrap();
    assert!(
        why.contains("not allowed") && why.contains("nothing was fetched"),
        "{why}"
    );
    git(&repo, &["fsck", "--strict"]);
    // Nothing is taken twice: a second run leaves master where it is.
    let again = apply(p);
    assert_eq!(again["pulls"].as_array().unwrap().len(), 0, "{again:#}");
    assert_eq!(tip(p), merge);

    // A fresh request for the moved `fixes`, to an ff-only repository
    // that cannot fast-forward: refused, named; master unchanged.
    let ff_only =
        std::fs::read_to_string(p.join("patchline.toml")).unwrap() + "pull = \"ff-only\"\n";
    std::fs::write(p.join("patchline.toml"), ff_only).unwrap();
    append(
        p,
        &request_mail(
            "pull-4@example.org",
            "[GIT PULL] Fix i and j",
            &request(&base, "fixes"),
        ),
    );
    let third = apply(p);
    let why = third["pulls"][0]["error"].as_str().unwrap();
    assert!(why.contains("fast-forward only"), "{why}");
    assert_eq!(tip(p), merge);
}

/// A reply in the thread of `parent` (its `References` are `refs`).
fn reply(id: &str, from: &str, subject: &str, refs: &[&str], body: &str) -> String {
    let parent = refs.last().unwrap();
    let references: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
    format!(
        "From reply@example.org Mon Nov 30 11:00:00 2026\nFrom: {from}\nTo: dev@lists.example.org\nSubject: {subject}\nDate: Mon, 30 Nov 2026 11:00:00 +0000\nMessage-ID: <{id}>\nIn-Reply-To: <{parent}>\nReferences: {}\n\n{body}\n",
        references.join(" ")
    )
}

fn message_ids(mbox: &str) -> Vec<String> {
    mbox.lines()
        .filter_map(|l| {
            l.strip_prefix("Message-ID: <")
                .or(l.strip_prefix("Message-Id: <"))
        })
        .map(|l| l.trim_end_matches('>').to_owned())
        .collect()
}

/// A maintainer's day through `patchline run`: a reviewed series (a
/// Reviewed-by to the cover, an Acked-by to patch 2 quoting the patch, a
/// reply by someone else naming a third person), a series that only
/// applies from its `base-commit:`, a series that fails, a pull request
/// that lands and one whose branch moved. The commits, the trailers, the
/// stage summary and the replies in each thread say what happened.
#[test]
fn a_maintainers_day_of_reviews_bases_failures_and_pull_requests() {
    let served = tempfile::tempdir().unwrap();
    let daemon = GitDaemon::start(served.path());
    let url = daemon.url("contrib.git");
    let (dir, src) = site(&format!(
        "pull_urls = [\"git://127.0.0.1:{}/\"]",
        daemon.port
    ));
    let p = dir.path();
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    let lines = std::fs::read_to_string(src.join("f.txt")).unwrap();
    let format = |range: &str, subject: &str, extra: &[&str]| {
        let mut args = vec![
            "format-patch",
            "--stdout",
            "--thread=shallow",
            "--subject-prefix=PATCH",
        ];
        args.extend_from_slice(extra);
        args.push(range);
        git(&src, &args).replace("*** SUBJECT HERE ***", subject)
    };

    // The reviewed series: two new files.
    git(&src, &["checkout", "-q", "-b", "reviewed", &base]);
    commit(&src, "a.txt", "a\n", "Add a");
    commit(&src, "b.txt", "b\n", "Add b");
    let reviewed = format("HEAD~2", "Letters", &["--cover-letter"]);
    let ids = message_ids(&reviewed);
    let (cover, second) = (ids[0].clone(), ids[2].clone());
    let replies = [
        reply(
            "r1@example.org",
            "Rita Reviewer <rita@example.org>",
            "Re: [PATCH 0/2] Letters",
            &[&cover],
            "Looks good.\n\nReviewed-by: Rita Reviewer <rita@example.org>",
        ),
        reply(
            "r2@example.org",
            "Bob Builder <bob@example.org>",
            "Re: [PATCH 2/2] Add b",
            &[&cover, &second],
            "> Signed-off-by: Someone <s@example.org>\n\nAcked-by: Bob Builder <bob@example.org>",
        ),
        reply(
            "r3@example.org",
            "Eve <eve@example.org>",
            "Re: [PATCH 0/2] Letters",
            &[&cover],
            "Carl said it is fine.\n\nReviewed-by: Carl <carl@example.org>",
        ),
    ];
    // The series made on the base, whose context master changes.
    git(&src, &["checkout", "-q", "-b", "based", &base]);
    commit(
        &src,
        "f.txt",
        &lines.replace("line 10\n", "line ten\n"),
        "Ten in words",
    );
    let based =
        format("-1", "", &["--base", &base]).replace("@example.org>", ".based@example.org>");
    // The failing one: its context is nowhere on master.
    git(&src, &["checkout", "-q", "-b", "broken", &base]);
    commit(
        &src,
        "f.txt",
        &lines.replace("line 20\n", "line XX\n"),
        "Prepare",
    );
    commit(
        &src,
        "f.txt",
        &lines.replace("line 20\n", "line twenty\n"),
        "Twenty in words",
    );
    let broken = format("-1", "", &[]).replace("@example.org>", ".broken@example.org>");
    // The pull requests.
    git(&src, &["checkout", "-q", "-b", "feature", &base]);
    let feature_tip = commit(&src, "h.txt", "h\n", "Add h");
    git(&src, &["checkout", "-q", "-b", "fixes", &base]);
    commit(&src, "i.txt", "i\n", "Add i");
    let contrib = served.path().join("contrib.git");
    git(
        served.path(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            contrib.to_str().unwrap(),
        ],
    );
    let feature_request = git(&src, &["request-pull", &base, &url, "feature"]);
    let fixes_request = git(&src, &["request-pull", &base, &url, "fixes"]);
    commit(&src, "j.txt", "j\n", "Add j");
    git(
        &src,
        &["push", "-q", "--force", contrib.to_str().unwrap(), "fixes"],
    );

    // master moves on: line 8.
    let moved = push_to_master(
        p,
        "work-clone",
        "f.txt",
        &lines.replace("line 8\n", "changed on master\n"),
        "Change line 8",
    );

    append(p, &reviewed);
    for r in &replies {
        append(p, r);
    }
    append(p, &based);
    append(p, &broken);
    append(
        p,
        &request_mail(
            "pull-a@example.org",
            "[GIT PULL] Feature h",
            &feature_request,
        ),
    );
    append(
        p,
        &request_mail("pull-b@example.org", "[GIT PULL] Fix i", &fixes_request),
    );

    let ran = patchline(p, &["run"]);
    assert_eq!(
        ran.code(),
        1,
        "a series failed and a pull was refused\n{}",
        ran.describe()
    );
    let status = patchline(p, &["status", "--json"]).json();
    let apply = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "apply")
        .unwrap()["summary"]
        .clone();
    assert_eq!(apply["series_applied"], 2, "{apply:#}");
    assert_eq!(apply["series_failed"], 1, "{apply:#}");
    assert_eq!(
        (
            apply["pulls_landed"].as_u64(),
            apply["pulls_refused"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let series = apply["series"].as_array().unwrap();
    let by_title = |t: &str| {
        series
            .iter()
            .find(|s| s["title"] == t)
            .unwrap_or_else(|| panic!("{t}: {apply:#}"))
    };
    assert_eq!(by_title("Ten in words")["applied_from"], base.as_str());
    assert_eq!(by_title("Twenty in words")["state"], "failed");

    // The commits: the reviewed ones with exactly the trailers of their
    // senders, the based one merged onto the moved master, then the pull.
    let repo = p.join("hello.git");
    assert_eq!(
        git(&repo, &["rev-parse", "master^2"]).trim(),
        feature_tip,
        "the pull's commit, same id"
    );
    let first_parent = git(
        &repo,
        &[
            "log",
            "--first-parent",
            "--format=%s",
            &format!("{moved}..master"),
        ],
    );
    assert_eq!(
        first_parent,
        format!("Merge branch 'feature' of {url}\nTen in words\nAdd b\nAdd a\n")
    );
    let body = |rev: &str| git(&repo, &["log", "-1", "--format=%B", rev]);
    let add_a = body("master^1~2");
    let add_b = body("master^1~1");
    assert!(
        add_a.contains("Reviewed-by: Rita Reviewer <rita@example.org>"),
        "{add_a}"
    );
    assert!(
        !add_a.contains("Acked-by") && !add_a.contains("Carl"),
        "{add_a}"
    );
    assert!(
        add_b.contains("Reviewed-by: Rita Reviewer <rita@example.org>")
            && add_b.contains("Acked-by: Bob Builder <bob@example.org>")
            && !add_b.contains("Carl")
            && !add_b.contains("Someone"),
        "{add_b}"
    );
    git(&repo, &["fsck", "--strict"]);

    // The replies, each in its series' thread.
    let report = std::fs::read_to_string(p.join("work/run-1/report.txt")).unwrap();
    assert!(
        report.contains("Subject: Re: [PATCH 0/2] Letters"),
        "{report}"
    );
    assert!(
        report.contains("patchline applied the series \"Letters\""),
        "{report}"
    );
    assert!(
        report.contains("+ Acked-by: Bob Builder <bob@example.org>"),
        "{report}"
    );
    assert!(report.contains("applied from its base commit"), "{report}");
    assert!(
        report.contains("patchline could not apply the series \"Twenty in words\""),
        "{report}"
    );
    assert!(
        report.contains("Rebase the series on the current hello/master and send it again as v2"),
        "{report}"
    );
    assert!(
        report.contains("pull request \"[GIT PULL] Fix i\""),
        "{report}"
    );
    assert!(
        report.contains("moved since the request was sent"),
        "{report}"
    );
    assert!(report.contains("\"[GIT PULL] Feature h\""), "{report}");
}

/// A QEMU-style pull request: a `[PULL 0/2]` cover and its `[PULL n/2]`
/// patches. With `git request-pull` text in the cover it lands as the
/// pull (same commit ids; the patches are not applied again); without,
/// its patches are applied as a series.
#[test]
fn a_qemu_style_pull_lands_as_the_pull_with_a_url_else_as_a_series() {
    for with_url in [true, false] {
        let served = tempfile::tempdir().unwrap();
        let daemon = GitDaemon::start(served.path());
        let url = daemon.url("contrib.git");
        let (dir, src) = site(&format!(
            "pull_urls = [\"git://127.0.0.1:{}/\"]",
            daemon.port
        ));
        let p = dir.path();
        let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
        git(&src, &["checkout", "-q", "-b", "staging"]);
        commit(&src, "k.txt", "k\n", "Add k");
        let staged = commit(&src, "l.txt", "l\n", "Add l");
        let contrib = served.path().join("contrib.git");
        git(
            served.path(),
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                contrib.to_str().unwrap(),
            ],
        );
        let blurb = match with_url {
            true => git(&src, &["request-pull", &base, &url, "staging"]),
            false => "Two letters for the next release.".to_owned(),
        };
        let mails = git(
            &src,
            &[
                "format-patch",
                "--stdout",
                "--cover-letter",
                "--thread=shallow",
                "--subject-prefix=PULL",
                "HEAD~2",
            ],
        )
        .replace("*** SUBJECT HERE ***", "Staging queue")
        .replace("*** BLURB HERE ***", &blurb);
        append(p, &mails);
        let summary = apply(p);
        let what = format!("with URL {with_url}: {summary:#}");
        let log = git(
            &p.join("hello.git"),
            &["log", "--format=%s", &format!("{base}..master")],
        );
        assert_eq!(log, "Add l\nAdd k\n", "{what}");
        if with_url {
            assert_eq!(tip(p), staged, "the pull's own commits: {what}");
            assert_eq!(summary["pulls_landed"], 1, "{what}");
            assert_eq!(summary["series"][0]["state"], "superseded", "{what}");
            assert_eq!(summary["series_applied"], 0, "{what}");
        } else {
            assert_ne!(tip(p), staged, "applied as patches, new commits: {what}");
            assert_eq!(summary["series_applied"], 1, "{what}");
            assert_eq!(summary["pulls"][0]["state"], "as-series", "{what}");
            assert_eq!(summary["pulls_refused"], 0, "{what}");
        }
    }
}
