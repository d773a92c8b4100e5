//! `patchline collect`, `parse` and `status` end to end on mbox and Maildir
//! sources, with the real binary and real git.

use crate::util::{MailSpec, diff_body, git, mail, mbox, patchline, run_in};
use std::path::{Path, PathBuf};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A config reading `Maildir` with `extra` appended to `[intake]`.
    fn maildir(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join("Maildir").join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("patchline.toml"),
            format!("[intake]\nsource = \"maildir\"\npath = \"Maildir\"\n{extra}\n"),
        )
        .unwrap();
        Site { dir }
    }

    /// Delivers each mail as a file of `Maildir/new`, in order.
    fn write_maildir(&self, mails: &[String]) {
        for (n, text) in mails.iter().enumerate() {
            let name = format!("17000000{n:02}.M{n}P1.host");
            std::fs::write(self.path().join("Maildir/new").join(name), text).unwrap();
        }
    }

    /// A config reading `list.mbox` with `extra` appended to `[intake]`.
    fn mbox(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("list.mbox"), "").unwrap();
        std::fs::write(
            dir.path().join("patchline.toml"),
            format!("[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\n{extra}\n"),
        )
        .unwrap();
        Site { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_mbox(&self, mails: &[String]) {
        std::fs::write(self.path().join("list.mbox"), mbox(mails)).unwrap();
    }

    fn append_mbox(&self, mails: &[String]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path().join("list.mbox"))
            .unwrap();
        f.write_all(mbox(mails).as_bytes()).unwrap();
    }

    fn collect(&self) -> serde_json::Value {
        let ran = patchline(self.path(), &["collect", "--json"]);
        let value = ran.json();
        assert_eq!(ran.code(), 0, "{}", ran.describe());
        value
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("patchline.db")).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn patch(id: &str, subject: &str, irt: Option<&str>, file: &str) -> String {
    mail(&MailSpec {
        message_id: id,
        subject,
        from: "Ada Contributor <ada@example.org>",
        in_reply_to: irt,
        body: &diff_body(file, "new line"),
    })
}

fn cover(id: &str, subject: &str) -> String {
    mail(&MailSpec {
        message_id: id,
        subject,
        from: "Ada Contributor <ada@example.org>",
        in_reply_to: None,
        body: "This series does things.\n\nAda Contributor (2):\n  a\n  b\n",
    })
}

