//! The whole run ending in the report stage, with a real SMTP server
//! (aiosmtpd, STARTTLS + AUTH) on loopback: reports are read back from the
//! Maildir it delivers to, with their recipients and threading headers;
//! unsent reports wait in the outbox and are sent once, later.

use crate::dovecot::{free_port, generate_certificate};
use crate::util::{TINY_SPEC, change_greeting, git, patchline, post, tiny_repo};
use mail_parser::MessageParser;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The config of a `tiny_repo` site reading `list.mbox`, up to its one
/// repository's `targets`; tests append the rest.
/// These tests are about transports, threading and the outbox: only the
/// run report and failure replies (`replies = ["failed"]`); the replies to
/// applied series are tested in e2e.rs and compose's unit tests.
const TINY_SITE: &str = "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\ntargets = [\"el9\"]\nreplies = [\"failed\"]\n";

/// aiosmtpd, started for one test, stopped on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    pub fn start(dir: &Path, extra: &[&str]) -> SmtpServer {
        let maildir = dir.join("delivered");
        let port_file = dir.join("smtp.port");
        let _ = std::fs::remove_file(&port_file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
        let child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg("--maildir")
            .arg(&maildir)
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let started = Instant::now();
        let mut server = SmtpServer {
            child,
            port: 0,
            maildir,
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                server.port = text.trim().parse().unwrap();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the SMTP server exited ({status}); is python3-aiosmtpd installed (scripts/setup.sh)?"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the SMTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Delivered messages, oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.maildir.join("new"))
                .map(|d| {
                    d.flatten()
                        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read(p).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn header(raw: &[u8], name: &str) -> String {
    let message = MessageParser::default().parse(raw).unwrap();
    message
        .header_raw(name)
        .map(|v| {
            v.replace("\r\n", "\n")
                .replace("\n ", " ")
                .replace("\n\t", " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn body(raw: &[u8]) -> String {
    let message = MessageParser::default().parse(raw).unwrap();
    message.body_text(0).unwrap_or_default().into_owned()
}

/// Posts a two-patch series with a cover letter: "Greet the world" (the
/// greeting becomes `greeting`) and "Add NEWS".
fn two_patch_series(p: &Path, src: &Path, greeting: &str) {
    change_greeting(src, greeting, "Greet the world");
    std::fs::write(src.join("NEWS"), "2.1: greets the world\n").unwrap();
    git(src, &["add", "NEWS"]);
    git(src, &["commit", "-q", "-m", "Add NEWS"]);
    post(p, src, 2, &["--cover-letter", "--thread"]);
}

#[test]
fn reports_reach_a_real_smtp_server_in_the_right_threads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    two_patch_series(p, &src, "hello\nworld");
    // Bob's patch, made against a greeting the branch never had.
    git(&src, &["checkout", "-q", "-b", "bob", "HEAD~2"]);
    std::fs::write(src.join("greeting"), "hola\n").unwrap();
    git(&src, &["commit", "-q", "-am", "Spanish"]);
    std::fs::write(src.join("greeting"), "adios\n").unwrap();
    git(
        &src,
        &[
            "commit",
            "-q",
            "-am",
            "Say goodbye",
            "--author",
            "Bob Builder <bob@example.org>",
        ],
    );
    let bob = post(p, &src, 1, &["--thread"]);
    let bob_id = bob
        .lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID: ")
                .or(l.strip_prefix("Message-Id: "))
        })
        .expect("format-patch --thread sets a Message-ID")
        .to_owned();

    let cert = p.join("smtp.crt");
    let key = p.join("smtp.key");
    generate_certificate(&cert, &key);
    let smtp = SmtpServer::start(
        p,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--auth",
            "reporter:s3cret",
        ],
    );
    std::fs::write(p.join("smtp.password"), "s3cret\n").unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            r#"{TINY_SITE}tests = [
  {{ name = "requires", command = ["rpm", "-qp", "--requires", "{{rpms}}"] }},
  {{ name = "payload", command = ["sh", "-c", "rpm -qlp \"$1\" | grep -qx /usr/share/tiny/greeting", "check", "{{rpms}}"] }},
]

[publish]
base_url = "https://repos.example.org/patchline"

[report]
transport = "smtp"
from = "patchline <patchline@example.org>"
to = ["virt-devel@lists.example.org"]
recipients.apply = ["maintainer@example.org"]
retry_delay_ms = 10

[report.smtp]
host = "127.0.0.1"
port = {port}
security = "starttls"
ca_file = "smtp.crt"
username = "reporter"
password_file = "smtp.password"
"#,
            port = smtp.port
        ),
    )
    .unwrap();

    let ran = patchline(p, &["run", "--json"]).fails_with(1);
    let status = ran.json();
    let run = status["run"]["id"].as_i64().unwrap();
    let stages: Vec<(String, String)> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("collect", "ok"),
        ("apply", "failed"),
        ("build", "ok"),
        ("publish", "ok"),
        ("test", "ok"),
        ("report", "ok"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(stages, want, "{}", ran.describe());
    let test = &status["stages"][4]["summary"];
    assert_eq!(test["passed"], 2, "{test}");
    let junit = std::fs::read_to_string(test["junit"].as_str().unwrap()).unwrap();
    assert!(
        junit.contains(r#"<testcase classname="test.tiny.el9" name="payload""#),
        "{junit}"
    );
    let report = &status["stages"][5]["summary"];
    assert_eq!(report["sent"], 2, "{report}");

    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "one run report, one reply to Bob");
    let run_mail = messages
        .iter()
        .find(|m| {
            header(m, "X-Patchline-Run") == run.to_string()
                && header(m, "Subject").contains("FAILED")
        })
        .expect("the run report");
    assert_eq!(
        header(run_mail, "Subject"),
        format!("[patchline] run {run} FAILED: 1 series did not apply")
    );
    assert_eq!(
        header(run_mail, "To"),
        "virt-devel@lists.example.org, maintainer@example.org"
    );
    // Envelope: what the server was told.
    assert_eq!(
        header(run_mail, "X-RcptTo"),
        "virt-devel@lists.example.org, maintainer@example.org"
    );
    let text = body(run_mail);
    assert!(
        text.contains("\"Say goodbye\" for tiny/master did not apply"),
        "{text}"
    );
    assert!(text.contains(" Greet the world\n"), "{text}");
    assert!(
        text.contains("https://repos.example.org/patchline/tiny/master/el9/"),
        "{text}"
    );
    assert!(text.contains("tiny-2.1-3."), "{text}");

    let reply = messages
        .iter()
        .find(|m| header(m, "Subject").starts_with("Re: "))
        .expect("the reply to Bob's thread");
    assert_eq!(
        header(reply, "Subject"),
        "Re: [master PATCH tiny] Say goodbye"
    );
    assert_eq!(
        header(reply, "To"),
        "\"Bob Builder\" <bob@example.org>, maintainer@example.org"
    );
    assert_eq!(header(reply, "Cc"), "virt-devel@lists.example.org");
    assert_eq!(header(reply, "In-Reply-To"), bob_id);
    assert_eq!(header(reply, "References"), bob_id);
    let text = body(reply);
    assert!(text.contains("file greeting"), "{text}");
    assert!(text.contains("the patch expects:\n    | hola\n"), "{text}");
    assert!(
        text.contains("tiny/master has:\n    | hello\n    | world\n"),
        "{text}"
    );
    assert!(text.contains("send it again as v2"), "{text}");

    // The stage again: nothing is sent twice.
    let again = patchline(p, &["report", "--run", &run.to_string(), "--json"]).ok();
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert!(
        again["reports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "sent"),
        "{again}"
    );
    assert_eq!(smtp.messages().len(), 2);
    // The report file holds both reports for the README's first command.
    let file = std::fs::read_to_string(again["file"].as_str().unwrap()).unwrap();
    assert!(
        file.contains("Subject: Re: [master PATCH tiny] Say goodbye"),
        "{file}"
    );
}

#[test]
fn unsent_reports_wait_in_the_outbox_and_are_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hi", "Say hi");
    post(p, &src, 1, &[]);
    let port = free_port();
    let config = |port: u16| {
        format!(
            "{TINY_SITE}\n[report]\ntransport = \"smtp\"\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\nattempts = 2\nretry_delay_ms = 10\n\n[report.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout_secs = 5\n"
        )
    };
    std::fs::write(p.join("patchline.toml"), config(port)).unwrap();
    // Nobody listens: the run's work is done, the report waits.
    let ran = patchline(p, &["run"]).fails_with(3);
    assert!(
        ran.stderr()
            .contains("1 report(s) not sent, kept in the outbox"),
        "{}",
        ran.describe()
    );
    let status = patchline(p, &["status", "--json"]).json();
    let run = status["run"]["id"].as_i64().unwrap();
    let report = &status["stages"][5];
    assert_eq!(report["stage"], "report");
    assert_eq!(report["state"], "failed");
    assert_eq!(status["stages"][2]["state"], "ok", "the build happened");

    // The server is back, but refuses the first try: the retry sends it.
    let smtp = SmtpServer::start(p, &["--fail-first", "1"]);
    std::fs::write(p.join("patchline.toml"), config(smtp.port)).unwrap();
    let sent = patchline(p, &["report", "--run", &run.to_string(), "--json"]).ok();
    let sent: serde_json::Value = serde_json::from_str(sent.trim()).unwrap();
    assert_eq!(sent["sent"], 1, "{sent}");
    // Two attempts in the failed run, then the refused one and the good one.
    assert_eq!(sent["reports"][0]["attempts"], 4, "{sent}");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header(&messages[0], "Subject"),
        format!("[patchline] run {run}: 1 patch applied, 1 package built, 1 repository published")
    );
    // Again: nothing new.
    patchline(p, &["report", "--run", &run.to_string()]).ok();
    assert_eq!(smtp.messages().len(), 1);
}

