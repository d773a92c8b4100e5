//! Kill anywhere, resume exactly: `patchline run` over a 300-patch list
//! (a 200-patch series for master, 40 short series for stable-1) is killed
//! with SIGKILL at random moments — inside collect, apply, build, publish
//! and report — and resumed, again and again. After every resume nothing
//! is lost or doubled (each mail archived and stored once, each commit on
//! its branch once), `git fsck --strict` is clean, no temporary file is
//! left, and the run's status and report are those of an uninterrupted
//! run on the same input.

use crate::util::{git, patchline};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SITE: &str = "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nbranches = [\"master\", \"stable-1\"]\nspec = \"tiny.spec\"\ntargets = [\"el9\"]\n\n[[build.targets]]\nname = \"el9\"\ndist = \".el9\"\nmacros = { rhel = \"9\", el9 = \"1\" }\n\n[report]\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\n";

const BRANCHES: [&str; 2] = ["master", "stable-1"];

/// The stages of a run, in order (`test`, which runs no test here, is
/// over too fast to aim at).
const STAGES: [&str; 6] = ["collect", "apply", "build", "publish", "test", "report"];
const TARGETS: [usize; 5] = [0, 1, 2, 3, 5];

/// Sizes of the stable-1 series, repeated: 100 patches in 40 series.
const STABLE_SERIES: [usize; 4] = [1, 2, 3, 4];

/// Kills per round and in all: each round starts from the seed, is killed
/// `KILLS_PER_ROUND` times at random points inside random stages (each
/// attempt resuming the one before) and then resumed to the end; rounds go
/// on until `KILLS`.
const KILLS_PER_ROUND: usize = 3;
const KILLS: u32 = 32;
const MAX_ROUNDS: usize = 30;

/// A fixed-seed generator (splitmix64): the same kill delays every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `0..max`.
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }
}

/// The history, made with `git fast-import` (one process, not 600
/// commits): a base with the tiny spec, 200 commits on master and 100 on
/// stable-1, each adding one small file.
fn history_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut time = 1_700_000_000u64;
    let mut commit = |out: &mut Vec<u8>, branch: &str, msg: &str, files: &[(&str, &str)]| {
        time += 60;
        writeln!(out, "commit refs/heads/{branch}").unwrap();
        for who in ["author", "committer"] {
            writeln!(out, "{who} A U Thor <author@example.org> {time} +0000").unwrap();
        }
        write!(out, "data {}\n{msg}\n", msg.len()).unwrap();
        for (path, data) in files {
            write!(out, "M 100644 inline {path}\ndata {}\n{data}\n", data.len()).unwrap();
        }
        out.push(b'\n');
    };
    commit(
        &mut out,
        "master",
        "base\n",
        &[
            ("tiny.spec", crate::util::TINY_SPEC),
            ("greeting", "hello\n"),
        ],
    );
    out.extend_from_slice(b"reset refs/heads/stable-1\nfrom refs/heads/master\n\n");
    for i in 0..200 {
        let (path, data) = (format!("m/{i:03}"), format!("m {i}\n"));
        commit(
            &mut out,
            "master",
            &format!("Add m{i:03}\n"),
            &[(&path, &data)],
        );
    }
    for i in 0..100 {
        let (path, data) = (format!("s/{i:03}"), format!("s {i}\n"));
        commit(
            &mut out,
            "stable-1",
            &format!("Add s{i:03}\n"),
            &[(&path, &data)],
        );
    }
    out
}

