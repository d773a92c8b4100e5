//! `patchline am` against `git am` on a generated history: same trees, same
//! authors, same messages; and failures that leave the branch alone.

use crate::util::{git, git_env, patchline};
use std::path::{Path, PathBuf};

/// A tiny deterministic generator (no extra crate).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Commits of every kind `git am` meets: edits at the start, middle and
/// end of files, additions, deletions, renames, mode changes, binary
/// files, files without a final newline, paths with spaces and non-ASCII,
/// non-ASCII authors.
fn generate_history(dir: &Path, commits: usize) {
    let authors = [
        ("Ada Lovelace", "ada@example.org"),
        ("Jérôme Prüfer", "jerome@example.org"),
        ("Zoë Ünal", "zoe@example.org"),
        ("Bob", "bob@example.org"),
    ];
    let mut rng = Lcg(1234);
    let mut files: Vec<String> = Vec::new();
    for i in 0..6 {
        let name = format!("src/file {i}.c");
        let body: String = (0..40).map(|l| format!("line {l} of {i}\n")).collect();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join(&name), body).unwrap();
        files.push(name);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "base"]);
    git(dir, &["branch", "base"]);
    for c in 0..commits {
        let op = rng.below(10);
        let pick = rng.below(files.len());
        let path = dir.join(&files[pick]);
        match op {
            0 => {
                let name = format!("src/new-{c}-é.txt");
                std::fs::write(dir.join(&name), format!("new file {c}\nno newline")).unwrap();
                files.push(name);
            }
            1 if files.len() > 3 => {
                std::fs::remove_file(&path).unwrap();
                files.remove(pick);
            }
            2 => {
                let to = format!("src/renamed {c}.c");
                std::fs::rename(&path, dir.join(&to)).unwrap();
                files[pick] = to;
            }
            3 => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                let new = if mode & 0o111 != 0 { 0o644 } else { 0o755 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(new)).unwrap();
            }
            4 => {
                let bin: Vec<u8> = (0..600).map(|b| ((b * 31 + c * 7) % 256) as u8).collect();
                std::fs::write(dir.join(format!("data-{}.bin", c % 3)), bin).unwrap();
            }
            _ => {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines: Vec<String> =
                    text.split_inclusive('\n').map(str::to_owned).collect();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(lines.len() + 1);
                    if at < lines.len() && rng.below(2) == 0 {
                        lines[at] = format!("edited by {c}\n");
                    } else {
                        lines.insert(at.min(lines.len()), format!("inserted by {c}\n"));
                    }
                }
                if rng.below(8) == 0
                    && let Some(last) = lines.last_mut()
                {
                    *last = last.trim_end_matches('\n').to_owned();
                }
                std::fs::write(&path, lines.concat()).unwrap();
            }
        }
        let (name, email) = authors[c % authors.len()];
        let date = format!("2026-11-{:02}T{:02}:00:00+0{}00", 1 + c % 28, c % 24, c % 9);
        git(dir, &["add", "-A"]);
        git_env(
            dir,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("change {c}: op {op}"),
                "-m",
                &format!("Body of change {c}.\n\nSigned-off-by: {name} <{email}>"),
            ],
            &[
                ("GIT_AUTHOR_NAME", name),
                ("GIT_AUTHOR_EMAIL", email),
                ("GIT_AUTHOR_DATE", &date),
            ],
        );
    }
}

