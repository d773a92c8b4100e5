//! The local build stage with real rpmbuild: a patched demo package is
//! built for two targets; a broken spec fails with rpmbuild's own words;
//! re-running the stage of a run does not build again.

use crate::util::{TINY_SPEC, git, patchline, tiny_repo};
use std::path::Path;

/// A bare repo with a noarch package, and a one-patch mbox changing it.
pub fn site(spec: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, spec);
    std::fs::write(src.join("greeting"), "hello, world\n").unwrap();
    git(&src, &["commit", "-q", "-am", "Greet the world"]);
    let mbox = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--subject-prefix=master PATCH tiny",
            "-1",
        ],
    );
    std::fs::write(p.join("list.mbox"), mbox).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\ntargets = [\"el9\", \"fc40\"]\n",
    )
    .unwrap();
    dir
}

pub fn rpm_query(rpm: &Path, format: &str) -> String {
    let out = std::process::Command::new("rpm")
        .args(["-qp", "--qf", format])
        .arg(rpm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rpm -qp {}: {}",
        rpm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn applied_branch_is_built_for_each_target_once() {
    let site = site(TINY_SPEC);
    let p = site.path();
    let ran = patchline(p, &["run", "--json"]);
    let status = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let build = &status["stages"][2];
    assert_eq!(build["stage"], "build");
    assert_eq!(build["state"], "ok", "{build}");
    let builds = build["summary"]["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2);
    let tip = git(&p.join("tiny.git"), &["rev-parse", "--short=7", "master"])
        .trim()
        .to_owned();
    let count = git(&p.join("tiny.git"), &["rev-list", "--count", "master"])
        .trim()
        .to_owned();
    let date = chrono_today();
    for (b, target) in builds.iter().zip(["el9", "fc40"]) {
        assert_eq!(b["target"], target);
        let rpm = b["rpms"][0].as_str().unwrap();
        assert_eq!(
            rpm_query(Path::new(rpm), "%{NAME} %{VERSION} %{RELEASE}"),
            format!("tiny 2.1 3.{count}.{date}git{tip}.{target}"),
            "release stamped with commit count, date, commit and dist"
        );
        let files = rpm_query(Path::new(rpm), "[%{FILENAMES}\n]");
        assert!(files.contains("/usr/share/tiny/greeting"), "{files}");
        assert!(Path::new(b["log"].as_str().unwrap()).is_file());
    }
    // The patched content is what was packaged: the source tarball holds
    // the applied commit's tree.
    let srpm = Path::new(builds[0]["srpm"].as_str().unwrap());
    assert!(rpm_query(srpm, "%{NAME}").contains("tiny"));
    let tarball = srpm
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("SOURCES/tiny-2.1.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&tarball).unwrap(),
    ));
    let mut greeting = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("tiny-2.1/greeting") {
            std::io::Read::read_to_string(&mut entry, &mut greeting).unwrap();
        }
    }
    assert_eq!(greeting, "hello, world\n");
    // The stage of the same run again: nothing rebuilt.
    let rpm = Path::new(builds[0]["rpms"][0].as_str().unwrap());
    let built_at = std::fs::metadata(rpm).unwrap().modified().unwrap();
    let run = status["run"]["id"].as_i64().unwrap().to_string();
    let again = patchline(p, &["build", "--json", "--run", &run]).json();
    assert_eq!(again["builds"][0]["duration_ms"], builds[0]["duration_ms"]);
    assert_eq!(
        std::fs::metadata(rpm).unwrap().modified().unwrap(),
        built_at,
        "not rebuilt"
    );
}

fn chrono_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y%m%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_broken_spec_fails_the_build_with_rpmbuilds_message() {
    let site = site(&TINY_SPEC.replace("%files\n", "%files\n%{bogus_macro_that_fails\n"));
    let ran = patchline(site.path(), &["run"]).fails_with(1);
    assert!(
        ran.stdout().contains("[failed] tiny/master"),
        "{}",
        ran.describe()
    );
    let status = patchline(site.path(), &["status", "--json"]).json();
    let build = &status["stages"][2];
    assert_eq!(build["state"], "failed");
    let error = build["summary"]["builds"][0]["error"].as_str().unwrap();
    // rpm's own words, naming the spec.
    assert!(
        error.contains("tiny.spec") && error.contains("unclosed macro"),
        "{error}"
    );
}

/// `[[build.targets]]` are macro sets: a spec branching on `%rhel` and
/// `%fedora` builds as on that platform, and a Koji-style name with a
/// hyphen is only a name (its dist is the one configured).
#[test]
fn targets_build_with_their_own_macros() {
    let spec = TINY_SPEC.replace(
        "Summary: test package\n",
        "Summary: built for %{?rhel:rhel %{rhel}}%{?fedora:fedora %{fedora}}%{?el9: el9}\n",
    );
    let site = site(&spec);
    let p = site.path();
    let config = std::fs::read_to_string(p.join("patchline.toml"))
        .unwrap()
        .replace(
            "targets = [\"el9\", \"fc40\"]\n",
            "targets = [\"epel9-candidate\", \"f41\"]\n",
        );
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            "{config}\n[[build.targets]]\nname = \"epel9-candidate\"\ndist = \".el9\"\nmacros = {{ rhel = \"9\", el9 = \"1\" }}\n\n[[build.targets]]\nname = \"f41\"\ndist = \".fc41\"\nmacros = {{ fedora = 41 }}\n"
        ),
    )
    .unwrap();
    let ran = patchline(p, &["run", "--json"]);
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let status = ran.json();
    let builds = status["stages"][2]["summary"]["builds"].as_array().unwrap();
    let want = [
        ("epel9-candidate", ".el9", "built for rhel 9 el9"),
        ("f41", ".fc41", "built for fedora 41"),
    ];
    for (b, (target, dist, summary)) in builds.iter().zip(want) {
        assert_eq!(b["target"], target);
        let rpm = Path::new(b["rpms"][0].as_str().unwrap());
        let release = rpm_query(rpm, "%{RELEASE}");
        assert!(release.ends_with(dist), "{target}: {release}");
        assert!(!release.contains('-'), "{release}");
        assert_eq!(rpm_query(rpm, "%{SUMMARY}"), summary);
    }
    // Published under the target's name.
    let publish = status["stages"][3]["summary"]["repos"].as_array().unwrap();
    assert_eq!(publish[0]["target"], "epel9-candidate", "{publish:?}");
}

