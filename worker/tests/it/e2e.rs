//! The whole path with real components: a contributor posts a series with
//! `git send-email` to the list's SMTP server; the list's mail lands in
//! the IMAP mailbox patchline reads (dovecot); `patchline run` applies,
//! builds, publishes, tests and mails its report through SMTP, threaded
//! under the series' cover letter.

use crate::dovecot::{Dovecot, USER};
use crate::report::{SmtpServer, header};
use crate::util::{TINY_SPEC, change_greeting, git, patchline, tiny_repo};
use std::path::Path;
use std::process::Command;

#[test]
fn a_series_sent_with_git_send_email_ends_in_a_yum_repository_and_a_threaded_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hello, world", "Greet the world");
    std::fs::write(src.join("NEWS"), "greets the world\n").unwrap();
    git(&src, &["add", "NEWS"]);
    git(&src, &["commit", "-q", "-m", "Add NEWS"]);
    let outgoing = p.join("outgoing");
    git(
        &src,
        &[
            "format-patch",
            "-q",
            "--cover-letter",
            "--subject-prefix=master PATCH tiny",
            "-o",
            outgoing.to_str().unwrap(),
            "-2",
        ],
    );
    let cover = outgoing.join("0000-cover-letter.patch");
    let text = std::fs::read_to_string(&cover).unwrap();
    std::fs::write(
        &cover,
        text.replace("*** SUBJECT HERE ***", "Greetings")
            .replace("*** BLURB HERE ***", "Two small changes."),
    )
    .unwrap();

    // The list's SMTP server and the subscriber's IMAP mailbox.
    std::fs::create_dir(p.join("list")).unwrap();
    let list = SmtpServer::start(&p.join("list"), &[]);
    let dovecot = Dovecot::start();
    let mut patches: Vec<String> = std::fs::read_dir(&outgoing)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    patches.sort();
    let port = list.port.to_string();
    let mut args = vec![
        "send-email",
        "--quiet",
        "--confirm=never",
        "--suppress-cc=all",
        "--thread",
        "--no-chain-reply-to",
        "--from=Ada Contributor <ada@example.org>",
        "--to=tiny-devel@example.org",
        "--smtp-server=127.0.0.1",
        "--smtp-server-port",
        &port,
    ];
    args.extend(patches.iter().map(String::as_str));
    let sent = Command::new("git")
        .args(&args)
        .current_dir(&src)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_COMMITTER_NAME", "Ada Contributor")
        .env("GIT_COMMITTER_EMAIL", "ada@example.org")
        .env("GIT_AUTHOR_NAME", "Ada Contributor")
        .env("GIT_AUTHOR_EMAIL", "ada@example.org")
        .output()
        .expect("git send-email (git-email) must be installed: scripts/setup.sh");
    assert!(
        sent.status.success(),
        "git send-email failed: {}{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    let posted = list.messages();
    assert_eq!(posted.len(), 3, "cover letter and two patches");
    let cover_id = posted
        .iter()
        .find(|m| header(m, "Subject").contains("0/2"))
        .map(|m| header(m, "Message-ID"))
        .expect("the cover letter");
    // The list delivers to its subscribers: patchline's mailbox.
    let mut imap = dovecot.client();
    for mail in &posted {
        imap.append("INBOX", mail);
    }

    std::fs::create_dir(p.join("reports")).unwrap();
    let reports = SmtpServer::start(&p.join("reports"), &[]);
    std::fs::write(p.join("imap-password"), format!("{}\n", dovecot.password)).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            r#"[intake]
source = "imap"

[intake.imap]
host = "127.0.0.1"
port = {imap}
security = "plain"
user = "{USER}"
password_file = "imap-password"

[[repos]]
name = "tiny"
path = "tiny.git"
spec = "tiny.spec"
targets = ["el9"]
tests = [{{ name = "payload", command = ["rpm", "-qlp", "{{rpms}}"] }}]

[publish]
base_url = "https://repos.example.org/patchline"

[report]
transport = "smtp"
from = "patchline <patchline@example.org>"
to = ["tiny-devel@example.org"]

[report.smtp]
host = "127.0.0.1"
port = {smtp}
security = "none"
"#,
            imap = dovecot.imap_port,
            smtp = reports.port
        ),
    )
    .unwrap();
    let ran = patchline(p, &["run", "--json"]);
    assert_eq!(ran.code(), 0, "{}\n{}", ran.describe(), dovecot.logs());
    let status = ran.json();
    assert_eq!(status["stages"][0]["summary"]["mails"], 3, "{status}");
    assert_eq!(status["stages"][1]["summary"]["patches_applied"], 2);

    // The commits: Ada's, in order, on master.
    let log = git(
        &p.join("tiny.git"),
        &["log", "--format=%an <%ae>|%s", "-2", "master"],
    );
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "Test Author <author@example.org>|Add NEWS",
            "Test Author <author@example.org>|Greet the world"
        ]
    );
    // The repository: metadata and the package, as dnf would read them.
    let repo = Path::new(p).join(format!(
        "publish/tiny/master/el9/{}",
        std::env::consts::ARCH
    ));
    assert!(repo.join("repodata/repomd.xml").is_file());
    let rpm = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "rpm"))
        .expect("the published package");
    let content = Command::new("rpm2cpio").arg(&rpm).output().unwrap();
    assert!(String::from_utf8_lossy(&content.stdout).contains("hello, world"));
    assert_eq!(status["stages"][4]["summary"]["passed"], 1);

    // The run report and the reply to the applied series, both in the
    // series' thread.
    let delivered = reports.messages();
    assert_eq!(delivered.len(), 2);
    let report = delivered
        .iter()
        .find(|m| header(m, "Subject").starts_with("[patchline] run 1"))
        .expect("the run report");
    assert_eq!(
        header(report, "Subject"),
        "[patchline] run 1: 2 patches applied, 1 package built, 1 repository published"
    );
    assert_eq!(header(report, "In-Reply-To"), cover_id);
    assert_eq!(header(report, "X-RcptTo"), "tiny-devel@example.org");
    let reply = delivered
        .iter()
        .find(|m| header(m, "Subject").starts_with("Re: "))
        .expect("the reply to the series");
    assert_eq!(header(reply, "In-Reply-To"), cover_id);
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.contains("patchline applied the series")
            && text.contains("https://repos.example.org/patchline"),
        "{text}"
    );
}
