//! The hostile corpus (`tests/corpus/hostile/cases.tsv`): every case run
//! through the real binary — `patchline am`, `patchline parse`, one
//! `patchline run` over all the `run` mails, a config load — with its
//! expected outcome, no panic or abort (exit codes 0 to 3 only), and
//! nothing changed outside the test's repositories and state directory
//! (a canary file beside them; no file an injected shell command would
//! make).

use crate::util::{Ran, git, patchline, patchline_bin, run_in};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an injected `touch` in the corpus would create.
const PWNED: &str = "corpus-pwned";

struct Case {
    file: String,
    kind: String,
    expected: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/hostile")
}

fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(corpus_dir().join("cases.tsv")).unwrap();
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert!(cols.len() >= 3, "bad table row {l:?}");
            Case {
                file: cols[0].to_owned(),
                kind: cols[1].to_owned(),
                expected: cols[2].to_owned(),
            }
        })
        .collect()
}

/// The generated cases: too big to commit.
fn generated(name: &str, dir: &Path) -> PathBuf {
    let head = "From: Ada <ada@example.org>\nSubject: [PATCH] Generated\nDate: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-Id: <gen@corpus.example.org>\n";
    let diff = "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n";
    let text = match name {
        "gen:long-line" => format!(
            "{head}\nx\n---\n{diff}@@ -1,3 +1,3 @@\n one\n-two\n+{}\n three\n",
            "y".repeat(2 << 20)
        ),
        "gen:many-hunks" => format!(
            "{head}\nx\n---\n{diff}{}",
            "@@ -1 +1 @@\n-one\n+one\n".repeat(100_001)
        ),
        "gen:huge-header" => format!(
            "{head}{}\nbody\n",
            "Received: from relay.example.org by mx.example.org\n".repeat((2 << 20) / 50)
        ),
        other => panic!("unknown generated case {other}"),
    };
    let path = dir.join(name.trim_start_matches("gen:"));
    std::fs::write(&path, text).unwrap();
    path
}

fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap_or_else(|| panic!("no Message-Id in {text:.200}"));
    line["message-id:".len()..]
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

fn bare_repo(dir: &Path, name: &str) -> PathBuf {
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(work.join("bin.dat"), (0u8..64).collect::<Vec<u8>>()).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "base"]);
    let bare = dir.join(format!("{name}.git"));
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(&work).unwrap();
    bare
}

fn tip(repo: &Path) -> String {
    git(repo, &["rev-parse", "master"]).trim().to_owned()
}

/// Every exit a hostile input may cause: ok, failed, usage, infrastructure.
fn check_exit(case: &str, ran: &Ran) {
    assert!(
        (0..=3).contains(&ran.code()),
        "{case}: exit code {} (a panic or an abort)\n{}",
        ran.code(),
        ran.describe()
    );
    assert!(
        !ran.stderr().contains("panicked at") && !ran.stderr().contains("memory allocation"),
        "{case}: panicked\n{}",
        ran.describe()
    );
}

fn outcome<'a>(expected: &'a str, kind: &str) -> (&'a str, &'a str) {
    let (what, needle) = expected.split_once(':').unwrap_or((expected, ""));
    let known: &[&str] = match kind {
        "am" => &["applied", "refused"],
        "parse" => &["parsed", "refused"],
        "run" => &["applied", "series-failed", "mail-error"],
        "config" => &["config-error"],
        other => panic!("unknown kind {other}"),
    };
    assert!(known.contains(&what), "{kind}: unknown outcome {expected}");
    (what, needle)
}

fn am_case(case: &Case, file: &Path, repo: &Path, cwd: &Path) -> Result<(), String> {
    let base = tip(repo);
    let ran = patchline(
        cwd,
        &[
            "am",
            "--json",
            "--repo",
            repo.to_str().unwrap(),
            "--branch",
            "master",
            file.to_str().unwrap(),
        ],
    );
    check_exit(&case.file, &ran);
    let after = tip(repo);
    // The next case starts from the same tree.
    git(repo, &["update-ref", "refs/heads/master", &base]);
    let all = format!("{}{}", ran.stdout(), ran.stderr());
    match outcome(&case.expected, "am") {
        ("applied", _) if ran.code() == 0 && after != base => Ok(()),
        ("refused", needle) if ran.code() == 1 && after == base && all.contains(needle) => Ok(()),
        _ => Err(ran.describe()),
    }
}

fn parse_case(case: &Case, file: &Path, cwd: &Path) -> Result<(), String> {
    let ran = patchline(cwd, &["parse", "--json", file.to_str().unwrap()]);
    check_exit(&case.file, &ran);
    let json = ran.json();
    let reason = json["reason"].as_str().unwrap_or("");
    match outcome(&case.expected, "parse") {
        ("parsed", _) if ran.code() == 0 && json["message_id"].is_string() => Ok(()),
        ("refused", needle) if json["message_id"].is_null() && reason.contains(needle) => Ok(()),
        _ => Err(ran.describe()),
    }
}