#[test]
fn series_arriving_across_runs_is_assembled_once_and_archived() {
    let site = Site::mbox("");
    site.write_mbox(&[
        cover("c@x", "[PATCH 0/2] Two fixes"),
        patch("p2@x", "[PATCH 2/2] Second fix", Some("c@x"), "b.c"),
        mail(&MailSpec {
            message_id: "chat@x",
            subject: "Lunch?",
            from: "Bob <bob@example.org>",
            in_reply_to: None,
            body: "Anyone?\n",
        }),
    ]);
    let first = site.collect();
    assert_eq!(first["mails"], 3);
    assert_eq!(first["patches"], 1);
    assert_eq!(first["ignored"], 1);
    assert_eq!(first["series_complete"], 0);
    assert_eq!(first["series_incomplete"], 1);
    assert_eq!(first["series"][0]["missing"], serde_json::json!([1]));

    // Nothing new: nothing counted again.
    let again = site.collect();
    assert_eq!(again["run"], first["run"].as_i64().unwrap() + 1);
    assert_eq!(again["mails"], 0);
    assert_eq!(site.count("SELECT COUNT(*) FROM mails"), 3);

    // The missing patch arrives in a later run: same series, now complete.
    site.append_mbox(&[patch("p1@x", "[PATCH 1/2] First fix", Some("c@x"), "a.c")]);
    let third = site.collect();
    assert_eq!(third["mails"], 1);
    assert_eq!(third["series_complete"], 1);
    assert_eq!(third["series_incomplete"], 0);
    assert_eq!(site.count("SELECT COUNT(*) FROM series"), 1);
    assert_eq!(site.count("SELECT COUNT(*) FROM patches"), 3);
    let key: String = site
        .db()
        .query_row("SELECT key FROM series", [], |r| r.get(0))
        .unwrap();
    assert_eq!(key, first["series"][0]["key"].as_str().unwrap());

    // Archive: every mail raw, patches filed by series with .patch + .eml.
    let dir = third["series"][0]["archive_dir"].as_str().unwrap();
    let series_dir = site.path().join("archive").join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&series_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0000-cover-letter.eml",
            "0000-cover-letter.patch",
            "0001-first-fix.eml",
            "0001-first-fix.patch",
            "0002-second-fix.eml",
            "0002-second-fix.patch"
        ]
    );
    let raw_count: usize = walk(&site.path().join("archive"))
        .iter()
        .filter(|p| p.parent().unwrap().ends_with("raw"))
        .count();
    assert_eq!(raw_count, 4, "every mail, patch or not, is archived raw");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn archived_patches_apply_with_git_am() {
    // A real repository and real `git format-patch` output.
    let site = Site::mbox("");
    let repo = site.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    git(&repo, &["add", "a.txt"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    git(&repo, &["checkout", "-q", "-b", "topic"]);
    for (i, line) in ["two", "From the start of a line", "three"]
        .iter()
        .enumerate()
    {
        let mut text = std::fs::read_to_string(repo.join("a.txt")).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(repo.join("a.txt"), text).unwrap();
        git(
            &repo,
            &[
                "commit",
                "-q",
                "-am",
                &format!("Add line {i}"),
                "-m",
                "From here on the body mentions From lines.",
            ],
        );
    }
    let mbox = git(
        &repo,
        &[
            "format-patch",
            "--stdout",
            "--cover-letter",
            "--thread=shallow",
            "--pretty=mboxrd",
            "master..topic",
        ],
    );
    std::fs::write(site.path().join("list.mbox"), mbox).unwrap();
    let summary = site.collect();
    assert_eq!(summary["patches"], 3, "{summary}");
    assert_eq!(summary["series_complete"], 1, "{summary}");

    let dir = site
        .path()
        .join("archive")
        .join(summary["series"][0]["archive_dir"].as_str().unwrap());
    let mut patches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "patch") && !p.to_string_lossy().contains("cover")
        })
        .collect();
    patches.sort();
    git(&repo, &["checkout", "-q", "-b", "replay", "master"]);
    let mut args = vec!["am", "-q"];
    let paths: Vec<String> = patches.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    git(&repo, &args);
    assert_eq!(
        git(&repo, &["rev-parse", "replay^{tree}"]),
        git(&repo, &["rev-parse", "topic^{tree}"]),
        "the archived .patch files rebuild the same tree"
    );
}

#[test]
fn duplicates_counted_once_and_conflicting_ids_reported() {
    let site = Site::mbox("");
    let p = patch("same@x", "[PATCH] Fix", None, "a.c");
    site.write_mbox(&[
        p.clone(),
        p,
        patch("same@x", "[PATCH] Fix, but different", None, "zzz.c"),
    ]);
    let s = site.collect();
    assert_eq!(s["mails"], 3);
    assert_eq!(s["duplicates"], 1);
    assert_eq!(s["patches"], 1);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{s}");
    let msg = errors[0]["error"].as_str().unwrap();
    assert!(
        msg.contains("same@x") && msg.contains("different content"),
        "{msg}"
    );
    assert_eq!(site.count("SELECT COUNT(*) FROM mails"), 1);
    assert_eq!(
        site.count("SELECT COUNT(*) FROM source_items"),
        3,
        "every delivered item is recorded"
    );
}

/// The same patch from two lists (cross-posted): other Received, List-*
/// and X-* headers, other recipients, a list footer. One mail, one
/// duplicate, no error; LF and CRLF.
#[test]
fn a_cross_posted_patch_is_a_duplicate_not_a_conflict() {
    for eol in ["\n", "\r\n"] {
        let site = Site::mbox("");
        let p = patch("cross@x", "[PATCH] Fix", None, "a.c");
        let copy = |list: &str| {
            let (head, body) = p.split_once("\n\n").unwrap();
            format!(
                "Received: from {list} by mx; Tue, 24 Nov 2026 09:00:07 +0000\nList-Id: <{list}>\nX-BeenThere: {list}\nDelivered-To: me@x\n{}\nTo: {list}\n\n{body}\n_______________________________________________\n{list} mailing list\n",
                head.replace("\nTo: ", "\nX-Original-To: ")
            )
            .replace('\n', eol)
        };
        site.write_mbox(&[copy("one.example.org"), copy("two.example.org")]);
        let s = site.collect();
        assert_eq!(s["mails"], 2, "{s}");
        assert_eq!(s["duplicates"], 1, "{s}");
        assert_eq!(s["patches"], 1, "{s}");
        assert_eq!(s["errors"].as_array().unwrap().len(), 0, "{s}");
        assert_eq!(
            site.count("SELECT COUNT(*) FROM source_items WHERE kind = 'duplicate'"),
            1
        );
    }
}