#[test]
fn a_stopped_run_reports_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hi", "Say hi");
    post(p, &src, 1, &[]);
    // The spec is missing at first: the build stage stops the pipeline.
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"packaging/tiny.spec\"\ntargets = [\"el9\"]\n",
    )
    .unwrap();
    let first = patchline(p, &["run", "--json"]).fails_with(1);
    let status = first.json();
    let run = status["run"]["id"].as_i64().unwrap();
    let states: Vec<&str> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(status["stages"][2]["stage"], "build");
    assert_eq!(states[..3], ["ok", "ok", "failed"], "{}", first.describe());
    let report = std::fs::read_to_string(
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "report")
            .unwrap()["summary"]["file"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(report.contains("FAILED: build"), "{report}");

    // Fixed: the same run goes on from the build, nothing applied twice.
    std::fs::create_dir_all(p.join("packaging")).unwrap();
    std::fs::write(p.join("packaging/tiny.spec"), TINY_SPEC).unwrap();
    let tip = git(p.join("tiny.git").as_path(), &["rev-parse", "master"]);
    let resumed = patchline(p, &["run", "--resume", "--json"]).ok();
    let status: serde_json::Value = serde_json::from_str(resumed.trim()).unwrap();
    assert_eq!(status["run"]["id"], run);
    assert_eq!(status["run"]["state"], "ok", "{status}");
    assert!(
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "ok"),
        "{status}"
    );
    assert_eq!(
        git(p.join("tiny.git").as_path(), &["rev-parse", "master"]),
        tip
    );
    assert_eq!(status["stages"][1]["summary"]["patches_applied"], 1);
    // Nothing left to resume.
    let none = patchline(p, &["run", "--resume"]).fails_with(2);
    assert!(
        none.stderr().contains("no unfinished run"),
        "{}",
        none.describe()
    );
}