fn config_case(case: &Case, file: &Path, dir: &Path, mail: &Path) -> Result<(), String> {
    let config = dir.join("patchline.toml");
    std::fs::copy(file, &config).unwrap();
    let ran = run_in(
        dir,
        &patchline_bin(),
        &[
            "--config",
            config.to_str().unwrap(),
            "parse",
            mail.to_str().unwrap(),
        ],
    );
    check_exit(&case.file, &ran);
    let (_, key) = outcome(&case.expected, "config");
    if ran.code() == 2 && ran.stderr().contains(key) {
        Ok(())
    } else {
        Err(ran.describe())
    }
}

/// Every file below `dir` (repositories' insides left out), with its size.
fn files_outside_repos(dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Exactly what `touch corpus-pwned` makes: a slug of a subject that
        // merely mentions it (an archive directory) is fine.
        assert!(name != PWNED, "an injected command ran: {}", path.display());
        if entry.file_type().unwrap().is_dir() {
            if !name.ends_with(".git") {
                files_outside_repos(&path, out);
            }
        } else {
            out.insert(path, entry.metadata().unwrap().len());
        }
    }
}

#[test]
fn hostile_corpus_gives_its_expected_outcome_and_changes_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let canary = top.join("canary.txt");
    std::fs::write(&canary, "untouched\n").unwrap();
    let gen_dir = top.join("gen");
    std::fs::create_dir(&gen_dir).unwrap();
    let am_repo = bare_repo(top, "am");
    let scratch = top.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let cfg_dir = top.join("cfg");
    std::fs::create_dir(&cfg_dir).unwrap();
    bare_repo(&cfg_dir, "hello");
    let site = top.join("site");
    std::fs::create_dir(&site).unwrap();
    let run_repo = bare_repo(&site, "hello");
    let plain_mail = corpus_dir().join("crlf.eml");

    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut run_cases = Vec::new();
    for case in &cases {
        let file = if case.file.starts_with("gen:") {
            generated(&case.file, &gen_dir)
        } else {
            corpus_dir().join(&case.file)
        };
        let result = match case.kind.as_str() {
            "am" => am_case(case, &file, &am_repo, &scratch),
            "parse" => parse_case(case, &file, &scratch),
            "config" => config_case(case, &file, &cfg_dir, &plain_mail),
            "run" => {
                run_cases.push((case, std::fs::read(&file).unwrap()));
                Ok(())
            }
            other => panic!("{}: unknown kind {other}", case.file),
        };
        if let Err(why) = result {
            failures.push(format!(
                "{} (expected {}):\n{why}",
                case.file, case.expected
            ));
        }
    }

    // One collect + apply over every `run` mail, each its own series.
    let mut mbox = Vec::new();
    for (_, raw) in &run_cases {
        mbox.extend_from_slice(b"From corpus@z Thu Jan  1 00:00:00 1970\n");
        mbox.extend_from_slice(raw);
        if !raw.ends_with(b"\n") {
            mbox.push(b'\n');
        }
    }
    std::fs::write(site.join("list.mbox"), mbox).unwrap();
    std::fs::write(
        site.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"hello\"\npath = \"hello.git\"\n",
    )
    .unwrap();
    let base = tip(&run_repo);
    let ran = patchline(&site, &["run", "--json"]);
    check_exit("patchline run", &ran);
    let status = ran.json();
    let collect = &status["stages"][0]["summary"];
    let apply = &status["stages"][1]["summary"];
    for (case, raw) in &run_cases {
        let id = message_id(raw);
        let series = apply["series"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["key"] == id.as_str());
        let error = collect["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e.to_string().contains(&id));
        let ok = match outcome(&case.expected, "run") {
            ("applied", _) => series.is_some_and(|s| s["state"] == "applied"),
            ("series-failed", needle) => series
                .is_some_and(|s| s["state"] == "failed" && s["error"].to_string().contains(needle)),
            ("mail-error", needle) => error.is_some_and(|e| e.to_string().contains(needle)),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} (expected {}): series {series:?}, collect error {error:?}\n{}",
                case.file,
                case.expected,
                ran.describe()
            ));
        }
    }
    assert_ne!(tip(&run_repo), base, "the good run mails applied nothing");

    // Nothing outside the repositories and the state directory changed.
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched\n");
    let mut files = BTreeMap::new();
    files_outside_repos(top, &mut files);
    let unexpected: Vec<_> = files
        .keys()
        .filter(|p| {
            // `site` is the run's state directory (database, archive,
            // reports); `scratch`, where `am` and `parse` ran, must stay empty.
            !(p.starts_with(&gen_dir)
                || p.starts_with(&site)
                || *p == &canary
                || *p == &cfg_dir.join("patchline.toml"))
        })
        .collect();
    assert!(unexpected.is_empty(), "files appeared: {unexpected:?}");
    for dir in [Path::new(env!("CARGO_MANIFEST_DIR")), Path::new("/tmp")] {
        assert!(
            !dir.join(PWNED).exists(),
            "an injected command ran in {}",
            dir.display()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases did not give their outcome:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