/// The input of every run in `seed`: `tiny.git` with both branches at the
/// base, `list.mbox` with the 300 patches (real `git format-patch`), and
/// the site's config.
fn make_seed(seed: &Path) {
    let src = seed.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q"]);
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&src)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&history_stream())
        .unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import failed");
    let base = git(&src, &["rev-list", "--max-parents=0", "master"])
        .trim()
        .to_owned();
    git(seed, &["init", "-q", "--bare", "tiny.git"]);
    git(
        &src,
        &[
            "push",
            "-q",
            "../tiny.git",
            &format!("{base}:refs/heads/master"),
            &format!("{base}:refs/heads/stable-1"),
        ],
    );
    let mut mbox = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--cover-letter",
            "--thread",
            "--subject-prefix=master PATCH tiny",
            &format!("{base}..master"),
        ],
    );
    // Distinct cover subjects: one subject would make them versions of one series.
    mbox = mbox.replace("*** SUBJECT HERE ***", "Two hundred files");
    let (mut done, mut n) = (0, 0);
    while done < 100 {
        let size = STABLE_SERIES[n % STABLE_SERIES.len()];
        let range = format!("stable-1~{}..stable-1~{}", 100 - done, 100 - done - size);
        let mut args = vec![
            "format-patch",
            "--stdout",
            "--thread",
            "--subject-prefix=stable-1 PATCH tiny",
        ];
        if size > 1 {
            args.push("--cover-letter");
        }
        args.push(&range);
        // format-patch names a cover letter `cover.<seconds>.git...`: two
        // series made in one second would share it.
        mbox.push_str(
            &git(&src, &args)
                .replace("<cover.", &format!("<cover-{n}."))
                .replace("*** SUBJECT HERE ***", &format!("Stable batch {n}")),
        );
        done += size;
        n += 1;
    }
    std::fs::write(seed.join("list.mbox"), mbox).unwrap();
    std::fs::write(seed.join("patchline.toml"), SITE).unwrap();
    std::fs::remove_dir_all(&src).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// What must be equal between the uninterrupted run and every killed and
/// resumed one: ids, times and the directory normalised away.
#[derive(Debug, PartialEq)]
struct Outcome {
    trees: BTreeMap<&'static str, String>,
    commits: BTreeMap<&'static str, u32>,
    stages: Vec<String>,
    report: String,
}

fn normalise(text: &str, dir: &Path) -> String {
    let text = text.replace(dir.to_str().unwrap(), "<dir>");
    // Commit ids differ between runs (committer dates), also inside
    // package versions (`git408b877`); report Message-IDs name the pid.
    let dates = regex::Regex::new(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?").unwrap();
    let ids = regex::Regex::new(r"[0-9a-f]{7,64}").unwrap();
    let pids = regex::Regex::new(r"\.\d+@example\.org").unwrap();
    let times = regex::Regex::new(
        r#""(started_at|finished_at|created_at|duration_ms|duration_secs|seconds)": ?[0-9.]+"#,
    )
    .unwrap();
    let text = dates.replace_all(&text, "<date>");
    let text = ids.replace_all(&text, "<id>");
    let text = pids.replace_all(&text, ".<pid>@example.org");
    times.replace_all(&text, "\"$1\": <t>").into_owned()
}

fn commit_count(p: &Path, branch: &str) -> u32 {
    git(&p.join("tiny.git"), &["rev-list", "--count", branch])
        .trim()
        .parse()
        .unwrap()
}

fn outcome(p: &Path) -> Outcome {
    let status = patchline(p, &["status", "--json", "1"]);
    let status = status.json();
    let stages = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = format!(
                "{} {} {} {}",
                s["stage"], s["state"], s["error"], s["summary"]
            );
            normalise(&text, p)
        })
        .collect();
    let report = std::fs::read_to_string(p.join("work/run-1/report.txt")).unwrap_or_default();
    Outcome {
        trees: BRANCHES
            .iter()
            .map(|b| {
                let tree = git(
                    &p.join("tiny.git"),
                    &["rev-parse", &format!("{b}^{{tree}}")],
                );
                (*b, tree.trim().to_owned())
            })
            .collect(),
        commits: BRANCHES.iter().map(|b| (*b, commit_count(p, b))).collect(),
        stages,
        report: normalise(&report, p),
    }
}

/// `patchline` with the environment of `util::run_in_env`, output to
/// files in `p` (read back for panics).
fn spawn(p: &Path, args: &[&str]) -> std::process::Child {
    Command::new(crate::util::patchline_bin())
        .args(args)
        .current_dir(p)
        .env_remove("PATCHLINE_CONFIG")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .stdout(std::fs::File::create(p.join("attempt.out")).unwrap())
        .stderr(std::fs::File::create(p.join("attempt.err")).unwrap())
        .spawn()
        .unwrap()
}

