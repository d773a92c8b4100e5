//! `git am` as the oracle for the engine's verdicts: for each generated
//! case (symlinks, gitlinks, mode changes, renames and copies onto existing
//! paths, NUL and control bytes in headers, malformed `From:` values), the
//! same mail goes to `git am` in a work clone and to `patchline am` in a
//! bare clone; both must make the same commit (tree, author, message) or
//! both refuse, ours naming the file and leaving the branch alone.

use crate::util::{git, patchline_bin};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// One case: what the base commit holds, and the mail to apply to it.
struct Case {
    name: &'static str,
    /// Writes the base tree in the work tree `src` (committed as `base`).
    base: fn(&Path),
    /// Makes the mail, given `src` at `base`.
    mail: fn(&Path) -> Vec<u8>,
    /// For a refusal: the file our message must name.
    names: Option<&'static str>,
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn chmod(dir: &Path, path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn plain_base(src: &Path) {
    write(src, "a.txt", "one\ntwo\nthree\n");
    write(src, "b.txt", "bee\n");
}

fn symlink_base(src: &Path) {
    plain_base(src);
    symlink("a.txt", src.join("link")).unwrap();
}

fn gitlink_base(src: &Path) {
    plain_base(src);
    gitlink(src, "sub", "1234567890123456789012345678901234567890");
}

fn exec_base(src: &Path) {
    plain_base(src);
    chmod(src, "b.txt", 0o755);
}

/// Sets a gitlink in the index (no submodule needed to mail one); the
/// empty directory is what an unpopulated submodule looks like, so
/// `git add -A` keeps the entry.
fn gitlink(src: &Path, path: &str, id: &str) {
    std::fs::create_dir_all(src.join(path)).unwrap();
    git(
        src,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{id},{path}"),
        ],
    );
}

/// Commits what the work tree and index hold now and mails it as
/// `git format-patch` does (copies found with `-C -C`).
fn commit_and_mail(src: &Path, subject: &str) -> Vec<u8> {
    git(src, &["add", "-A"]);
    git(src, &["commit", "-q", "--allow-empty", "-m", subject]);
    let out = Command::new("git")
        .args(["format-patch", "--stdout", "-C", "-C", "--binary", "-1"])
        .current_dir(src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A small edit of `a.txt` mailed, with `header` set to `value` (raw
/// bytes: NUL and control bytes go into the mail as they are).
fn edit_with_header(src: &Path, header: &str, value: &[u8]) -> Vec<u8> {
    write(src, "a.txt", "one\nTWO\nthree\n");
    let mail = commit_and_mail(src, "Edit a.txt");
    let mut out = Vec::new();
    let prefix = format!("{header}: ");
    let mut replaced = false;
    for line in mail.split_inclusive(|b| *b == b'\n') {
        if !replaced && line.starts_with(prefix.as_bytes()) {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(value);
            out.push(b'\n');
            replaced = true;
        } else {
            out.extend_from_slice(line);
        }
    }
    assert!(replaced, "no {header} header in the mail");
    out
}

/// A hand-made git diff mail (what format-patch cannot make: a patch that
/// conflicts with the tree it is mailed for).
fn hand_made(diff: &str) -> Vec<u8> {
    format!(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: Ada Lovelace <ada@example.org>\nDate: Tue, 24 Nov 2026 09:00:00 +0000\nSubject: [PATCH] Hand made\n\nA patch made by hand.\n---\n{diff}-- \n2.47.3\n"
    )
    .into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a symlink is added",
            base: plain_base,
            mail: |src| {
                symlink("b.txt", src.join("new-link")).unwrap();
                commit_and_mail(src, "Add a link")
            },
            names: None,
        },
        Case {
            name: "a symlink changes its target",
            base: symlink_base,
            mail: |src| {
                std::fs::remove_file(src.join("link")).unwrap();
                symlink("b.txt", src.join("link")).unwrap();
                commit_and_mail(src, "Retarget the link")
            },
            names: None,
        },
        Case {
            name: "a file under a symlink (symlink as a directory)",
            base: symlink_base,
            mail: |_| {
                hand_made(
                    "diff --git a/link/file b/link/file\nnew file mode 100644\nindex 0000000..587be6b\n--- /dev/null\n+++ b/link/file\n@@ -0,0 +1 @@\n+x\n",
                )
            },
            names: Some("link/file"),
        },
        Case {
            name: "a file under a file",
            base: plain_base,
            mail: |_| {
                hand_made(
                    "diff --git a/a.txt/file b/a.txt/file\nnew file mode 100644\nindex 0000000..587be6b\n--- /dev/null\n+++ b/a.txt/file\n@@ -0,0 +1 @@\n+x\n",
                )
            },
            names: Some("a.txt/file"),
        },
        Case {
            name: "the symlink deleted and a directory in its place",
            base: symlink_base,
            mail: |src| {
                std::fs::remove_file(src.join("link")).unwrap();
                write(src, "link/file", "x\n");
                commit_and_mail(src, "Link becomes a directory")
            },
            names: None,
        },
        Case {
            name: "a gitlink is added",
            base: plain_base,
            mail: |src| {
                gitlink(src, "sub", "1234567890123456789012345678901234567890");
                commit_and_mail(src, "Add a submodule")
            },
            names: None,
        },
        Case {
            name: "a gitlink moves to another commit",
            base: gitlink_base,
            mail: |src| {
                gitlink(src, "sub", "abcdefabcdefabcdefabcdefabcdefabcdefabcd");
                commit_and_mail(src, "Move the submodule")
            },
            names: None,
        },
        Case {
            name: "a gitlink is deleted",
            base: gitlink_base,
            mail: |src| {
                git(src, &["rm", "-q", "--cached", "sub"]);
                commit_and_mail(src, "Drop the submodule")
            },
            names: None,
        },
        Case {
            name: "a gitlink patch from another commit does not apply",
            base: gitlink_base,
            mail: |_| {
                hand_made(
                    "diff --git a/sub b/sub\nindex 1111111..abcdefa 160000\n--- a/sub\n+++ b/sub\n@@ -1 +1 @@\n-Subproject commit 1111111111111111111111111111111111111111\n+Subproject commit abcdefabcdefabcdefabcdefabcdefabcdefabcd\n",
                )
            },
            names: Some("sub"),
        },
        Case {
            name: "mode 644 to 755",
            base: plain_base,
            mail: |src| {
                chmod(src, "b.txt", 0o755);
                commit_and_mail(src, "Make b executable")
            },
            names: None,
        },
        Case {
            name: "mode 755 to 644 with an edit",
            base: exec_base,
            mail: |src| {
                chmod(src, "b.txt", 0o644);
                write(src, "b.txt", "bee\nsting\n");
                commit_and_mail(src, "b is not a program")
            },
            names: None,
        },
        Case {
            name: "a file becomes a symlink",
            base: plain_base,
            mail: |src| {
                std::fs::remove_file(src.join("b.txt")).unwrap();
                symlink("a.txt", src.join("b.txt")).unwrap();
                commit_and_mail(src, "b is a link")
            },
            names: None,
        },
        Case {
            name: "a symlink becomes a file",
            base: symlink_base,
            mail: |src| {
                std::fs::remove_file(src.join("link")).unwrap();
                write(src, "link", "now a file\n");
                commit_and_mail(src, "link is a file")
            },
            names: None,
        },
        Case {
            name: "a rename",
            base: plain_base,
            mail: |src| {
                std::fs::rename(src.join("a.txt"), src.join("c.txt")).unwrap();
                commit_and_mail(src, "Rename a")
            },
            names: None,
        },
        Case {
            name: "a rename onto an existing path",
            base: plain_base,
            mail: |_| {
                hand_made(
                    "diff --git a/a.txt b/b.txt\nsimilarity index 100%\nrename from a.txt\nrename to b.txt\n",
                )
            },
            names: Some("b.txt"),
        },
        Case {
            name: "a copy",
            base: plain_base,
            mail: |src| {
                write(src, "c.txt", "one\ntwo\nthree\n");
                commit_and_mail(src, "Copy a")
            },
            names: None,
        },
        Case {
            name: "a copy onto an existing path",
            base: plain_base,
            mail: |_| {
                hand_made(
                    "diff --git a/a.txt b/b.txt\nsimilarity index 100%\ncopy from a.txt\ncopy to b.txt\n",
                )
            },
            names: Some("b.txt"),
        },
        Case {
            name: "a NUL byte in the subject",
            base: plain_base,
            mail: |src| edit_with_header(src, "Subject", b"[PATCH] Edit\0 hidden"),
            names: None,
        },
        Case {
            name: "a NUL byte encoded in the subject",
            base: plain_base,
            mail: |src| edit_with_header(src, "Subject", b"[PATCH] =?utf-8?q?a=00b?="),
            names: None,
        },
        Case {
            name: "a NUL byte encoded in the From name",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"=?utf-8?q?A=00da?= <ada@example.org>"),
            names: None,
        },
        Case {
            name: "control bytes in the subject",
            base: plain_base,
            mail: |src| edit_with_header(src, "Subject", b"[PATCH] Edit \x01\x07 bell"),
            names: None,
        },
        Case {
            name: "a control byte in the From name",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Ada \x07Lovelace <ada@example.org>"),
            names: None,
        },
        Case {
            name: "a NUL byte after the From address",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Ada <ada@example.org>\0junk"),
            names: None,
        },
        Case {
            name: "a NUL byte before the From address",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Ada\0 <ada@example.org>"),
            names: None,
        },
        Case {
            name: "From: Name <Name user@example.org>",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Name <Name user@example.org>"),
            names: None,
        },
        Case {
            name: "From: a bare address",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"user@example.org"),
            names: None,
        },
        Case {
            name: "From: a name and an address without brackets",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Ada Lovelace ada@example.org"),
            names: None,
        },
        Case {
            name: "From: a quoted name with a comma",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"\"Lovelace, Ada\" <ada@example.org>"),
            names: None,
        },
        Case {
            name: "From: a name with a comment",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Ada (the first) <ada@example.org>"),
            names: None,
        },
        Case {
            name: "From: an encoded word in a charset nobody knows",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"=?x-bogus?Q?Caf=E9?= <cafe@example.org>"),
            names: None,
        },
        Case {
            name: "Subject: an encoded word in a charset nobody knows",
            base: plain_base,
            mail: |src| edit_with_header(src, "Subject", b"[PATCH] =?x-bogus?Q?Caf=E9?="),
            names: None,
        },
        Case {
            name: "From: an encoded word in Latin-1",
            base: plain_base,
            mail: |src| {
                edit_with_header(src, "From", b"=?iso-8859-1?Q?Jos=E9?= <jose@example.org>")
            },
            names: None,
        },
        Case {
            name: "From: broken base64",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"=?utf-8?B?!!!?= <b@example.org>"),
            names: None,
        },
        Case {
            name: "From: a name in single quotes, a trailing comma",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"'Ada Lovelace' <ada@example.org>,"),
            names: None,
        },
        Case {
            name: "From: dots around the name and the address",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b".Ada Jr. <ada@example.org.>"),
            names: None,
        },
        Case {
            name: "From: a name without an address",
            base: plain_base,
            mail: |src| edit_with_header(src, "From", b"Just A Name"),
            names: None,
        },
    ]
}