#[test]
fn same_trees_authors_and_messages_as_git_am() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    generate_history(&src, 300);
    let patches = tmp.path().join("patches");
    git_env(
        &src,
        &[
            "format-patch",
            "-q",
            "--binary",
            "-o",
            patches.to_str().unwrap(),
            "base..master",
        ],
        &[],
    );
    let mut files: Vec<String> = std::fs::read_dir(&patches)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();

    // git am in a clone with a work tree.
    let theirs = tmp.path().join("theirs");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "-b",
            "base",
            src.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ],
    );
    let mut am: Vec<&str> = vec!["am", "-q"];
    am.extend(files.iter().map(String::as_str));
    git(&theirs, &am);

    // patchline am in a bare clone of the base history only: the objects
    // it writes are new to the repository, as mailed patches' are.
    let ours = tmp.path().join("ours.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            "--single-branch",
            "-b",
            "base",
            src.to_str().unwrap(),
            ours.to_str().unwrap(),
        ],
    );
    git(&ours, &["update-ref", "refs/heads/master", "base"]);
    let count = |what: &str| -> String {
        git(&ours, &["count-objects", "-v"])
            .lines()
            .find_map(|l| l.strip_prefix(what).map(str::to_owned))
            .unwrap()
    };
    let (loose_before, packs_before) = (count("count: "), count("packs: "));
    let mut args = vec![
        "am",
        "--json",
        "--repo",
        ours.to_str().unwrap(),
        "--branch",
        "master",
    ];
    args.extend(files.iter().map(String::as_str));
    let patchline_am = |args: &[&str]| {
        std::process::Command::new(crate::util::patchline_bin())
            .args(args)
            .env("GIT_COMMITTER_NAME", "Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.org")
            .output()
            .unwrap()
    };
    let ran = patchline_am(&args);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&ran.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len() + 1);
    assert_eq!(lines.last().unwrap()["applied"], files.len());

    let log = |dir: &Path, range: &str| {
        git(
            dir,
            &[
                "log",
                "--format=%T%x00%an%x00%ae%x00%ad%x00%B%x01",
                "--date=raw",
                range,
            ],
        )
    };
    let (a, b) = (
        log(&theirs, "origin/base..HEAD"),
        log(&ours, "base..master"),
    );
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('\u{1}').collect(), b.split('\u{1}').collect());
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x, y,
            "commit {i} from the top differs (tree, author, date or message)"
        );
    }
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(line["file"], file.as_str());
        assert_eq!(line["ok"], true);
    }
    // The objects patchline wrote are valid for git itself; a series this
    // large is written as one pack, not as loose files.
    git(&ours, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(count("count: "), loose_before, "no loose objects added");
    assert_eq!(
        count("packs: ").parse::<u32>().unwrap(),
        packs_before.parse::<u32>().unwrap() + 1
    );
    // Patched blobs are deltas against the blobs they were patched from.
    let newest = std::fs::read_dir(ours.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let listing = git(&ours, &["verify-pack", "-v", newest.to_str().unwrap()]);
    let deltas = listing
        .lines()
        .filter(|l| l.split_whitespace().count() == 7)
        .count();
    assert!(deltas > 100, "{deltas} deltas in the series' pack");

    // The same series ending in a file that cannot be read: exit 2, the
    // branch where it was, no pack and no temporary file left behind
    // (the series' pack was being written while it was applied).
    git(&ours, &["update-ref", "refs/heads/again", "base"]);
    let pack_dir = ours.join("objects/pack");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let missing = tmp.path().join("missing.patch");
    let mut args = vec!["am", "--repo", ours.to_str().unwrap(), "--branch", "again"];
    args.extend(files.iter().map(String::as_str));
    args.push(missing.to_str().unwrap());
    let ran = patchline_am(&args);
    assert_eq!(ran.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.patch"),
        "{stderr}"
    );
    assert_eq!(listing(), before);
    assert_eq!(
        git(&ours, &["rev-parse", "again"]),
        git(&ours, &["rev-parse", "base"])
    );
}

#[test]
fn a_failing_patch_leaves_the_branch_and_names_file_and_hunk() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    git(&src, &["branch", "base"]);
    std::fs::write(src.join("b.txt"), "new\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "first applies"]);
    std::fs::write(src.join("a.txt"), "one\nTWO\nthree\n").unwrap();
    git(&src, &["commit", "-q", "-am", "second conflicts"]);
    let patches = tmp.path().join("p");
    git_env(
        &src,
        &[
            "format-patch",
            "-q",
            "-o",
            patches.to_str().unwrap(),
            "base..master",
        ],
        &[],
    );
    let repo = tmp.path().join("r.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            repo.to_str().unwrap(),
        ],
    );
    // The target branch moved on: line two differs, so patch 2 cannot apply.
    let work = tmp.path().join("w");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "-b",
            "base",
            src.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("a.txt"), "one\n2\nthree\n").unwrap();
    git(&work, &["commit", "-q", "-am", "diverge"]);
    git(
        &work,
        &[
            "push",
            "-q",
            repo.to_str().unwrap(),
            "HEAD:refs/heads/target",
        ],
    );
    let before = git(&repo, &["rev-parse", "target"]);
    let mut files: Vec<String> = std::fs::read_dir(&patches)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    let mut args = vec![
        "am",
        "--json",
        "--repo",
        repo.to_str().unwrap(),
        "--branch",
        "target",
    ];
    args.extend(files.iter().map(String::as_str));
    let ran = patchline(tmp.path(), &args).fails_with(1);
    assert_eq!(
        git(&repo, &["rev-parse", "target"]),
        before,
        "the branch must not move"
    );
    let lines: Vec<serde_json::Value> = ran
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["ok"], false);
    let error = &lines[1]["error"];
    assert_eq!(error["path"], "a.txt");
    assert_eq!(error["hunk"], "@@ -1,3 +1,3 @@");
    assert_eq!(error["expected"][1], "two");
    assert_eq!(error["found"][1], "2");
    assert!(lines[2]["new_tip"].is_null());
    assert_eq!(lines[2]["applied"], 0);
    // git apply agrees that it does not apply.
    let check = std::process::Command::new("git")
        .args(["apply", "--check", &files[1]])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(!check.status.success());
    // A missing branch is a usage error naming it.
    let ran = patchline(
        tmp.path(),
        &[
            "am",
            "--repo",
            repo.to_str().unwrap(),
            "--branch",
            "nope",
            &files[0],
        ],
    )
    .fails_with(2);
    assert!(
        ran.stderr().contains("\"nope\" does not exist"),
        "{}",
        ran.describe()
    );
}