/// The state of run 1 (`None`: not created yet) and the stage running.
fn run_state(p: &Path) -> (Option<String>, Option<String>) {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        p.join("patchline.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return (None, None);
    };
    let run = db
        .query_row("SELECT state FROM runs WHERE id = 1", [], |r| r.get(0))
        .ok();
    let stage = db
        .query_row(
            "SELECT stage FROM stages WHERE run_id = 1 AND state = 'running'",
            [],
            |r| r.get(0),
        )
        .ok();
    (run, stage)
}

fn mail_rows(p: &Path) -> u64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        p.join("patchline.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row("SELECT count(*) FROM mails", [], |r| r.get(0))
        .unwrap_or(0)
}

fn archived(p: &Path) -> usize {
    let mut files = Vec::new();
    files_under(&p.join("archive"), &mut files);
    files
        .iter()
        .filter(|f| {
            f.parent().is_some_and(|d| d.ends_with("raw"))
                && f.extension().is_some_and(|x| x == "eml")
        })
        .count()
}

fn temp_files(p: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(p, &mut files);
    files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            name.starts_with(".tmp") || name.starts_with("tmp_") || name.ends_with(".lock")
        })
        .collect()
}

fn panicked(p: &Path) -> bool {
    std::fs::read_to_string(p.join("attempt.err")).is_ok_and(|e| e.contains("panicked"))
}

#[derive(Default)]
struct Table {
    kills: u32,
    resumes: u32,
    mails_lost: u32,
    mails_doubled: u32,
    commits_doubled: u32,
    fsck_failed: u32,
    temp_left: u32,
    reports_wrong: u32,
    panics: u32,
    killed_in: BTreeMap<String, u32>,
}