#[test]
fn sendmail_transport_gets_the_envelope_as_arguments_and_the_message_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hi", "Say hi");
    post(p, &src, 1, &[]);
    // A sendmail that behaves like one: reads the message, keeps it.
    let sendmail = p.join("sendmail");
    std::fs::write(
        &sendmail,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/sendmail.args\"\ncat > \"$(dirname \"$0\")/sendmail.msg\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        format!("{TINY_SITE}\n[report]\ntransport = \"sendmail\"\nsendmail = \"./sendmail\"\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\ncc = [\"Boss <boss@example.org>\"]\n"),
    )
    .unwrap();
    patchline(p, &["run"]).ok();
    let args = std::fs::read_to_string(p.join("sendmail.args")).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "-i",
            "-f",
            "patchline@example.org",
            "--",
            "list@example.org",
            "boss@example.org"
        ]
    );
    let msg = std::fs::read(p.join("sendmail.msg")).unwrap();
    assert_eq!(header(&msg, "Cc"), "Boss <boss@example.org>");
    let text = body(&msg).replace("\r\n", "\n");
    assert!(text.contains(" Say hi\n"), "{text}");
}

#[test]
fn a_run_killed_at_any_stage_boundary_resumes_without_losing_or_doubling() {
    let points = [
        "after:collect",
        "before:apply",
        "after:apply",
        "after:build",
        "after:publish",
        "after:test",
        "before:report",
    ];
    for point in points {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let src = tiny_repo(p, TINY_SPEC);
        two_patch_series(p, &src, "hi");
        let smtp = SmtpServer::start(p, &[]);
        std::fs::write(
            p.join("patchline.toml"),
            format!(
                "{TINY_SITE}tests = [{{ name = \"requires\", command = [\"rpm\", \"-qp\", \"--requires\", \"{{rpms}}\"] }}]\n\n[report]\ntransport = \"smtp\"\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\n\n[report.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n",
                smtp.port
            ),
        )
        .unwrap();
        let base = git(&p.join("tiny.git"), &["rev-parse", "master"])
            .trim()
            .to_owned();
        let killed = crate::util::run_in_env(
            p,
            &crate::util::patchline_bin(),
            &["run"],
            &[("PATCHLINE_FAILPOINT", point)],
        );
        assert!(
            killed.output.status.code().is_none(),
            "{point}: the process should have been killed\n{}",
            killed.describe()
        );
        let resumed = patchline(p, &["run", "--resume", "--json"]);
        let status = resumed.json();
        assert_eq!(resumed.code(), 0, "{point}: {}", resumed.describe());
        assert_eq!(status["run"]["id"], 1, "{point}: the same run goes on");
        assert!(
            status["stages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "ok"),
            "{point}: {status}"
        );
        // Two commits on top of the base, once.
        let count = git(
            &p.join("tiny.git"),
            &["rev-list", "--count", &format!("{base}..master")],
        );
        assert_eq!(count.trim(), "2", "{point}");
        assert_eq!(
            status["stages"][1]["summary"]["patches_applied"], 2,
            "{point}"
        );
        // One build, one published package, one report.
        assert_eq!(
            status["stages"][2]["summary"]["builds"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "{point}"
        );
        let rpms = std::fs::read_dir(p.join(format!(
            "publish/tiny/master/el9/{}",
            std::env::consts::ARCH
        )))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "rpm")
        })
        .count();
        assert_eq!(rpms, 1, "{point}");
        assert_eq!(smtp.messages().len(), 1, "{point}: one report");
        // Nothing left to do.
        patchline(p, &["run", "--resume"]).fails_with(2);
    }
}