/// Each way a patch can fail: `patchline am` and `git apply --cached
/// --check` give the same verdict, and ours names the file.
#[test]
fn failure_verdicts_match_git_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    let bin_a: Vec<u8> = (0..3000u32)
        .flat_map(|i| i.wrapping_mul(2654435761u32).to_le_bytes())
        .collect();
    std::fs::write(src.join("exists.txt"), "here\n").unwrap();
    std::fs::write(src.join("blob.bin"), &bin_a).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    // Patches made against other trees than the target's.
    let make = |name: &str, change: &dyn Fn(&Path)| -> PathBuf {
        git(&src, &["checkout", "-q", "-B", name, &base]);
        change(&src);
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", name]);
        let out = tmp.path().join(format!("{name}.patch"));
        let patch = git(&src, &["format-patch", "--binary", "--stdout", "-1"]);
        std::fs::write(&out, patch).unwrap();
        out
    };
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            make("missing-file", &|p| {
                std::fs::write(p.join("only-here.txt"), "a\n").unwrap();
                git(p, &["add", "-A"]);
                git(p, &["commit", "-q", "-m", "x"]);
                std::fs::write(p.join("only-here.txt"), "b\n").unwrap();
            }),
            "only-here.txt",
            "does not exist",
        ),
        (
            make("file-exists", &|p| {
                git(p, &["rm", "-q", "exists.txt"]);
                git(p, &["commit", "-q", "-m", "x"]);
                std::fs::write(p.join("exists.txt"), "again\n").unwrap();
            }),
            "exists.txt",
            "already exists",
        ),
        (
            make("bad-binary", &|p| {
                let mut other = bin_a.clone();
                other[10] ^= 1;
                std::fs::write(p.join("blob.bin"), &other).unwrap();
                git(p, &["commit", "-q", "-am", "x"]);
                other[2000] ^= 1;
                std::fs::write(p.join("blob.bin"), &other).unwrap();
            }),
            "blob.bin",
            "does not match",
        ),
    ];
    for (patch, path, message) in cases {
        let target = tmp.path().join(format!(
            "t-{}",
            patch.file_stem().unwrap().to_string_lossy()
        ));
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                target.to_str().unwrap(),
            ],
        );
        git(&target, &["update-ref", "refs/heads/master", &base]);
        let ran = patchline(
            tmp.path(),
            &[
                "am",
                "--json",
                "--repo",
                target.to_str().unwrap(),
                "--branch",
                "master",
                patch.to_str().unwrap(),
            ],
        )
        .fails_with(1);
        let first: serde_json::Value =
            serde_json::from_str(ran.stdout().lines().next().unwrap()).unwrap();
        assert_eq!(first["error"]["path"], path, "{}", ran.describe());
        let text = first["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{text}");
        assert_eq!(git(&target, &["rev-parse", "master"]).trim(), base);
        // git agrees: the same patch does not apply to the same tree.
        let work = tmp.path().join(format!("w-{path}"));
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                target.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        let check = std::process::Command::new("git")
            .args(["apply", "--cached", "--check", patch.to_str().unwrap()])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(
            !check.status.success(),
            "git apply accepted {}",
            patch.display()
        );
    }
}

