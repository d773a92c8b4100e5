//! A real public-inbox v2 archive as the mail source: made with Debian's
//! `public-inbox-init -V2`, mails delivered with `public-inbox-mda` as a
//! list server does, collected in two rounds (nothing read twice, the
//! series completes when its last patch arrives) and applied; and the same
//! inbox served by `public-inbox-httpd`, collected from its URL.

use crate::util::{git, hello_series, patchline};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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

/// A v2 inbox `hello` in `p/inbox` whose public URL is `url`, taking
/// every mail (no spam check).
fn init_inbox(p: &Path, url: &str) {
    public_inbox(
        p,
        "public-inbox-init",
        &[
            "-V2",
            "hello",
            p.join("inbox").to_str().unwrap(),
            url,
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
}

fn deliver(p: &Path, mail: &str) {
    public_inbox(
        p,
        "public-inbox-mda",
        &["--no-precheck"],
        Some(mail.as_bytes()),
    );
}

/// `public-inbox-httpd` serving the inboxes of `p`'s public-inbox config on
/// 127.0.0.1 at a port chosen at run time; stopped when dropped.
struct InboxServer {
    child: Child,
}

impl InboxServer {
    fn start(p: &Path, port: u16) -> Self {
        let child = Command::new("public-inbox-httpd")
            .args(["-W0", "-l", &format!("127.0.0.1:{port}")])
            .current_dir(p)
            .env("HOME", p)
            .env("PI_CONFIG", p.join(".public-inbox/config"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(p.join("httpd.out")).unwrap())
            .stderr(std::fs::File::create(p.join("httpd.err")).unwrap())
            .spawn()
            .expect("public-inbox-httpd runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "public-inbox-httpd never listened on {port}: {}",
                std::fs::read_to_string(p.join("httpd.err")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self { child }
    }
}

impl Drop for InboxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether public-inbox-httpd is here; in CI it must be (setup.sh
/// installs public-inbox), elsewhere its absence skips the test loudly.
fn have_httpd() -> bool {
    let found = Command::new("public-inbox-httpd")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        found || !ci,
        "public-inbox-httpd is missing: run scripts/setup.sh"
    );
    if !found {
        eprintln!("SKIPPED: public-inbox-httpd is missing; run scripts/setup.sh");
    }
    found
}

/// The config of a collect from `url` into `path`, for the repository at
/// `repo`.
fn collect_toml(path: &str, url: &str, repo: &Path) -> String {
    format!(
        "[intake]\nsource = \"public-inbox\"\npath = \"{path}\"\nurl = \"{url}\"\n\n[[repos]]\nname = \"hello\"\npath = \"{}\"\n",
        repo.display()
    )
}

#[test]
fn a_public_inbox_served_over_http_is_fetched_from_its_url_and_collected() {
    if !have_httpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mails = split(&hello_series(p));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hello");
    init_inbox(p, &url);
    let _server = InboxServer::start(p, port);
    // The local copy starts as an empty directory.
    std::fs::create_dir_all(p.join("mirror")).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        collect_toml("mirror", &url, &p.join("hello.git")),
    )
    .unwrap();
    for m in &mails[..2] {
        deliver(p, m);
    }
    let first = patchline(p, &["collect", "--json"]).json();
    assert_eq!(first["mails"], 2, "{first}");
    assert_eq!(first["series_incomplete"], 1, "{first}");
    let epoch0 = |inbox: &str| git(&p.join(inbox).join("git/0.git"), &["rev-parse", "master"]);
    assert_eq!(epoch0("mirror"), epoch0("inbox"));
    // The last patch: only it is new.
    deliver(p, &mails[2]);
    let second = patchline(p, &["collect", "--json"]).json();
    assert_eq!(second["mails"], 1, "{second}");
    assert_eq!(second["duplicates"], 0, "{second}");
    assert_eq!(second["series_complete"], 1, "{second}");
    // A new epoch, made by public-inbox's own code as its writer does
    // when an epoch is full (at ~1 GB, too big to reach in a test), and a
    // reply delivered into it: fetched and read.
    public_inbox(
        p,
        "perl",
        &[
            "-MPublicInbox::MultiGit",
            "-e",
            "PublicInbox::MultiGit->new($ARGV[0], 'all.git', 'git')->add_epoch($ARGV[1])",
            p.join("inbox").to_str().unwrap(),
            "1",
        ],
        None,
    );
    let reply = "From: Ann Reviewer <ann@example.org>\nTo: hello-devel@example.org\nSubject: Re: [PATCH 0/2] hello\nMessage-ID: <reply-1@example.org>\nDate: Tue, 2 Dec 2025 10:00:00 +0000\n\nLooks good.\n";
    deliver(p, reply);
    let third = patchline(p, &["collect", "--json"]).json();
    assert_eq!(third["mails"], 1, "{third}");
    let epoch1 = |inbox: &str| git(&p.join(inbox).join("git/1.git"), &["rev-parse", "master"]);
    assert_eq!(epoch1("mirror"), epoch1("inbox"));
    // The cover letter purged: epoch 0 is rewritten upstream, the mirror
    // follows (forced), the reader re-reads it and takes nothing twice.
    public_inbox(
        p,
        "public-inbox-purge",
        &["--all"],
        Some(mails[0].as_bytes()),
    );
    let fourth = patchline(p, &["collect", "--json"]).json();
    assert_eq!(fourth["mails"], 0, "{fourth}");
    assert!(
        fourth["warnings"].to_string().contains("was rewritten"),
        "{fourth}"
    );
    assert_eq!(epoch0("mirror"), epoch0("inbox"));
    // A URL the server does not serve, and one nobody listens on: exit
    // code 3 (infrastructure), the URL named, nothing stored.
    let wrong = p.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    for bad in [
        format!("http://127.0.0.1:{port}/nope"),
        format!("http://127.0.0.1:{}/hello", free_port()),
    ] {
        std::fs::write(
            wrong.join("patchline.toml"),
            collect_toml("mirror", &bad, &p.join("hello.git")),
        )
        .unwrap();
        let failed = patchline(&wrong, &["collect", "--json"]).fails_with(3);
        let said = format!("{}{}", failed.stdout(), failed.stderr());
        assert!(said.contains(&bad), "{}", failed.describe());
        assert!(
            !wrong.join("mirror/git/0.git").exists(),
            "{}",
            failed.describe()
        );
    }
    // The right URL in the same place: everything arrives (nothing was
    // taken by the failed collects).
    std::fs::write(
        wrong.join("patchline.toml"),
        collect_toml("mirror", &url, &p.join("hello.git")),
    )
    .unwrap();
    let fixed = patchline(&wrong, &["collect", "--json"]).json();
    assert_eq!(fixed["mails"], 3, "{fixed}");
}

#[test]
fn a_public_inbox_archive_is_collected_incrementally_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mails = split(&hello_series(p));
    assert_eq!(mails.len(), 3, "cover letter and two patches");
    init_inbox(p, "http://127.0.0.1/hello");
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