/// What a tool made of the mail: the commit's `%T %an %ae %B`, or a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Commit(String),
    Refused,
}

const LOG: &str = "--format=%T%n%an%n%ae%n%B";

fn git_am(tmp: &Path, src: &Path, mail: &Path) -> Verdict {
    let work = tmp.join("theirs");
    git(
        tmp,
        &[
            "clone",
            "-q",
            "-b",
            "base",
            src.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let ran = Command::new("git")
        .args(["am", "-q", mail.to_str().unwrap()])
        .current_dir(&work)
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .output()
        .unwrap();
    if ran.status.success() {
        Verdict::Commit(git(&work, &["log", "-1", LOG]))
    } else {
        Verdict::Refused
    }
}

fn patchline_am(tmp: &Path, src: &Path, mail: &Path, case: &Case) -> Verdict {
    let bare = tmp.join("ours.git");
    git(
        tmp,
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            "-b",
            "base",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let before = git(&bare, &["rev-parse", "base"]);
    let ran = crate::util::run_in(
        tmp,
        &patchline_bin(),
        &[
            "am",
            "--json",
            "--repo",
            bare.to_str().unwrap(),
            "--branch",
            "base",
            mail.to_str().unwrap(),
        ],
    );
    match ran.code() {
        0 => {
            // Whatever git makes, ours must pass the strictest fsck.
            git(&bare, &["fsck", "--strict", "--no-dangling"]);
            Verdict::Commit(git(&bare, &["log", "-1", LOG, "base"]))
        }
        1 => {
            assert_eq!(
                git(&bare, &["rev-parse", "base"]),
                before,
                "{}: the branch moved",
                case.name
            );
            let first: serde_json::Value =
                serde_json::from_str(ran.stdout().lines().next().unwrap_or("")).unwrap();
            let message = first["error"]["message"].as_str().unwrap_or("");
            assert!(
                !message.is_empty(),
                "{}: no message\n{}",
                case.name,
                ran.describe()
            );
            if let Some(file) = case.names {
                assert!(
                    message.contains(file) || first["error"]["path"] == file,
                    "{}: the message does not name {file}\n{}",
                    case.name,
                    ran.describe()
                );
            }
            Verdict::Refused
        }
        _ => panic!("{}: unexpected exit\n{}", case.name, ran.describe()),
    }
}

#[test]
fn same_verdicts_as_git_am_on_generated_cases() {
    let mut differ = Vec::new();
    for case in cases() {
        // A tempdir per case, dropped at once: nothing accumulates.
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        git(&src, &["init", "-q"]);
        (case.base)(&src);
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", "base"]);
        git(&src, &["branch", "base"]);
        let mail = tmp.path().join("case.patch");
        std::fs::write(&mail, (case.mail)(&src)).unwrap();
        let theirs = git_am(tmp.path(), &src, &mail);
        let ours = patchline_am(tmp.path(), &src, &mail, &case);
        // The table in docs/apply.md (`--nocapture` shows it).
        eprintln!(
            "| {} | {} |",
            case.name,
            if ours == Verdict::Refused {
                "refused"
            } else {
                "applied"
            }
        );
        if theirs != ours {
            differ.push(format!(
                "{}:\n  git am:    {theirs:?}\n  patchline: {ours:?}",
                case.name
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "verdicts differ from git am:\n{}",
        differ.join("\n")
    );
}

/// What `patchline am` says when it refuses before or instead of a patch:
/// a bad `--branch` is named, a mail without a diff is named by its
/// subject (never a bare `Applying:` line).
#[test]
fn refusals_name_the_branch_and_the_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    plain_base(&src);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    let mail = tmp.path().join("talk.eml");
    std::fs::write(
        &mail,
        "From: Ada <ada@example.org>\nSubject: [PATCH] Only talk\nDate: Tue, 24 Nov 2026 09:00:00 +0000\n\nNo diff here.\n",
    )
    .unwrap();
    let repo = src.to_str().unwrap();
    for branch in ["-x", "../x", "a..b", ""] {
        let ran = crate::util::run_in(
            tmp.path(),
            &patchline_bin(),
            &[
                "am",
                "--repo",
                repo,
                &format!("--branch={branch}"),
                mail.to_str().unwrap(),
            ],
        )
        .fails_with(2);
        assert!(
            ran.stderr()
                .contains(&format!("--branch {branch:?} is not a valid branch name")),
            "{}",
            ran.describe()
        );
    }
    let ran = crate::util::run_in(
        tmp.path(),
        &patchline_bin(),
        &[
            "am",
            "--repo",
            repo,
            "--branch",
            "master",
            mail.to_str().unwrap(),
        ],
    )
    .fails_with(1);
    let out = ran.stdout();
    assert!(
        out.starts_with("Applying: Only talk\nerror: "),
        "{}",
        ran.describe()
    );
    assert!(
        out.contains("\"Only talk\" has no patch"),
        "{}",
        ran.describe()
    );
}

/// `git mailinfo` itself as the oracle for the author of malformed `From:`
/// headers: for each value, the name and address git reads (its `Author:`
/// and `Email:` lines, the name as git am then commits it) must be ours,
/// and a value git reads no address from must be refused by ours.
#[test]
fn malformed_from_headers_read_as_git_mailinfo_reads_them() {
    let values: &[&[u8]] = &[
        b"Ada Lovelace <ada@example.org>",
        b"Name <Name user@example.org>",
        b"user@example.org",
        b"<ada@example.org>",
        b"Ada Lovelace ada@example.org",
        b"ada@example.org (Ada Lovelace)",
        b"\"Lovelace, Ada\" <ada@example.org>",
        b"\"Ada \\\"The\\\" Lovelace\" <ada@example.org>",
        b"\"\" <ada@example.org>",
        b"Ada (the first) <ada@example.org>",
        b"Ada <ada@example.org> (comment)",
        b"Ada <ada@example.org>, Bob <bob@example.org>",
        b"Ada Lovelace <ada@example.org",
        b"Ada Lovelace ada@example.org>",
        b"Ada\t<ada@example.org>",
        b"  Ada   Lovelace   <ada@example.org>  ",
        b"Ada <ADA@Example.ORG>",
        b"'Ada Lovelace' <ada@example.org>,",
        b".Ada Jr. <ada@example.org.>",
        b"=?utf-8?q?Ada_Lovelace?= <ada@example.org>",
        b"=?utf-8?b?QWRhIExvdmVsYWNl?= <ada@example.org>",
        b"=?utf-8?Q?Ada?= =?utf-8?Q?_Lovelace?= <ada@example.org>",
        b"=?iso-8859-1?Q?Jos=E9?= <jose@example.org>",
        b"=?x-bogus?Q?Caf=E9?= <cafe@example.org>",
        b"=?utf-8?B?!!!?= <b@example.org>",
        b"Ada <>",
        b"Just A Name",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut differ = Vec::new();
    for value in values {
        let mut mail = b"From: ".to_vec();
        mail.extend_from_slice(value);
        mail.extend_from_slice(
            b"\nDate: Tue, 24 Nov 2026 09:00:00 +0000\nSubject: [PATCH] Edit\n\nWhy.\n---\n \
a | 2 +-\n\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-x\n+y\n-- \n2.47.3\n",
        );
        let out = Command::new("git")
            .args(["mailinfo", "msg", "patch"])
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&mail)?;
                child.wait_with_output()
            })
            .expect("git mailinfo runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        // What git am commits is mailinfo's name after ident.c's crud
        // removal (`,:;<>"\'` and bytes up to space at either end), as for
        // `'Ada Lovelace' <ada@example.org>,`: mailinfo prints
        // `'Ada Lovelace' ,`, the commit says `Ada Lovelace`.
        let crud = |c: char| c <= ' ' || ",:;<>\"\\'".contains(c);
        let git = (out.status.success() && !field("Email: ").is_empty()).then(|| {
            (
                field("Author: ").trim_matches(crud).to_owned(),
                field("Email: "),
            )
        });
        let ours = patchline::patch::mailinfo::mailinfo(&mail, Default::default())
            .ok()
            .map(|info| (info.author_name, info.author_email));
        if git != ours {
            differ.push(format!(
                "From: {}\n  git mailinfo: {git:?}\n  patchline:    {ours:?}",
                String::from_utf8_lossy(value)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