/// `--3way`: a patch whose context moved under it merges like `git am -3`
/// (same tree); a real conflict fails for both, naming the file.
#[test]
fn three_way_fallback_merges_like_git_am() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    let lines: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    std::fs::write(src.join("f.txt"), &lines).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    // The patch changes line 10 (context 7..13).
    git(&src, &["checkout", "-q", "-b", "topic"]);
    std::fs::write(src.join("f.txt"), lines.replace("line 10\n", "line ten\n")).unwrap();
    git(&src, &["commit", "-q", "-am", "ten"]);
    let patch = tmp.path().join("ten.patch");
    std::fs::write(&patch, git(&src, &["format-patch", "--stdout", "-1"])).unwrap();
    for (name, change, merges) in [
        ("clean", "line 8\n", true),
        ("conflict", "line 10\n", false),
    ] {
        // The target changed a context line (clean) or the same line.
        git(&src, &["checkout", "-q", "-B", name, &base]);
        std::fs::write(
            src.join("f.txt"),
            lines.replace(change, "changed on target\n"),
        )
        .unwrap();
        git(&src, &["commit", "-q", "-am", name]);
        let ours = tmp.path().join(format!("{name}.git"));
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                ours.to_str().unwrap(),
            ],
        );
        let without = patchline(
            tmp.path(),
            &[
                "am",
                "--repo",
                ours.to_str().unwrap(),
                "--branch",
                name,
                patch.to_str().unwrap(),
            ],
        );
        assert_eq!(
            without.code(),
            1,
            "no 3-way: context mismatch\n{}",
            without.describe()
        );
        let ran = patchline(
            tmp.path(),
            &[
                "am",
                "--json",
                "--3way",
                "--repo",
                ours.to_str().unwrap(),
                "--branch",
                name,
                patch.to_str().unwrap(),
            ],
        );
        let theirs = tmp.path().join(format!("{name}-work"));
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "-b",
                name,
                src.to_str().unwrap(),
                theirs.to_str().unwrap(),
            ],
        );
        let git_am = std::process::Command::new("git")
            .args(["am", "-q", "-3", patch.to_str().unwrap()])
            .env("GIT_COMMITTER_NAME", "C")
            .env("GIT_COMMITTER_EMAIL", "c@example.org")
            .current_dir(&theirs)
            .output()
            .unwrap();
        assert_eq!(git_am.status.success(), merges, "git am -3 on {name}");
        if merges {
            assert_eq!(ran.code(), 0, "{}", ran.describe());
            assert_eq!(
                git(&ours, &["rev-parse", &format!("{name}^{{tree}}")]),
                git(&theirs, &["rev-parse", "HEAD^{tree}"]),
                "same merged tree as git am -3"
            );
        } else {
            assert_eq!(ran.code(), 1, "{}", ran.describe());
            assert!(
                ran.stdout().contains("leaves conflicts") && ran.stdout().contains("f.txt"),
                "{}",
                ran.describe()
            );
        }
    }
}