/// `patchline serve` on 127.0.0.1:0, spoken to with curl; killed when
/// dropped. Its stderr is kept for failure messages.
struct LiveWorker {
    child: std::process::Child,
    url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

const LIVE_TOKEN: &str = "live-log-token-0123456789";

impl LiveWorker {
    fn spawn(site: &Path) -> LiveWorker {
        use std::io::BufRead;
        let mut child = std::process::Command::new(crate::util::patchline_bin())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(site)
            .env_remove("PATCHLINE_CONFIG")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.org")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn patchline serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                keep.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("patchline serve did not start\n{}", stderr.lock().unwrap())
            });
        LiveWorker { child, url, stderr }
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-fsS", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {LIVE_TOKEN}"))
            .arg(format!("{}{path}", self.url));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", b]);
        }
        let out = cmd.output().expect("run curl");
        assert!(
            out.status.success(),
            "curl {method} {path}: {}\n{}\n--- worker\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.stderr.lock().unwrap()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stage(&self, run: i64, stage: &str) -> serde_json::Value {
        let view = self.curl("GET", &format!("/api/v1/runs/{run}/stages/{stage}"), None);
        serde_json::from_str(&view).unwrap()
    }

    fn start(&self, run: i64, stage: &str) {
        self.curl("POST", &format!("/api/v1/runs/{run}/stages/{stage}"), None);
    }

    /// Polls `stage` until it leaves queued and running.
    fn finish(&self, run: i64, stage: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let view = self.stage(run, stage);
            if view["state"] != "queued" && view["state"] != "running" {
                return view;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stage} never ended: {view}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Polls the stage's log until it holds `marker` while the stage still
    /// runs (the command waits for a file the test has not made yet), and
    /// returns the log so far.
    fn log_while_running(&self, run: i64, stage: &str, marker: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let log = self.curl(
                "GET",
                &format!("/api/v1/runs/{run}/stages/{stage}/log?offset=0"),
                None,
            );
            if log.contains(marker) {
                let view = self.stage(run, stage);
                assert_eq!(view["state"], "running", "{view}\n{log}");
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{marker:?} not in the {stage} log after 120 s; the log:\n{log}\n--- worker\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rpmbuild's output and a test command's reach the stage log (what
/// Jenkins shows) while they run, not when they end: the spec's `%build`
/// prints a marker and waits for a file, and so does the test command;
/// each file is made only once the marker was read through the API.
#[test]
fn build_and_test_output_reach_the_stage_log_while_they_run() {
    let spec = TINY_SPEC.replace(
        "%build\n",
        "%build\necho live-build-marker\nwhile [ ! -e %{live_gate} ]; do sleep 0.1; done\n",
    );
    let site = site(&spec);
    let p = site.path();
    let build_gate = p.join("build-may-end");
    let test_gate = p.join("test-may-end");
    std::fs::write(p.join("token"), LIVE_TOKEN).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            r#"[intake]
source = "mbox"
path = "list.mbox"
mbox_format = "none"

[[repos]]
name = "tiny"
path = "tiny.git"
spec = "tiny.spec"
targets = ["el9"]

[[repos.tests]]
name = "smoke"
command = ["sh", "-c", "echo live-test-marker; while [ ! -e {} ]; do sleep 0.1; done; echo test-done"]

[[build.targets]]
name = "el9"
dist = ".el9"
macros = {{ live_gate = "{}" }}

[server]
token_file = "token"
"#,
            test_gate.display(),
            build_gate.display()
        ),
    )
    .unwrap();
    let w = LiveWorker::spawn(p);
    let run: serde_json::Value = serde_json::from_str(&w.curl(
        "POST",
        "/api/v1/runs",
        Some(r#"{"trigger": "api", "cause": "live log test"}"#),
    ))
    .unwrap();
    let run = run["id"].as_i64().unwrap();
    for stage in ["collect", "apply"] {
        w.start(run, stage);
        assert_eq!(w.finish(run, stage)["state"], "ok");
    }

    w.start(run, "build");
    let log = w.log_while_running(run, "build", "tiny/master el9 | live-build-marker");
    assert!(
        !log.contains("tiny/master el9 | Wrote: "),
        "the build has not ended\n{log}"
    );
    std::fs::write(&build_gate, "").unwrap();
    let build = w.finish(run, "build");
    assert_eq!(build["state"], "ok", "{build}");
    let log = w.curl(
        "GET",
        &format!("/api/v1/runs/{run}/stages/build/log?offset=0"),
        None,
    );
    assert!(log.contains("tiny/master el9 | Wrote: "), "{log}");
    // The whole output is still the target's build.log, as before.
    let file = build["summary"]["builds"][0]["log"].as_str().unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains("live-build-marker\n") && text.contains("Wrote: "),
        "{text}"
    );

    w.start(run, "publish");
    assert_eq!(w.finish(run, "publish")["state"], "ok");
    w.start(run, "test");
    w.log_while_running(run, "test", "smoke tiny/master el9 | live-test-marker");
    std::fs::write(&test_gate, "").unwrap();
    let test = w.finish(run, "test");
    assert_eq!(test["state"], "ok", "{test}");
    assert_eq!(test["summary"]["passed"], 1, "{test}");
    let log = w.curl(
        "GET",
        &format!("/api/v1/runs/{run}/stages/test/log?offset=0"),
        None,
    );
    assert!(log.contains("smoke tiny/master el9 | test-done"), "{log}");
}