#[test]
fn an_unreachable_mail_server_stops_the_run_with_a_collect_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    tiny_repo(p, TINY_SPEC);
    std::fs::write(p.join("imap-password"), "secret\n").unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nuser = \"u\"\npassword_file = \"imap-password\"\ntimeout_secs = 5\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\n\n[report]\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let ran = patchline(p, &["run", "--json"]).fails_with(3);
    let status = ran.json();
    let stages: Vec<&str> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    // Nothing after the failed collect ran, but the report did.
    assert_eq!(stages, ["collect", "report"], "{}", ran.describe());
    assert_eq!(status["stages"][0]["state"], "failed");
    let file = status["stages"][1]["summary"]["file"].as_str().unwrap();
    let report = std::fs::read_to_string(file).unwrap();
    assert!(report.contains("FAILED: collect\n"), "{report}");
    assert!(report.contains("127.0.0.1"), "{report}");
    assert!(
        report.contains("Subject: [patchline] run 1 FAILED: collect failed"),
        "{report}"
    );
}

#[test]
fn reports_go_over_implicit_tls_and_a_wrong_password_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hi", "Say hi");
    post(p, &src, 1, &[]);
    let cert = p.join("smtp.crt");
    let key = p.join("smtp.key");
    generate_certificate(&cert, &key);
    let smtp = SmtpServer::start(
        p,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--implicit-tls",
            "--auth",
            "reporter:right",
        ],
    );
    let config = |password: &str| {
        std::fs::write(p.join("smtp.password"), format!("{password}\n")).unwrap();
        std::fs::write(
            p.join("patchline.toml"),
            format!(
                "{TINY_SITE}\n[report]\ntransport = \"smtp\"\nfrom = \"patchline@example.org\"\nto = [\"list@example.org\"]\nattempts = 1\n\n[report.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\nca_file = \"smtp.crt\"\nusername = \"reporter\"\npassword_file = \"smtp.password\"\n",
                smtp.port
            ),
        )
        .unwrap();
    };
    config("wrong");
    let refused = patchline(p, &["run"]).fails_with(3);
    let stderr = refused.stderr();
    assert!(
        stderr.contains("kept in the outbox"),
        "{}",
        refused.describe()
    );
    assert!(
        stderr.contains("SMTP server 127.0.0.1:"),
        "{}",
        refused.describe()
    );
    assert!(
        stderr.contains("535") && stderr.contains("credentials invalid"),
        "the server's own words: {}",
        refused.describe()
    );
    assert!(!stderr.contains("wrong"), "the password is never printed");
    assert!(smtp.messages().is_empty());
    config("right");
    patchline(p, &["report"]).ok();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(header(&messages[0], "Subject").contains("1 patch applied"));
}
