//! Helpers shared by the unit tests: real git with a fixed identity (the
//! machine may have none), and a tiny deterministic generator for random
//! cases (no extra crate).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A linear congruential generator: the same sequence for the same seed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.next() % n.max(1)
    }
}

pub struct GitRun {
    pub ok: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs git in `dir`, feeding `stdin` if given; never asserts.
pub fn git_with(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> GitRun {
    let mut child = Command::new("git")
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@x",
            "-c",
            "init.defaultBranch=master",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("git reads stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("git finishes");
    GitRun {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs git in `dir`, asserts it succeeded, returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let run = git_with(dir, args, None);
    assert!(run.ok, "git {args:?} in {}: {}", dir.display(), run.stderr);
    run.stdout
}

/// The pid of a process that has exited and been waited for: a writer of
/// temporary files that is gone.
pub fn gone_pid() -> u32 {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    pid
}
