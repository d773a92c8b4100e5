//! A real public-inbox v2 archive as the mail source: made with Debian's
//! `public-inbox-init -V2`, mails delivered with `public-inbox-mda` as a
//! list server does, collected in two rounds (nothing read twice, the
//! series completes when its last patch arrives) and applied.

use crate::util::{hello_series, patchline};
use std::path::Path;
use std::process::{Command, Stdio};

/// public-inbox's own configuration lives under `PI_DIR`; the test keeps
/// it in its temporary directory.
fn public_inbox(p: &Path, program: &str, args: &[&str], stdin: Option<&[u8]>) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(p)
        .env("HOME", p)
        .env("PI_DIR", p.join(".public-inbox"))
        .env("PI_CONFIG", p.join(".public-inbox/config"))
        .env("ORIGINAL_RECIPIENT", "hello-devel@example.org")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program} (scripts/setup.sh installs public-inbox): {e}")
    });
    if let Some(bytes) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}\n{}",
        p.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The mails of `git format-patch --stdout` output, without their `From `
/// separator lines.
fn split(mbox: &str) -> Vec<String> {
    let mut mails: Vec<String> = Vec::new();
    for line in mbox.split_inclusive('\n') {
        if line.starts_with("From ") && line.contains(" Mon Sep 17 00:00:00 2001") {
            mails.push(String::new());
        } else if let Some(m) = mails.last_mut() {
            m.push_str(line);
        }
    }
    mails
        .into_iter()
        .map(|m| format!("To: hello-devel@example.org\n{m}"))
        .collect()
}

#[test]
fn a_public_inbox_archive_is_collected_incrementally_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mails = split(&hello_series(p));
    assert_eq!(mails.len(), 3, "cover letter and two patches");
    public_inbox(
        p,
        "public-inbox-init",
        &[
            "-V2",
            "hello",
            p.join("inbox").to_str().unwrap(),
            "http://127.0.0.1/hello",
            "hello-devel@example.org",
        ],
        None,
    );
    public_inbox(
        p,
        "git",
        &[
            "config",
            "-f",
            ".public-inbox/config",
            "publicinboxmda.spamcheck",
            "none",
        ],
        None,
    );
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"public-inbox\"\npath = \"inbox\"\n\n[[repos]]\nname = \"hello\"\npath = \"hello.git\"\n",
    )
    .unwrap();
    // The cover letter and the first patch: the series waits.
    for m in &mails[..2] {
        public_inbox(
            p,
            "public-inbox-mda",
            &["--no-precheck"],
            Some(m.as_bytes()),
        );
    }
    let first = patchline(p, &["collect", "--json"]).json();
    assert_eq!(first["mails"], 2, "{first}");
    assert_eq!(first["series_incomplete"], 1, "{first}");
    assert!(first["errors"].as_array().unwrap().is_empty(), "{first}");
    // The last patch arrives: only it is read, and the series is complete.
    public_inbox(
        p,
        "public-inbox-mda",
        &["--no-precheck"],
        Some(mails[2].as_bytes()),
    );
    let second = patchline(p, &["collect", "--json"]).json();
    assert_eq!(second["mails"], 1, "{second}");
    assert_eq!(second["duplicates"], 0, "{second}");
    assert_eq!(second["series_complete"], 1, "{second}");
    let applied = patchline(p, &["apply", "--json"]).json();
    assert_eq!(applied["patches_applied"], 2, "{applied}");
    // Nothing new: nothing read again.
    let third = patchline(p, &["collect", "--json"]).json();
    assert_eq!(third["mails"], 0, "{third}");
}