#[test]
fn a_run_killed_anywhere_resumes_exactly() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    make_seed(&seed);
    let mails = std::fs::read_to_string(seed.join("list.mbox"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Message-ID: "))
        .collect::<std::collections::HashSet<_>>()
        .len();

    // The reference: one uninterrupted run, timed to spread the kills.
    let reference_dir = dir.path().join("reference");
    copy_dir(&seed, &reference_dir);
    let timer = Instant::now();
    patchline(&reference_dir, &["run"]).ok();
    let duration = timer.elapsed();
    let reference = outcome(&reference_dir);
    assert_eq!(reference.commits["master"], 201, "{:?}", reference.stages);
    assert_eq!(reference.commits["stable-1"], 101, "{:?}", reference.stages);
    assert_eq!(mail_rows(&reference_dir) as usize, mails);
    drop(std::fs::remove_dir_all(&reference_dir));

    let mut rng = Rng(0x5eed_0016);
    let mut table = Table::default();
    let mut failures = Vec::new();
    for round in 0..MAX_ROUNDS {
        if table.kills >= KILLS {
            break;
        }
        let p = dir.path().join(format!("round-{round}"));
        copy_dir(&seed, &p);
        // The stages this round's attempts are killed in, in pipeline
        // order (each attempt resumes the one before): so kills land in
        // every stage, not mostly in the longest.
        let mut targets: Vec<usize> = (0..KILLS_PER_ROUND)
            .map(|_| TARGETS[(rng.next() % TARGETS.len() as u64) as usize])
            .collect();
        targets.sort();
        let mut kills = 0;
        loop {
            let (run, _) = run_state(&p);
            let args: &[&str] = match run.as_deref() {
                None => &["run"],
                Some("running") => &["run", "--resume"],
                Some(_) => break,
            };
            let resume = args.len() > 1;
            table.resumes += u32::from(resume);
            let mut child = spawn(&p, args);
            if kills == KILLS_PER_ROUND {
                let status = child.wait().unwrap();
                table.panics += u32::from(panicked(&p));
                assert!(
                    status.success(),
                    "round {round}: the last resume failed ({status}):\n{}",
                    std::fs::read_to_string(p.join("attempt.err")).unwrap_or_default()
                );
                continue;
            }
            // Wait for the target stage, then kill it after a random
            // delay: often at once (short stages), else anywhere in a
            // third of the whole run (long ones; a kill landing in a
            // later stage counts for that one).
            let delay = if rng.next().is_multiple_of(2) {
                rng.below(Duration::from_millis(30))
            } else {
                rng.below(duration / 3)
            };
            let give_up = Instant::now() + duration * 3;
            let mut deadline = None;
            while child.try_wait().unwrap().is_none() && Instant::now() < give_up {
                match deadline {
                    Some(at) if Instant::now() >= at => break,
                    Some(_) => {}
                    None => {
                        // A short stage may pass between two looks: a
                        // later one counts as reached.
                        let running = run_state(&p).1;
                        let at = running.and_then(|r| STAGES.iter().position(|s| *s == r));
                        if at.is_some_and(|at| at >= targets[kills]) {
                            deadline = Some(Instant::now() + delay);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_some() {
                // It finished before its kill: nothing to resume.
                table.panics += u32::from(panicked(&p));
                continue;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            table.panics += u32::from(panicked(&p));
            kills += 1;
            table.kills += 1;
            let (_, stage) = run_state(&p);
            *table
                .killed_in
                .entry(stage.unwrap_or_else(|| "between stages".into()))
                .or_default() += 1;
            // At any moment: nothing doubled.
            if archived(&p) > mails || mail_rows(&p) as usize > mails {
                table.mails_doubled += 1;
                failures.push(format!("round {round}, kill {kills}: mails doubled"));
            }
            if let Some(run) = run_state(&p).0
                && run == "running"
            {
                for b in BRANCHES {
                    if commit_count(&p, b) > reference.commits[b] {
                        table.commits_doubled += 1;
                        failures.push(format!("round {round}, kill {kills}: {b} doubled"));
                    }
                }
            }
        }
        // Resumed to the end: everything once, clean, as the reference.
        if archived(&p) != mails || mail_rows(&p) as usize != mails {
            table.mails_lost += 1;
            failures.push(format!(
                "round {round}: {} archived, {} stored, {mails} sent",
                archived(&p),
                mail_rows(&p)
            ));
        }
        let fsck = Command::new("git")
            .args(["fsck", "--strict", "--no-progress"])
            .current_dir(p.join("tiny.git"))
            .output()
            .unwrap();
        if !fsck.status.success() || !fsck.stderr.is_empty() {
            table.fsck_failed += 1;
            failures.push(format!(
                "round {round}: git fsck: {}",
                String::from_utf8_lossy(&fsck.stderr)
            ));
        }
        let temps = temp_files(&p);
        if !temps.is_empty() {
            table.temp_left += 1;
            failures.push(format!("round {round}: temporary files left: {temps:?}"));
        }
        let got = outcome(&p);
        for b in BRANCHES {
            if got.commits[b] > reference.commits[b] {
                table.commits_doubled += 1;
            }
        }
        if got != reference {
            table.reports_wrong += 1;
            let differ: Vec<String> = got
                .stages
                .iter()
                .zip(&reference.stages)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("got      {a}\nexpected {b}"))
                .collect();
            failures.push(format!(
                "round {round}: not the reference's outcome: trees {:?} vs {:?}, commits {:?} vs {:?}\n{}\nreport equal: {}",
                got.trees,
                reference.trees,
                got.commits,
                reference.commits,
                differ.join("\n"),
                got.report == reference.report
            ));
        }
        drop(std::fs::remove_dir_all(&p));
    }
    eprintln!(
        "kills | resumes | mails lost | mails doubled | commits doubled | fsck failed | temp files left | reports wrong | panics\n{:>5} | {:>7} | {:>10} | {:>13} | {:>15} | {:>11} | {:>15} | {:>13} | {:>6}\nkilled in: {:?}\nuninterrupted run {:.1?}, test {:.1?}",
        table.kills,
        table.resumes,
        table.mails_lost,
        table.mails_doubled,
        table.commits_doubled,
        table.fsck_failed,
        table.temp_left,
        table.reports_wrong,
        table.panics,
        table.killed_in,
        duration,
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(table.kills >= 30, "only {} kills", table.kills);
    assert_eq!(table.panics, 0);
}