/// A mail over `max_mail_size` is archived whole, named in `errors` with
/// its Message-ID, subject and size, and parsed by the first collect after
/// the limit is raised; mbox and Maildir, LF and CRLF (IMAP: in
/// imap_source.rs).
#[test]
fn an_over_limit_mail_is_archived_reported_and_parsed_once_the_limit_allows() {
    for (source, eol) in [
        ("mbox", "\n"),
        ("mbox", "\r\n"),
        ("maildir", "\n"),
        ("maildir", "\r\n"),
    ] {
        let site = match source {
            "mbox" => Site::mbox("max_mail_size = 2000"),
            _ => Site::maildir("max_mail_size = 2000"),
        };
        let big = mail(&MailSpec {
            message_id: "big@x",
            subject: "[PATCH] Big change",
            from: "Ada Contributor <ada@example.org>",
            in_reply_to: None,
            body: &format!(
                "{}{}",
                "Why it is big.\n".repeat(200),
                diff_body("big.c", "x")
            ),
        })
        .replace('\n', eol);
        let mails = [big.clone(), patch("small@x", "[PATCH] Small", None, "s.c")];
        match source {
            "mbox" => site.write_mbox(&mails),
            _ => site.write_maildir(&mails),
        }
        let s = site.collect();
        assert_eq!(s["mails"], 2, "{s}");
        assert_eq!(s["patches"], 1, "{s}");
        let errors = s["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{s}");
        assert_eq!(errors[0]["message_id"], "big@x", "{s}");
        assert_eq!(errors[0]["subject"], "[PATCH] Big change", "{s}");
        let size = big.len().to_string();
        let text = errors[0]["error"].as_str().unwrap();
        assert!(text.contains(&size) && text.contains("2000"), "{text}");
        let raw: String = site
            .db()
            .query_row(
                "SELECT raw_path FROM mails WHERE message_id = 'big@x'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let archived = std::fs::read(site.path().join("archive").join(raw)).unwrap();
        assert_eq!(String::from_utf8_lossy(&archived), big, "archived whole");

        // The limit raised: the next collect parses it from the archive.
        std::fs::write(
            site.path().join("patchline.toml"),
            match source {
                "mbox" => {
                    "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmax_mail_size = 1000000\n"
                }
                _ => {
                    "[intake]\nsource = \"maildir\"\npath = \"Maildir\"\nmax_mail_size = 1000000\n"
                }
            },
        )
        .unwrap();
        let s = site.collect();
        assert_eq!(s["errors"].as_array().unwrap().len(), 0, "{s}");
        assert_eq!(s["patches"], 1, "{s}");
        assert_eq!(
            site.count("SELECT COUNT(*) FROM mails WHERE is_patch = 1 AND error IS NULL"),
            2
        );
        assert_eq!(site.count("SELECT COUNT(*) FROM series"), 2);
    }
}

#[test]
fn a_killed_collect_resumes_without_loss_or_double() {
    let site = Site::mbox("batch = 7");
    let n = 4000;
    let mails: Vec<String> = (0..n)
        .map(|i| {
            patch(
                &format!("m{i}@x"),
                &format!("[PATCH] Change {i}"),
                None,
                &format!("f{i}.c"),
            )
        })
        .collect();
    site.write_mbox(&mails);
    let config = site.path().join("patchline.toml");
    // Kill the collector at varying points until one run finishes.
    let mut finished = false;
    let mut kills = 0;
    for attempt in 0..60u64 {
        let mut child = std::process::Command::new(crate::util::patchline_bin())
            .args(["--config", config.to_str().unwrap(), "collect", "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + attempt * attempt * 3));
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the collector was killed only {kills} times: the test proves nothing"
    );
    if !finished {
        site.collect();
    }
    site.collect();
    assert_eq!(site.count("SELECT COUNT(*) FROM mails"), n as i64);
    assert_eq!(
        site.count("SELECT COUNT(DISTINCT message_id) FROM mails"),
        n as i64
    );
    assert_eq!(
        site.count("SELECT COUNT(*) FROM source_items"),
        n as i64,
        "no item taken twice"
    );
    assert_eq!(site.count("SELECT COUNT(*) FROM series"), n as i64);
    assert_eq!(site.count("SELECT COUNT(*) FROM patches"), n as i64);
}

#[test]
fn bad_corpus_is_archived_and_reported_never_fatal() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no bad corpus in {}", corpus.display());
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(
            f,
            maildir
                .join("new")
                .join(format!("1700000{i:03}.M{i}P1.host")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("patchline.toml"),
        "[intake]\nsource = \"maildir\"\npath = \"Maildir\"\n",
    )
    .unwrap();
    let ran = patchline(dir.path(), &["collect", "--json"]);
    let s = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    assert_eq!(s["mails"], files.len() as u64, "{s}");
    let conn = rusqlite::Connection::open(dir.path().join("patchline.db")).unwrap();
    let raw: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT raw_path) FROM source_items",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(raw >= 1);
    for e in s["errors"].as_array().unwrap() {
        let text = e["error"].as_str().unwrap();
        assert!(!text.is_empty() && !text.contains('\n'), "{e}");
    }
    // Every item maps to a stored file.
    let mut stmt = conn.prepare("SELECT raw_path FROM source_items").unwrap();
    let paths: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for p in paths {
        assert!(dir.path().join("archive").join(&p).is_file(), "{p} missing");
    }
}

#[test]
fn parse_prints_one_json_object_per_mail() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.eml");
    std::fs::write(
        &a,
        patch("a@x", "[stable PATCH v2 3/7 qemu] Fix it", None, "a.c"),
    )
    .unwrap();
    let b = dir.path().join("b.eml");
    std::fs::write(
        &b,
        mail(&MailSpec {
            message_id: "b@x",
            subject: "Re: [PATCH] Fix",
            from: "R <r@example.org>",
            in_reply_to: Some("a@x"),
            body: "Looks good.\n",
        }),
    )
    .unwrap();
    let out = patchline(dir.path(), &["parse", "--json", "a.eml", "b.eml"]).ok();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let keys = [
        "file",
        "message_id",
        "is_patch",
        "branch",
        "repo",
        "version",
        "index",
        "total",
        "title",
        "reason",
    ];
    for l in &lines {
        for k in keys {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
    }
    assert_eq!(lines[0]["is_patch"], true);
    assert_eq!(lines[0]["branch"], "stable");
    assert_eq!(lines[0]["repo"], "qemu");
    assert_eq!(lines[0]["version"], 2);
    assert_eq!(lines[0]["index"], 3);
    assert_eq!(lines[0]["total"], 7);
    assert_eq!(lines[0]["title"], "Fix it");
    assert!(lines[0]["reason"].is_null());
    assert_eq!(lines[1]["is_patch"], false);
    assert_eq!(lines[1]["reason"], "reply to a patch");
    // A missing file: exit 2, named.
    let ran = patchline(dir.path(), &["parse", "nope.eml"]).fails_with(2);
    assert!(ran.stderr().contains("nope.eml") || ran.stdout().contains("nope.eml"));
}

#[test]
fn config_errors_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("patchline.toml"),
        "[intake]\nsourse = \"mbox\"\n",
    )
    .unwrap();
    let ran = patchline(dir.path(), &["collect"]).fails_with(2);
    let err = ran.stderr();
    assert!(
        err.contains("patchline.toml") && err.contains("sourse"),
        "{err}"
    );
    let ran = patchline(dir.path(), &["--config", "missing.toml", "status"]).fails_with(2);
    assert!(ran.stderr().contains("missing.toml"), "{}", ran.describe());
    let ran = run_in(
        dir.path(),
        &crate::util::patchline_bin(),
        &["collect", "--bogus-flag"],
    );
    assert_eq!(ran.code(), 2, "{}", ran.describe());
}