/// `--base` (a series' `base-commit:`): a series made on an older commit,
/// whose context the branch has changed since, applies to its base and is
/// merged onto the branch patch by patch; the trees are those of `git
/// rebase --onto <branch> <base>` of the same commits (git's merge-ort).
/// Where the branch changed the same lines, nothing moves and the conflict
/// names the file.
#[test]
fn a_series_applies_from_its_base_commit_like_git_rebase() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q", "-b", "master"]);
    let lines: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    std::fs::write(src.join("f.txt"), &lines).unwrap();
    std::fs::write(src.join("g.txt"), "g\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    let base = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    // The series: line 10, a new file, line 25.
    git(&src, &["checkout", "-q", "-b", "topic"]);
    std::fs::write(src.join("f.txt"), lines.replace("line 10\n", "line ten\n")).unwrap();
    git(&src, &["commit", "-q", "-am", "ten"]);
    std::fs::write(src.join("h.txt"), "new\n").unwrap();
    git(&src, &["add", "h.txt"]);
    git(&src, &["commit", "-q", "-m", "add h"]);
    let now = std::fs::read_to_string(src.join("f.txt")).unwrap();
    std::fs::write(
        src.join("f.txt"),
        now.replace("line 25\n", "line twenty-five\n"),
    )
    .unwrap();
    git(&src, &["commit", "-q", "-am", "twenty-five"]);
    let series = tmp.path().join("series");
    git(
        &src,
        &[
            "format-patch",
            "-q",
            "--base",
            &base,
            "-o",
            series.to_str().unwrap(),
            "master..topic",
        ],
    );
    let mut patches: Vec<String> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    patches.sort();
    assert_eq!(patches.len(), 3);
    for (name, change, merges) in [
        ("clean", "line 8\n", true),
        ("conflict", "line 10\n", false),
    ] {
        // The branch moved on from the base: a context line of patch 1
        // (clean) or its very line (conflict), and a file of its own.
        git(&src, &["checkout", "-q", "-B", name, &base]);
        std::fs::write(
            src.join("f.txt"),
            lines.replace(change, "changed on the branch\n"),
        )
        .unwrap();
        std::fs::write(src.join("t.txt"), "t\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", name]);
        let ours = tmp.path().join(format!("{name}.git"));
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                ours.to_str().unwrap(),
            ],
        );
        let tip = git(&ours, &["rev-parse", name]);
        let am = |extra: &[&str]| {
            let mut args = vec![
                "am",
                "--json",
                "--repo",
                ours.to_str().unwrap(),
                "--branch",
                name,
            ];
            args.extend_from_slice(extra);
            args.extend(patches.iter().map(String::as_str));
            patchline(tmp.path(), &args)
        };
        let on_tip = am(&[]);
        assert_eq!(
            on_tip.code(),
            1,
            "on the tip: context mismatch\n{}",
            on_tip.describe()
        );
        let from_base = am(&["--base", &base]);
        if merges {
            assert_eq!(from_base.code(), 0, "{}", from_base.describe());
            // git: the same commits rebased onto the branch.
            let work = tmp.path().join(format!("{name}-work"));
            git(
                tmp.path(),
                &["clone", "-q", src.to_str().unwrap(), work.to_str().unwrap()],
            );
            git(&work, &["checkout", "-q", "-B", "topic", "origin/topic"]);
            git(
                &work,
                &[
                    "rebase",
                    "-q",
                    "--onto",
                    &format!("origin/{name}"),
                    &base,
                    "topic",
                ],
            );
            let ours_log = git(
                &ours,
                &[
                    "log",
                    "--format=%T %an <%ae> %s",
                    &format!("{base}..{name}"),
                ],
            );
            let git_log = git(
                &work,
                &["log", "--format=%T %an <%ae> %s", &format!("{base}..topic")],
            );
            assert_eq!(
                ours_log, git_log,
                "same trees, authors and subjects as git rebase"
            );
            assert_eq!(ours_log.lines().count(), 4);
            assert_eq!(
                git(&ours, &["rev-parse", &format!("{name}~3")]),
                tip,
                "on the tip"
            );
            git(&ours, &["fsck", "--strict"]);
        } else {
            assert_eq!(from_base.code(), 1, "{}", from_base.describe());
            assert!(
                from_base
                    .stdout()
                    .contains("conflicts with the branch in f.txt"),
                "{}",
                from_base.describe()
            );
            assert_eq!(git(&ours, &["rev-parse", name]), tip, "branch untouched");
        }
    }
    // A base the repository does not have is named.
    let ours = tmp.path().join("clean.git");
    let ran = patchline(
        tmp.path(),
        &[
            "am",
            "--repo",
            ours.to_str().unwrap(),
            "--branch",
            "clean",
            "--base",
            "0123456789012345678901234567890123456789",
            &patches[0],
        ],
    );
    assert_eq!(ran.code(), 2, "{}", ran.describe());
    assert!(
        ran.stderr()
            .contains("0123456789012345678901234567890123456789"),
        "{}",
        ran.describe()
    );
}
