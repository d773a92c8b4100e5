//! Shared test plumbing: running the `patchline` binary and `git`, with
//! failures that print the command, its directory, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn patchline_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_patchline"))
}

/// Output of a finished command, with everything needed to debug it.
pub struct Ran {
    pub cmd: String,
    pub cwd: PathBuf,
    pub output: Output,
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn describe(&self) -> String {
        format!(
            "command: {}\ncwd: {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd,
            self.cwd.display(),
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert!(
            self.output.status.success(),
            "command failed\n{}",
            self.describe()
        );
        self.stdout()
    }
    /// Asserts exit code `code`.
    pub fn fails_with(self, code: i32) -> Ran {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n{}",
            self.describe()
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout().trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value: {e}\n{}", self.describe()))
    }
}

pub fn run_in(cwd: &Path, program: &Path, args: &[&str]) -> Ran {
    run_in_env(cwd, program, args, &[])
}

pub fn run_in_env(cwd: &Path, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .env_remove("PATCHLINE_CONFIG")
        // The machine may have no user.name (CI): the committer of `am`.
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .output()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", program.display()));
    Ran {
        cmd: format!("{} {}", program.display(), args.join(" ")),
        cwd: cwd.to_path_buf(),
        output,
    }
}

pub fn patchline(cwd: &Path, args: &[&str]) -> Ran {
    run_in(cwd, &patchline_bin(), args)
}

/// Runs git with a fixed identity and dates, so results are reproducible.
pub fn git(cwd: &Path, args: &[&str]) -> String {
    git_env(cwd, args, &[])
}

/// `git` with extra environment variables, set last (they override the
/// fixed identity and dates).
pub fn git_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=master",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.org")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .env("GIT_AUTHOR_DATE", "2026-11-24T09:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-24T09:00:00Z")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot spawn git: {e}"));
    let ran = Ran {
        cmd: format!("git {}", args.join(" ")),
        cwd: cwd.to_path_buf(),
        output,
    };
    ran.ok()
}

/// A synthetic patch mail, shaped like `git format-patch --thread` output.
pub struct MailSpec<'a> {
    pub message_id: &'a str,
    pub subject: &'a str,
    pub from: &'a str,
    pub in_reply_to: Option<&'a str>,
    pub body: &'a str,
}

pub fn mail(spec: &MailSpec<'_>) -> String {
    let mut m = format!(
        "From: {}\nTo: list@example.org\nSubject: {}\nDate: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-Id: <{}>\n",
        spec.from, spec.subject, spec.message_id
    );
    if let Some(irt) = spec.in_reply_to {
        m.push_str(&format!("In-Reply-To: <{irt}>\nReferences: <{irt}>\n"));
    }
    m.push_str("MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\n");
    m.push_str(spec.body);
    if !m.ends_with('\n') {
        m.push('\n');
    }
    m
}

/// A body holding a small but real diff of `file`.
pub fn diff_body(file: &str, line: &str) -> String {
    format!(
        "Change {file}.\n\nSigned-off-by: Test Author <author@example.org>\n---\n {file} | 1 +\n 1 file changed, 1 insertion(+)\n\ndiff --git a/{file} b/{file}\nindex 1111111..2222222 100644\n--- a/{file}\n+++ b/{file}\n@@ -1 +1,2 @@\n first\n+{line}\n-- \n2.47.3\n"
    )
}

/// Joins mails into an mbox (mboxrd quoting).
pub fn mbox(mails: &[String]) -> String {
    let mut out = String::new();
    for m in mails {
        out.push_str("From mboxrd@z Thu Jan  1 00:00:00 1970\n");
        for line in m.split_inclusive('\n') {
            if line.trim_start_matches('>').starts_with("From ") {
                out.push('>');
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The spec of the `tiny` test package: noarch, one file from the tree.
pub const TINY_SPEC: &str = "Name: tiny\nVersion: 2.1\nRelease: 3%{?dist}\nSummary: test package\nLicense: MIT\nBuildArch: noarch\nSource0: %{name}-%{version}.tar.gz\n\n%description\nA test package.\n\n%prep\n%autosetup\n\n%build\n\n%install\ninstall -D -m 0644 greeting %{buildroot}/usr/share/tiny/greeting\n\n%files\n/usr/share/tiny/greeting\n";

/// In `p`: a work repository `src` (a `greeting` file and `tiny.spec` with
/// `spec`), and its bare clone `tiny.git`, the repository patchline
/// applies to. Returns `src`.
pub fn tiny_repo(p: &Path, spec: &str) -> PathBuf {
    let src = p.join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("tiny.spec"), spec).unwrap();
    std::fs::write(src.join("greeting"), "hello\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    git(
        p,
        &["clone", "-q", "--bare", src.to_str().unwrap(), "tiny.git"],
    );
    src
}

/// Mails the last `count` commits of `src` to the list `p/list.mbox` in
/// the team's `[master PATCH tiny]` form (`extra`: more format-patch
/// options, e.g. `--cover-letter`). Returns the mails.
pub fn post(p: &Path, src: &Path, count: usize, extra: &[&str]) -> String {
    use std::io::Write;
    let n = format!("-{count}");
    let mut args = vec![
        "format-patch",
        "--stdout",
        "--subject-prefix=master PATCH tiny",
    ];
    args.extend_from_slice(extra);
    args.push(&n);
    let mail = git(src, &args);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p.join("list.mbox"))
        .unwrap();
    f.write_all(mail.as_bytes()).unwrap();
    mail
}

/// Sets `greeting` to `text` in `src` and commits it as `subject`.
pub fn change_greeting(src: &Path, text: &str, subject: &str) {
    std::fs::write(src.join("greeting"), format!("{text}\n")).unwrap();
    git(src, &["commit", "-q", "-am", subject]);
}

/// In `p`: a work repository `src` (`a.txt`), its bare clone `hello.git`
/// at "base", and two commits on top of it in `src`. Returns the
/// two-patch series as `git format-patch --cover-letter --thread=shallow`
/// in the team's `[master PATCH hello]` form.
pub fn hello_series(p: &Path) -> String {
    let src = p.join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    git(
        p,
        &["clone", "-q", "--bare", src.to_str().unwrap(), "hello.git"],
    );
    std::fs::write(src.join("a.txt"), "one\nTWO\nthree\n").unwrap();
    git(&src, &["commit", "-q", "-am", "Shout two"]);
    std::fs::write(src.join("b.txt"), "bee\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "Add bee"]);
    format_series(&src, &[])
}

/// The last two commits of `src` as the team's `[master PATCH hello]`
/// series with a cover letter (`git format-patch --stdout`), with `extra`
/// format-patch options (e.g. `-v2`).
pub fn format_series(src: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "format-patch",
        "--stdout",
        "--cover-letter",
        "--thread=shallow",
        "--subject-prefix=master PATCH hello",
    ];
    args.extend_from_slice(extra);
    args.push("HEAD~2");
    git(src, &args)
}