#[test]
fn status_reports_the_collect_stage() {
    let site = Site::mbox("");
    site.write_mbox(&[patch("one@x", "[PATCH] One", None, "a.c")]);
    let s = site.collect();
    let ran = patchline(site.path(), &["status", "--json"]);
    let status = ran.json();
    assert_eq!(status["run"]["id"], s["run"]);
    assert_eq!(status["stages"][0]["stage"], "collect");
    assert_eq!(status["stages"][0]["state"], "ok");
    assert_eq!(status["stages"][0]["summary"]["patches"], 1);
    // Global flags work after the subcommand too.
    let ran = patchline(
        site.path(),
        &["status", "--json", "--config", "patchline.toml"],
    );
    assert_eq!(ran.code(), 0, "{}", ran.describe());
}

#[test]
fn watch_collects_mail_appended_later() {
    let site = Site::mbox("poll_secs = 1");
    site.write_mbox(&[patch("w1@x", "[PATCH] First", None, "a.c")]);
    let mut child = std::process::Command::new(crate::util::patchline_bin())
        .args(["collect", "--watch", "--json"])
        .current_dir(site.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("collect --watch printed nothing");
        serde_json::from_str(&line).unwrap()
    };
    let first = next();
    assert_eq!(first["mails"], 1);
    site.append_mbox(&[patch("w2@x", "[PATCH] Second", None, "b.c")]);
    // Rounds without new mail print the same run totals; wait for the new one.
    let mut later = next();
    for _ in 0..20 {
        if later["mails"] == 2 {
            break;
        }
        later = next();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(later["mails"], 2, "{later}");
    assert_eq!(later["run"], first["run"], "one run for the whole watch");
    assert_eq!(site.count("SELECT COUNT(*) FROM mails"), 2);
}

#[test]
fn collect_reads_imap_through_the_config_over_starttls() {
    let server = crate::dovecot::Dovecot::start();
    let mut client = server.client();
    for m in [
        cover("ic@x", "[PATCH 0/2] Over IMAP"),
        patch("ip1@x", "[PATCH 1/2] One", Some("ic@x"), "a.c"),
        patch("ip2@x", "[PATCH 2/2] Two", Some("ic@x"), "b.c"),
    ] {
        client.append("INBOX", m.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("imap-password"),
        format!("{}\n", server.password),
    )
    .unwrap();
    let settings = server.settings("INBOX");
    // A copy: the server's directory goes away with it at the end.
    std::fs::copy(&server.cert, dir.path().join("ca.pem")).unwrap();
    std::fs::write(
        dir.path().join("patchline.toml"),
        format!(
            "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nauth = \"plain\"\nuser = \"{}\"\npassword_file = \"imap-password\"\nca_file = \"ca.pem\"\n",
            server.imap_port, settings.user,
        ),
    )
    .unwrap();
    let ran = patchline(dir.path(), &["collect", "--json"]);
    let s = ran.json();
    assert_eq!(ran.code(), 0, "{}\n{}", ran.describe(), server.logs());
    assert_eq!(s["mails"], 3);
    assert_eq!(s["series_complete"], 1);
    assert!(s["source"].as_str().unwrap().starts_with("imap://"));
    assert!(!ran.stderr().contains(&server.password));
    // Again: nothing new, nothing counted twice.
    let again = patchline(dir.path(), &["collect", "--json"]).json();
    assert_eq!(again["mails"], 0);
    // The server gone: exit 3 with a one-line cause.
    drop(server);
    let ran = patchline(dir.path(), &["collect"]).fails_with(3);
    assert!(ran.stderr().contains("unreachable"), "{}", ran.describe());
}

#[test]
fn parse_json_shows_kind_tags_and_prefixes_and_reads_branches_from_the_config() {
    let site = Site::mbox(
        "\n[[repos]]\nname = \"qemu\"\npath = \"repo\"\nbranches = [\"master\"]\n\n[[repos.routes]]\ntags = [\"qemu\"]\n",
    );
    let init = std::process::Command::new("git")
        .args(["init", "-q", "repo"])
        .current_dir(site.path())
        .status()
        .unwrap();
    assert!(init.success());
    let subjects = [
        "[libvirt] [qemu PATCH v2,1/2] Tagged",
        "[master PATCH qemu 1 of 2] Team form",
        "[GIT PULL] Pull me",
        "Sv: [PATCH] Reply",
    ];
    for (i, s) in subjects.iter().enumerate() {
        std::fs::write(
            site.path().join(format!("{i}.eml")),
            patch(&format!("m{i}@x"), s, None, "a.c"),
        )
        .unwrap();
    }
    let files: Vec<String> = (0..subjects.len()).map(|i| format!("{i}.eml")).collect();
    let mut args = vec!["parse", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = patchline(site.path(), &args).ok();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    let tagged = &lines[0];
    assert_eq!(tagged["kind"], "patch", "{tagged}");
    assert!(tagged["branch"].is_null(), "{tagged}");
    assert_eq!(tagged["tags"], serde_json::json!(["libvirt", "qemu"]));
    assert_eq!(
        tagged["prefixes"],
        serde_json::json!(["libvirt", "qemu", "PATCH", "v2", "1/2"])
    );
    assert_eq!(
        (tagged["version"].clone(), tagged["index"].clone()),
        (2.into(), 1.into())
    );
    let team = &lines[1];
    assert_eq!(team["branch"], "master", "{team}");
    assert_eq!(team["repo"], "qemu", "{team}");
    assert_eq!(team["total"], 2, "{team}");
    let pull = &lines[2];
    assert_eq!(pull["kind"], "pull", "{pull}");
    assert_eq!(pull["is_patch"], false, "{pull}");
    assert_eq!(pull["title"], "Pull me", "{pull}");
    assert_eq!(lines[3]["kind"], "reply");
    assert_eq!(lines[3]["reason"], "reply to a patch");
}

/// The mails of `git format-patch --stdout` output, without their `From `
/// separator lines.
fn split_format_patch(out: &str) -> Vec<String> {
    let mut mails: Vec<String> = Vec::new();
    for line in out.split_inclusive('\n') {
        let separator = line.starts_with("From ")
            && line.len() > 45
            && line[5..45].bytes().all(|b| b.is_ascii_hexdigit());
        if separator {
            mails.push(String::new());
        } else if let Some(m) = mails.last_mut() {
            m.push_str(line);
        }
    }
    mails
}

/// A v1 of three patches, its v2 with a reworded cover in a new thread
/// (`git format-patch -v2`), and a lone patch by the same author.
fn rerolled_mails(p: &Path) -> Vec<String> {
    let src = p.join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a.txt"), "a\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    for (file, subject) in [("b.txt", "Add b"), ("c.txt", "Add c"), ("d.txt", "Add d")] {
        std::fs::write(src.join(file), "1\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", subject]);
    }
    let format = |extra: &[&str], cover: &str| -> Vec<String> {
        let mut args = vec!["format-patch", "--stdout", "--thread=shallow"];
        args.extend_from_slice(extra);
        split_format_patch(&git(&src, &args).replace("*** SUBJECT HERE ***", cover))
    };
    let mut mails = format(&["--cover-letter", "HEAD~3"], "Add letters");
    git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(src.join("d.txt"), "2\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "Add d"]);
    mails.extend(
        format(
            &["--cover-letter", "-v2", "HEAD~3"],
            "Letters b to d, take two",
        )
        .into_iter()
        .map(|m| m.replace(".git.", ".v2.git.")),
    );
    std::fs::write(src.join("e.txt"), "1\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "Add e"]);
    mails.extend(format(&["-1"], ""));
    mails
}

/// `(key, version, state, missing, superseded_by, [(idx, Message-ID)])` of
/// every stored series, by key.
type SeriesRow = (
    String,
    u32,
    String,
    String,
    Option<String>,
    Vec<(u32, String)>,
);

fn series_rows(site: &Site) -> Vec<SeriesRow> {
    let db = site.db();
    let mut stmt = db
        .prepare("SELECT id, key, version, state, missing, superseded_by FROM series ORDER BY key")
        .unwrap();
    let rows: Vec<(i64, String, u32, String, String, Option<String>)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.into_iter()
        .map(|(id, key, version, state, missing, by)| {
            let mut members = db
                .prepare(
                    "SELECT p.idx, m.message_id FROM patches p JOIN mails m ON m.id = p.mail_id
                     WHERE p.series_id = ?1 ORDER BY p.idx",
                )
                .unwrap();
            let members = members
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (key, version, state, missing, by, members)
        })
        .collect()
}

#[test]
fn series_do_not_depend_on_delivery_order_or_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mails = rerolled_mails(dir.path());
    assert_eq!(mails.len(), 4 + 4 + 1);
    let all_at_once = Site::mbox("");
    all_at_once.write_mbox(&mails);
    all_at_once.collect();
    let want = series_rows(&all_at_once);
    let states: Vec<(u32, &str)> = want.iter().map(|r| (r.1, r.2.as_str())).collect();
    assert_eq!(
        states,
        [(1, "superseded"), (2, "complete"), (1, "complete")],
        "{want:?}"
    );
    let mut rng = 7u64;
    for (round, runs) in [1usize, 2, 3, 5].into_iter().enumerate() {
        let mut order = mails.clone();
        for i in (1..order.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let site = Site::mbox("");
        let per_run = order.len().div_ceil(runs);
        for part in order.chunks(per_run) {
            site.append_mbox(part);
            site.collect();
        }
        assert_eq!(series_rows(&site), want, "round {round}, {runs} run(s)");
    }
}

/// Patch 2 of `rerolled_mails`' v2 re-sent as `[PATCH v2.1 2/3]` with a
/// changed diff: under the patch it corrects (`git send-email
/// --in-reply-to`) or in a thread of its own; and its Message-ID.
fn revision_of(mails: &[String], threaded: bool) -> (String, String) {
    let v2_patch2 = &mails[6];
    assert!(v2_patch2.contains("[PATCH v2 2/3]"), "{v2_patch2}");
    let id_line = v2_patch2
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap();
    let old_id = id_line.split_once(':').unwrap().1.trim().to_owned();
    let new_id = old_id.replace('@', ".r1@");
    let revised = v2_patch2
        .replace("[PATCH v2 2/3]", "[PATCH v2.1 2/3]")
        .replace(&old_id, &new_id)
        .replace("+1\n", "+1 revised\n");
    let (head, body) = revised.split_once("\n\n").unwrap();
    let head: String = head
        .split_inclusive('\n')
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("in-reply-to:") && !l.starts_with("references:")
        })
        .collect();
    let head = head.trim_end_matches('\n');
    let revised = match threaded {
        true => format!("{head}\nIn-Reply-To: {old_id}\nReferences: {old_id}\n\n{body}"),
        false => format!("{head}\n\n{body}"),
    };
    (revised, new_id.trim_matches(['<', '>']).to_owned())
}

/// `[PATCH v2.1 2/3]`, one patch of v2 re-sent as its correction (a
/// partial reroll, as `v7.1 39/72` on real lists): v2 is complete with the
/// revised patch 2 in place, v1 superseded, nothing else; under the patch
/// it corrects or in a thread of its own, LF and CRLF, delivered before or
/// after, all at once or shuffled over several collects.
#[test]
fn a_vn_m_revision_replaces_its_patch_in_version_n() {
    let dir = tempfile::tempdir().unwrap();
    let mails = rerolled_mails(dir.path());
    let mut rng = 11u64;
    for threaded in [true, false] {
        let (revised, new_id) = revision_of(&mails, threaded);
        for eol in ["\n", "\r\n"] {
            for revision_first in [false, true] {
                let mut all: Vec<String> = mails.clone();
                match revision_first {
                    true => all.insert(0, revised.clone()),
                    false => all.push(revised.clone()),
                }
                let all: Vec<String> = all.iter().map(|m| m.replace('\n', eol)).collect();
                let site = Site::mbox("");
                site.write_mbox(&all);
                let s = site.collect();
                assert_eq!(s["mails"], 10, "{s}");
                let rows = series_rows(&site);
                let what = format!("threaded {threaded}, eol {eol:?}, first {revision_first}");
                let states: Vec<(u32, &str)> = rows.iter().map(|r| (r.1, r.2.as_str())).collect();
                assert_eq!(
                    states,
                    [(1, "superseded"), (2, "complete"), (1, "complete")],
                    "{what}: {rows:?}"
                );
                let v2 = &rows[1].5;
                assert_eq!(v2.len(), 4, "{what}: {v2:?}");
                assert_eq!(v2[2], (2, new_id.clone()), "{what}: {v2:?}");
                if eol == "\r\n" || revision_first {
                    continue;
                }
                // The same mails shuffled, over three collects.
                let mut order = all.clone();
                for i in (1..order.len()).rev() {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    order.swap(i, (rng >> 33) as usize % (i + 1));
                }
                let split = Site::mbox("");
                for part in order.chunks(order.len().div_ceil(3)) {
                    split.append_mbox(part);
                    split.collect();
                }
                assert_eq!(series_rows(&split), rows, "{what}, shuffled");
            }
        }
    }
}

/// A missing config names `--config` and `$PATCHLINE_CONFIG` (the log of
/// a pipe carrying no colour codes is checked by serve's `-vv` test).
#[test]
fn a_missing_config_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let ran = patchline(dir.path(), &["status"]);
    assert_eq!(ran.code(), 2, "{}", ran.describe());
    assert!(
        ran.stderr().contains("--config") && ran.stderr().contains("$PATCHLINE_CONFIG"),
        "{}",
        ran.describe()
    );
}
