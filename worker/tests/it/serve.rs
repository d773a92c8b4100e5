//! `patchline serve` end to end: the real binary on 127.0.0.1:0, driven
//! over HTTP. Every bad input of the API gets its status and a JSON body
//! and changes nothing; stages run in order, one at a time, one unfinished
//! run per repository; a killed worker's jobs come back `interrupted` and
//! resume; the curl commands of docs/api.md run as written.

use crate::util::{hello_series, patchline_bin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// A site: a bare repository `hello.git` (also configured as `world`), a
/// two-patch series for hello's master in `list.mbox`, a token file and a
/// config pointing at them.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mbox = hello_series(p);
    std::fs::write(p.join("series.mbox"), mbox).unwrap();
    std::fs::copy(p.join("series.mbox"), p.join("list.mbox")).unwrap();
    std::fs::write(p.join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        r#"
[intake]
source = "mbox"
mbox_format = "none"
path = "list.mbox"
archive_dir = "archive"

[[repos]]
name = "hello"
path = "hello.git"

[[repos]]
name = "world"
path = "hello.git"

[state]
db = "state/patchline.db"

[server]
token_file = "token"
public_url = "https://ci.example.org/patchline/"
"#,
    )
    .unwrap();
    dir
}

/// A response: status, headers (names lower-cased), body.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    what: String,
}

impl Resp {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.text()))
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Asserts the status and, for errors, the JSON error shape; returns
    /// the body as JSON when it is JSON.
    pub(crate) fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text());
        if status >= 400 {
            let body = self.json();
            assert_eq!(body["status"], status, "{}: {body}", self.what);
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{}: {body}",
                self.what
            );
            return body;
        }
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The worker process; killed when dropped. Its stderr is kept and shown
/// when something fails.
pub(crate) struct Worker {
    child: Child,
    pub(crate) addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Worker {
    pub(crate) fn spawn(site: &Path) -> Worker {
        Worker::spawn_with(site, &[])
    }

    /// With `global` arguments before the subcommand (e.g. `-vv`).
    fn spawn_with(site: &Path, global: &[&str]) -> Worker {
        let mut child = Command::new(patchline_bin())
            .args(global)
            .args([
                "--config",
                "patchline.toml",
                "serve",
                "--bind",
                "127.0.0.1:0",
            ])
            .current_dir(site)
            .env_remove("PATCHLINE_CONFIG")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.org")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn patchline serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "patchline serve did not start\n--- stderr\n{}",
                    stderr.lock().unwrap()
                )
            });
        Worker {
            child,
            addr,
            stderr,
        }
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let what = format!("{method} {path}");
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        // The server may answer (413) before reading a large body.
        let _ = s.write_all(head.as_bytes());
        if let Some(b) = body {
            let _ = s.write_all(b);
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no HTTP response: {:?}\n{}",
                    String::from_utf8_lossy(&raw),
                    self.log()
                )
            });
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            body = dechunk(&body);
        }
        Resp {
            status,
            headers,
            body,
            what,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(TOKEN), &[], None)
    }

    pub(crate) fn post(&self, path: &str, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let ct: &[(&str, &str)] = if bytes.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        self.request("POST", path, Some(TOKEN), ct, bytes.as_deref())
    }

    pub(crate) fn new_run(&self, repos: Option<&[&str]>) -> i64 {
        let mut body = json!({"trigger": "api", "cause": "integration test"});
        if let Some(r) = repos {
            body["repos"] = json!(r);
        }
        self.post("/api/v1/runs", Some(body)).expect(201)["id"]
            .as_i64()
            .unwrap()
    }

    /// Polls a stage until it leaves queued/running.
    fn wait_stage(&self, run: i64, stage: &str) -> Value {
        let start = Instant::now();
        loop {
            let view = self
                .get(&format!("/api/v1/runs/{run}/stages/{stage}"))
                .expect(200);
            let state = view["state"].as_str().unwrap_or("").to_owned();
            if state != "queued" && state != "running" {
                return view;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "stage {stage} never finished\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn run_stage(&self, run: i64, stage: &str) -> Value {
        self.post(&format!("/api/v1/runs/{run}/stages/{stage}"), None)
            .expect(202);
        self.wait_stage(run, stage)
    }

    pub(crate) fn log(&self) -> String {
        format!("--- worker stderr\n{}", self.stderr.lock().unwrap())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
}

/// The state of each stage of a run view, in pipeline order.
fn stage_states(view: &Value) -> Vec<&str> {
    view["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect()
}

fn stage_rows(site: &Path) -> i64 {
    let db = rusqlite::Connection::open(site.join("state/patchline.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM stages", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn auth_and_bad_input_get_clear_errors_and_change_nothing() {
    let site = site();
    let w = Worker::spawn(site.path());
    let run = w.new_run(Some(&["hello"]));

    // Health needs no token; everything else does, even unknown paths.
    assert_eq!(
        w.request("GET", "/api/v1/healthz", None, &[], None)
            .expect(200)["status"],
        "ok"
    );
    let r = w.request("GET", "/api/v1/runs", None, &[], None);
    assert!(
        r.expect(401)["message"]
            .as_str()
            .unwrap()
            .contains("missing Authorization")
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"patchline\"")
    );
    w.request(
        "GET",
        "/api/v1/metrics",
        None,
        &[("Authorization", "Basic dXNlcjpwdw==")],
        None,
    )
    .expect(401);
    w.request("GET", "/no/such/thing", None, &[], None)
        .expect(401);
    let r = w.request(
        "POST",
        &format!("/api/v1/runs/{run}/stages/collect"),
        Some("wrong-token-0123456789"),
        &[],
        None,
    );
    assert_eq!(r.expect(403)["error"], "forbidden");
    // A token that differs only in its last character, or is a prefix.
    w.request(
        "GET",
        "/api/v1/runs",
        Some(&TOKEN[..TOKEN.len() - 1]),
        &[],
        None,
    )
    .expect(403);
    let mut near = TOKEN.to_owned();
    near.pop();
    near.push('x');
    w.request("GET", "/api/v1/runs", Some(&near), &[], None)
        .expect(403);
    assert!(
        !w.log().contains(TOKEN),
        "the token was logged\n{}",
        w.log()
    );

    // Unknown run, unknown stage, traversal in every path parameter.
    for path in [
        "/api/v1/runs/999".to_owned(),
        "/api/v1/runs/999/junit.xml".to_owned(),
        "/api/v1/runs/999/stages/collect".to_owned(),
        "/api/v1/runs/999/stages/collect/log".to_owned(),
        format!("/api/v1/runs/{run}/stages/deploy"),
        "/api/v1/runs/abc".to_owned(),
        "/api/v1/runs/-1".to_owned(),
        "/api/v1/runs/..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("/api/v1/runs/{run}/stages/..%2F..%2F..%2Fetc%2Fpasswd/log"),
        format!("/api/v1/runs/{run}/stages/../../../../etc/passwd"),
        format!("/api/v1/runs/{run}/stages/%2e%2e/log"),
        "/api/v1/nothing".to_owned(),
    ] {
        let body = w.get(&path).expect(404);
        assert!(
            !body["message"].as_str().unwrap().contains("root:"),
            "{path}: {body}"
        );
    }
    let body = w.post("/api/v1/runs/999/stages/collect", None).expect(404);
    assert_eq!(body["message"], "run 999 does not exist");
    let body = w
        .post(&format!("/api/v1/runs/{run}/stages/..%2Fcollect"), None)
        .expect(404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stages are collect"),
        "{body}"
    );
    w.request(
        "DELETE",
        &format!("/api/v1/runs/{run}"),
        Some(TOKEN),
        &[],
        None,
    )
    .expect(405);

    // Bodies: malformed, invalid, unknown fields, too large, not JSON.
    let post_raw = |body: &[u8], ct: &str| {
        w.request(
            "POST",
            "/api/v1/runs",
            Some(TOKEN),
            &[("Content-Type", ct)],
            Some(body),
        )
    };
    assert!(
        post_raw(b"{\"trigger\": \"api\",", "application/json").expect(400)["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    post_raw(b"not json", "application/json").expect(400);
    for bad in [
        json!({"trigger": "cron", "cause": "x"}),
        json!({"cause": "x"}),
        json!({"trigger": "api"}),
        json!({"trigger": "api", "cause": "x", "admin": true}),
        json!({"trigger": "api", "cause": 5}),
        json!({"trigger": "api", "cause": "x", "repos": ["../../etc"]}),
        json!({"trigger": "api", "cause": "x", "jenkins_url": "javascript:alert(1)"}),
        json!({"trigger": "api", "cause": ""}),
    ] {
        let r = post_raw(bad.to_string().as_bytes(), "application/json");
        assert_eq!(r.expect(422)["error"], "invalid", "{bad}");
    }
    let huge = json!({"trigger": "api", "cause": "x".repeat(64 * 1024)}).to_string();
    assert!(
        post_raw(huge.as_bytes(), "application/json").expect(413)["message"]
            .as_str()
            .unwrap()
            .contains("larger than the limit")
    );
    post_raw(b"trigger=api", "application/x-www-form-urlencoded").expect(415);
    for q in [
        "limit=0",
        "limit=1000",
        "limit=abc",
        "before=x",
        "color=red",
    ] {
        w.get(&format!("/api/v1/runs?{q}")).expect(422);
    }
    for q in ["offset=-1", "offset=abc", "offset=99999"] {
        w.get(&format!("/api/v1/runs/{run}/stages/collect/log?{q}"))
            .expect(422);
    }

    // None of it created a run or touched a stage.
    let page = w.get("/api/v1/runs").expect(200);
    assert_eq!(page["runs"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(stage_rows(site.path()), 0);
    let view = w.get(&format!("/api/v1/runs/{run}")).expect(200);
    assert!(
        view["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "pending"),
        "{view}"
    );
}

#[test]
fn stages_run_in_order_one_run_per_repository() {
    let site = site();
    let w = Worker::spawn(site.path());
    let run = w.new_run(Some(&["hello"]));
    let body = w
        .post(&format!("/api/v1/runs/{run}/stages/apply"), None)
        .expect(409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("collect must finish ok first (it is not started)"),
        "{body}"
    );
    assert_eq!(
        stage_rows(site.path()),
        0,
        "a refused start changes nothing"
    );

    // A second run for the same repository is refused, naming this one;
    // another repository is free.
    let body = w
        .post(
            "/api/v1/runs",
            Some(json!({"trigger": "timer", "cause": "nightly"})),
        )
        .expect(409);
    assert_eq!(body["run"], run);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("run {run} is still running for repository hello")),
        "{body}"
    );
    let other = w.new_run(Some(&["world"]));

    let collect = w.run_stage(run, "collect");
    assert_eq!(collect["state"], "ok", "{collect}\n{}", w.log());
    assert_eq!(collect["summary"]["series_complete"], 1, "{collect}");

    // The log, read by offset until it is exhausted.
    let first = w.get(&format!("/api/v1/runs/{run}/stages/collect/log?offset=0"));
    first.expect(200);
    let next: u64 = first.header("x-next-offset").unwrap().parse().unwrap();
    assert_eq!(next, first.body.len() as u64);
    assert_eq!(first.header("x-stage-state"), Some("ok"));
    let text = first.text();
    assert!(
        text.contains("collect of run") && text.contains("finished ok"),
        "{text}"
    );
    let rest = w.get(&format!(
        "/api/v1/runs/{run}/stages/collect/log?offset={next}"
    ));
    rest.expect(200);
    assert!(rest.body.is_empty());
    assert_eq!(
        rest.header("x-next-offset"),
        Some(next.to_string().as_str())
    );
    let tail = w.get(&format!(
        "/api/v1/runs/{run}/stages/collect/log?offset={}",
        next - 5
    ));
    assert_eq!(tail.body, first.body[first.body.len() - 5..]);

    let body = w
        .post(&format!("/api/v1/runs/{run}/stages/build"), None)
        .expect(409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("apply must finish ok first"),
        "{body}"
    );
    let apply = w.run_stage(run, "apply");
    assert_eq!(apply["state"], "ok", "{apply}\n{}", w.log());
    assert_eq!(apply["summary"]["patches_applied"], 2, "{apply}");

    let junit = w.get(&format!("/api/v1/runs/{run}/junit.xml"));
    junit.expect(200);
    let xml = junit.text();
    // The two patches, and the series (nothing built yet, nothing failed).
    assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    assert!(
        xml.contains(
            "classname=\"apply.hello.master\" name=\"[1/2] [master PATCH hello 1/2] Shout two\""
        ),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
    let series = w.get("/api/v1/series").expect(200);
    let id = series["series"][0]["id"].as_i64().unwrap();
    assert!(
        xml.contains(&format!(
            "<testsuite name=\"patchline run {run}: series\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0.000\">\n    <properties>\n      <property name=\"url\" value=\"https://ci.example.org/patchline/ui/runs/{run}\"/>"
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<testcase classname=\"series.hello.master\" name=\"*** SUBJECT HERE *** v1 (2 patches)\" time=\"0.000\">\n      <system-out>status page: https://ci.example.org/patchline/ui/series/{id}\n"
        )),
        "{xml}"
    );

    let view = w.get(&format!("/api/v1/runs/{run}")).expect(200);
    let states = stage_states(&view);
    assert_eq!(
        states,
        ["ok", "ok", "pending", "pending", "pending", "pending"],
        "{view}"
    );
    assert_eq!(view["run"]["repos"], json!(["hello"]));

    // Re-running a finished stage is allowed (stages are idempotent).
    assert_eq!(w.run_stage(run, "apply")["summary"]["patches_applied"], 0);

    // report may run whatever came before; it finishes the run, which
    // frees the repository and refuses further stages.
    let report = w.run_stage(run, "report");
    assert!(
        ["ok", "skipped"].contains(&report["state"].as_str().unwrap()),
        "{report}"
    );
    let view = w.get(&format!("/api/v1/runs/{run}")).expect(200);
    assert!(view["run"]["finished_at"].is_i64(), "{view}");
    w.post(&format!("/api/v1/runs/{run}/stages/collect"), None)
        .expect(409);
    let again = w.new_run(Some(&["hello"]));

    let page = w.get("/api/v1/runs?limit=2").expect(200);
    let ids: Vec<i64> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [again, other]);
    let older = w.get(page["next"].as_str().unwrap()).expect(200);
    assert_eq!(older["runs"][0]["id"], run);
    assert!(older["next"].is_null());

    let metrics = w.get("/api/v1/metrics");
    metrics.expect(200);
    let text = metrics.text();
    assert!(
        text.contains("patchline_stages{stage=\"apply\",state=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("patchline_patches{series_state=\"applied\"} 3"),
        "{text}"
    );
    assert!(text.contains("patchline_jobs_running 0"), "{text}");
    let doc = w.get("/api/v1/openapi.json").expect(200);
    assert!(doc["paths"]["/api/v1/runs/{run}/stages/{stage}/log"].is_object());
}

#[test]
fn a_run_whose_only_stage_is_report_ends_failed() {
    let site = site();
    let w = Worker::spawn(site.path());
    let run = w.new_run(None);
    let report = w.run_stage(run, "report");
    assert_eq!(report["state"], "ok", "{report}\n{}", w.log());
    let view = w.get(&format!("/api/v1/runs/{run}")).expect(200);
    let states = stage_states(&view);
    assert_eq!(
        states,
        ["pending", "pending", "pending", "pending", "pending", "ok"]
    );
    assert_eq!(
        view["run"]["state"], "failed",
        "five stages never ran: {view}"
    );
    assert!(view["run"]["finished_at"].is_i64(), "{view}");
}

#[test]
fn a_run_applies_only_the_series_of_its_repositories() {
    let site = site();
    let w = Worker::spawn(site.path());
    let world = w.new_run(Some(&["world"]));
    assert_eq!(w.run_stage(world, "collect")["state"], "ok", "{}", w.log());
    let apply = w.run_stage(world, "apply");
    assert_eq!(apply["state"], "ok", "{apply}\n{}", w.log());
    assert_eq!(
        apply["summary"]["series_applied"], 0,
        "hello's series waits: {apply}"
    );
    assert_eq!(w.run_stage(world, "report")["state"], "ok");
    let hello = w.new_run(Some(&["hello"]));
    assert_eq!(w.run_stage(hello, "collect")["state"], "ok");
    let apply = w.run_stage(hello, "apply");
    assert_eq!(
        apply["summary"]["patches_applied"],
        2,
        "{apply}\n{}",
        w.log()
    );
    assert_eq!(apply["continues"], true, "{apply}");
}

#[test]
fn concurrent_starts_and_a_killed_worker_resume() {
    let site = site();
    // A FIFO as the mailbox: collect blocks opening it until the test
    // writes, so the stage is reliably running.
    let list = site.path().join("list.mbox");
    std::fs::remove_file(&list).unwrap();
    let status = Command::new("mkfifo").arg(&list).status().unwrap();
    assert!(status.success());
    let mut w = Worker::spawn(site.path());
    let run = w.new_run(None);

    let addr = w.addr.clone();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                write!(s, "POST /api/v1/runs/{run}/stages/collect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out.split(' ').nth(1).unwrap_or("").to_owned()
            })
        })
        .collect();
    let mut codes: Vec<String> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    codes.sort();
    assert_eq!(
        codes,
        ["202", "409", "409", "409", "409", "409"],
        "{}",
        w.log()
    );
    let body = w
        .post(&format!("/api/v1/runs/{run}/stages/report"), None)
        .expect(409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stage collect of run"),
        "{body}"
    );

    // Kill the worker mid-stage: the restarted one reports it interrupted.
    let start = Instant::now();
    while w.get(&format!("/api/v1/runs/{run}/stages/collect")).json()["state"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", w.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    w.kill();
    drop(w);
    std::fs::remove_file(&list).unwrap();
    std::fs::copy(site.path().join("series.mbox"), &list).unwrap();
    let w = Worker::spawn(site.path());
    let view = w
        .get(&format!("/api/v1/runs/{run}/stages/collect"))
        .expect(200);
    assert_eq!(view["state"], "interrupted", "{view}");
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("start the stage again"),
        "{view}"
    );
    // Still the repositories' unfinished run.
    assert_eq!(
        w.post(
            "/api/v1/runs",
            Some(json!({"trigger": "api", "cause": "x"}))
        )
        .expect(409)["run"],
        run
    );
    let collect = w.run_stage(run, "collect");
    assert_eq!(collect["state"], "ok", "{collect}\n{}", w.log());
    assert_eq!(collect["summary"]["patches"], 2, "{collect}");
    let log = w
        .get(&format!("/api/v1/runs/{run}/stages/collect/log"))
        .text();
    assert_eq!(
        log.matches("collect of run").count(),
        3,
        "both attempts are in the log: {log}"
    );
}

/// The curl commands of docs/api.md, run in order against a fresh worker.
#[test]
fn the_curl_commands_of_the_api_doc_work() {
    let site = site();
    let w = Worker::spawn(site.path());
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut script = String::from("set -euo pipefail\n");
    let mut blocks = 0;
    let mut inside = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```sh") {
            inside = true;
            blocks += 1;
        } else if inside && line.trim_start().starts_with("```") {
            inside = false;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(blocks >= 10, "docs/api.md has {blocks} sh blocks");
    for endpoint in [
        "healthz",
        "metrics",
        "openapi.json",
        "junit.xml",
        "/log?offset=",
        "/api/v1/series?",
        "/api/v1/series/$SERIES",
    ] {
        assert!(
            script.contains(endpoint),
            "docs/api.md has no curl for {endpoint}"
        );
    }
    let token_file = site.path().join("token");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(site.path())
        .env("PATCHLINE_URL", format!("http://{}", w.addr))
        .env(
            "PATCHLINE_TOKEN",
            std::fs::read_to_string(token_file).unwrap().trim(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/api.md commands failed\n--- stdout\n{}\n--- stderr\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.log()
    );
}

#[test]
fn the_worker_does_not_start_without_a_usable_token() {
    let site = site();
    let p = site.path();
    let config = std::fs::read_to_string(p.join("patchline.toml")).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        config.replace("token_file = \"token\"\n", ""),
    )
    .unwrap();
    let ran = crate::util::patchline(p, &["serve", "--bind", "127.0.0.1:0"]).fails_with(2);
    assert!(ran.stderr().contains("no API token"), "{}", ran.describe());
    std::fs::write(p.join("short"), "abc\n").unwrap();
    let ran = crate::util::patchline(
        p,
        &["serve", "--bind", "127.0.0.1:0", "--token-file", "short"],
    )
    .fails_with(2);
    assert!(
        ran.stderr().contains("shorter than 16"),
        "{}",
        ran.describe()
    );
    let ran = crate::util::patchline(
        p,
        &["serve", "--bind", "127.0.0.1:0", "--token-file", "missing"],
    )
    .fails_with(2);
    assert!(
        ran.stderr().contains("cannot read the API token file"),
        "{}",
        ran.describe()
    );
}

#[test]
fn the_publish_directory_is_served_without_a_token() {
    let site = site();
    let p = site.path();
    // A published repository as the publish stage lays it out: the target
    // a symlink to a hidden snapshot.
    let snapshot = p.join("state/publish/hello/.snapshots/el9-run1/noarch");
    std::fs::create_dir_all(snapshot.join("repodata")).unwrap();
    std::fs::write(
        snapshot.join("hello-1.0-1.el9.noarch.rpm"),
        b"\xed\xab\xee\xdbrpm",
    )
    .unwrap();
    std::fs::write(snapshot.join("repodata/repomd.xml"), "<repomd/>\n").unwrap();
    std::os::unix::fs::symlink(".snapshots/el9-run1", p.join("state/publish/hello/el9")).unwrap();
    let worker = Worker::spawn(p);
    let anonymous = |path: &str| worker.request("GET", path, None, &[], None);

    let listing = anonymous("/repos/hello/el9/noarch/");
    assert_eq!(listing.status, 200, "{}", listing.text());
    assert!(
        listing.text().contains("hello-1.0-1.el9.noarch.rpm"),
        "{}",
        listing.text()
    );
    let rpm = anonymous("/repos/hello/el9/noarch/hello-1.0-1.el9.noarch.rpm");
    assert_eq!(rpm.status, 200);
    assert_eq!(rpm.body, b"\xed\xab\xee\xdbrpm");
    assert_eq!(
        anonymous("/repos/hello/el9/noarch/repodata/repomd.xml").text(),
        "<repomd/>\n"
    );
    // Hidden snapshots, paths out of the directory: not served.
    let hidden = anonymous("/repos/hello/.snapshots/el9-run1/noarch/hello-1.0-1.el9.noarch.rpm");
    assert!(matches!(hidden.status, 400 | 404), "{}", hidden.status);
    assert_ne!(anonymous("/repos/../patchline.toml").status, 200);
    assert_ne!(
        anonymous("/repos/hello/%2e%2e/%2e%2e/patchline.toml").status,
        200
    );
    // The API still wants its token.
    worker
        .request("GET", "/api/v1/runs", None, &[], None)
        .expect(401);
}

/// Symlinks in the publish directory are followed only inside it: a link
/// to /etc/passwd or to the state database answers 404, the snapshot
/// switch still works. A token put in a query string is not accepted and
/// never logged, even at `-vv`.
#[test]
fn repos_never_leave_the_publish_directory_and_tokens_never_reach_the_log() {
    let site = site();
    let p = site.path();
    let publish = p.join("state/publish/hello");
    let snapshot = publish.join(".snapshots/el9-run1/noarch");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(snapshot.join("hello-1.0-1.el9.noarch.rpm"), b"rpm").unwrap();
    std::os::unix::fs::symlink(".snapshots/el9-run1", publish.join("el9")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", publish.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", publish.join("etc")).unwrap();
    std::fs::write(p.join("state/secret.db"), b"SQLite format 3").unwrap();
    std::os::unix::fs::symlink(p.join("state/secret.db"), publish.join("state.db")).unwrap();
    std::os::unix::fs::symlink("../../secret.db", publish.join("relative.db")).unwrap();
    let worker = Worker::spawn_with(p, &["-vv"]);
    let anonymous = |path: &str| worker.request("GET", path, None, &[], None);
    assert_eq!(
        anonymous("/repos/hello/el9/noarch/hello-1.0-1.el9.noarch.rpm").body,
        b"rpm"
    );
    for escape in [
        "/repos/hello/passwd",
        "/repos/hello/etc/passwd",
        "/repos/hello/etc/",
        "/repos/hello/state.db",
        "/repos/hello/relative.db",
    ] {
        let got = anonymous(escape);
        assert_eq!(got.status, 404, "{escape}: {}", worker.log());
        assert!(!got.text().contains("root:"), "{escape}");
        assert!(!got.text().contains("SQLite"), "{escape}");
    }
    // A token in the query string: refused (only the header counts) and
    // not in the log, in any form.
    let secret = std::fs::read_to_string(p.join("token")).unwrap_or_default();
    let secret = secret.trim();
    assert!(secret.len() >= 16, "the site's token: {secret:?}");
    for path in [
        format!("/api/v1/runs?token={secret}"),
        format!("/api/v1/runs?access_token={secret}&x=1"),
    ] {
        worker.request("GET", &path, None, &[], None).expect(401);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = worker.log();
    assert!(
        log.contains("GET /api/v1/runs"),
        "requests are logged: {log}"
    );
    assert!(!log.contains(secret), "the token reached the log: {log}");
    assert!(!log.contains('\x1b'), "no colour codes in a pipe: {log}");
}

/// The Message-IDs of the mails in `mbox`, in order.
pub(crate) fn message_ids(mbox: &str) -> Vec<String> {
    mbox.lines()
        .filter_map(|l| {
            l.strip_prefix("Message-ID: <")
                .or(l.strip_prefix("Message-Id: <"))
        })
        .map(|l| l.trim_end_matches('>').to_owned())
        .collect()
}

/// A reply from `from` to `parent` (in the thread of `root`).
fn reply_mail(id: &str, from: &str, root: &str, parent: &str, body: &str) -> String {
    format!(
        "From: {from}\nTo: list@example.org\nSubject: Re: [master PATCH hello 1/2] Shout two\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-Id: <{id}>\nIn-Reply-To: <{parent}>\nReferences: <{root}> <{parent}>\n\n{body}"
    )
}

fn append_list(site: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(site.join("list.mbox"))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn ids_of(page: &Value) -> Vec<i64> {
    page["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {page}"))
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

/// A real series collected and applied through the API, with a v2 that
/// supersedes it, a review reply, a reply to that reply, a late trailer
/// and a series of another repository: listed with each filter and paged,
/// and one series read with its mails, trailers, versions, replies and
/// the run that applied it.
#[test]
fn series_are_listed_by_state_repo_and_age_and_read_with_their_thread() {
    use crate::util::{MailSpec, diff_body, format_series, git, mail, mbox};
    let site = site();
    let p = site.path();
    let src = p.join("src");
    let v1 = std::fs::read_to_string(p.join("series.mbox"))
        .unwrap()
        .replace("*** SUBJECT HERE ***", "Two changes");
    // v2: "Add bee" adds "bees"; new Message-IDs (git makes them from the
    // commit and the second).
    git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(src.join("b.txt"), "bees\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "Add bee"]);
    let v2 = format_series(&src, &["-v2"])
        .replace("*** SUBJECT HERE ***", "Two changes")
        .replace(".git.", ".v2.git.");
    let v2_ids = message_ids(&v2);
    let (cover, p1, p2) = (&v2_ids[0], &v2_ids[1], &v2_ids[2]);
    let ada = "Reviewed-by: Ada Lovelace <ada@example.org>";
    let replies = mbox(&[
        reply_mail(
            "review@example.org",
            "Ada Lovelace <ada@example.org>",
            cover,
            p1,
            &format!("> Shout two\n\nRight.\n\n{ada}\n"),
        ),
        reply_mail(
            "thanks@example.org",
            "Test Author <author@example.org>",
            cover,
            "review@example.org",
            "Thanks!\n",
        ),
    ]);
    std::fs::write(p.join("list.mbox"), format!("{v1}{v2}{replies}")).unwrap();

    let w = Worker::spawn(p);
    let run = w.new_run(Some(&["hello"]));
    assert_eq!(w.run_stage(run, "collect")["state"], "ok", "{}", w.log());
    assert_eq!(w.run_stage(run, "apply")["state"], "ok", "{}", w.log());
    w.run_stage(run, "report");

    // Later: a late trailer for v2's patch 2, and a series of `world`
    // (received a second later, for `since`), which run 2 does not cover.
    std::thread::sleep(Duration::from_millis(1100));
    let dave = "Tested-by: Dave Late <dave@example.org>";
    let world = mail(&MailSpec {
        message_id: "world.1@example.org",
        subject: "[master PATCH world] Change c.txt",
        from: "Wendy World <wendy@example.org>",
        in_reply_to: None,
        body: &diff_body("c.txt", "more"),
    });
    let late = reply_mail(
        "late@example.org",
        "Dave Late <dave@example.org>",
        cover,
        p2,
        &format!("Works.\n\n{dave}\n"),
    );
    append_list(p, &mbox(&[late, world]));
    let run2 = w.new_run(Some(&["hello"]));
    assert_eq!(w.run_stage(run2, "collect")["state"], "ok", "{}", w.log());
    assert_eq!(w.run_stage(run2, "apply")["state"], "ok", "{}", w.log());

    // Every series, newest first.
    let all = w.get("/api/v1/series").expect(200);
    let list = all["series"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{all}");
    assert_eq!(all["next"], Value::Null);
    let by_state = |state: &str| {
        list.iter()
            .find(|s| s["state"] == state)
            .unwrap_or_else(|| panic!("no {state} series in {all}"))
    };
    let (old, new, other) = (
        by_state("superseded"),
        by_state("applied"),
        by_state("complete"),
    );
    let (old_id, new_id, other_id) = (
        old["id"].as_i64().unwrap(),
        new["id"].as_i64().unwrap(),
        other["id"].as_i64().unwrap(),
    );
    let mut sorted = ids_of(&all);
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids_of(&all), sorted, "newest first");
    // The key of a later version of a series whose first Message-ID it
    // shares is made unique with its version.
    assert!(
        new["key"].as_str().unwrap().starts_with(cover.as_str()),
        "{all}"
    );
    assert_eq!(
        (
            &new["title"],
            &new["version"],
            &new["repo"],
            &new["branch"],
            &new["total"]
        ),
        (
            &json!("Two changes"),
            &json!(2),
            &json!("hello"),
            &json!("master"),
            &json!(2)
        )
    );
    // The cover letter's sender: git format-patch signs it as the committer.
    assert_eq!(new["author"], "committer@example.org");
    assert_eq!(new["missing"], json!([]));
    assert_eq!(new["applied_run"], run);
    assert_eq!(new["url"], format!("/api/v1/series/{new_id}"));
    assert_eq!(old["superseded_by"], new["key"]);
    assert_eq!(old["applied_run"], Value::Null);
    assert_eq!(
        (&other["repo"], &other["total"]),
        (&json!("world"), &json!(1))
    );

    // Each filter.
    let ids = |q: &str| ids_of(&w.get(&format!("/api/v1/series?{q}")).expect(200));
    assert_eq!(ids("state=applied"), [new_id]);
    assert_eq!(ids("state=superseded"), [old_id]);
    assert_eq!(ids("state=failed"), Vec::<i64>::new());
    assert_eq!(ids("repo=world"), [other_id]);
    assert_eq!(ids("repo=hello&state=complete"), Vec::<i64>::new());
    let later = other["first_received"].as_i64().unwrap();
    assert!(later > new["first_received"].as_i64().unwrap(), "{all}");
    assert_eq!(ids(&format!("since={later}")), [other_id]);
    assert_eq!(ids("since=2020-01-01").len(), 3);
    assert_eq!(ids("since=2020-01-01T00:00:00Z").len(), 3);
    assert_eq!(ids("since=2100-01-01T00:00:00%2B01:00"), Vec::<i64>::new());

    // Pages of one, following `next` (which keeps the filters).
    let mut seen = Vec::new();
    let mut url = "/api/v1/series?limit=1&since=2020-01-01".to_owned();
    loop {
        let page = w.get(&url).expect(200);
        seen.extend(ids_of(&page));
        match page["next"].as_str() {
            Some(next) => {
                assert!(
                    next.contains("since=") && next.contains("limit=1"),
                    "{next}"
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, ids_of(&all));

    // One series: its mails with their trailers, versions, replies, and
    // the run that applied it.
    let one = w.get(&format!("/api/v1/series/{new_id}")).expect(200);
    assert_eq!(one["id"], new_id);
    assert_eq!(one["state"], "applied");
    let patches = one["patches"].as_array().unwrap();
    let indexes: Vec<i64> = patches
        .iter()
        .map(|m| m["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2], "the cover letter and both patches");
    let mids: Vec<&str> = patches
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(mids, [cover.as_str(), p1.as_str(), p2.as_str()]);
    assert_eq!(
        patches[1]["subject"],
        "[master PATCH hello v2 1/2] Shout two"
    );
    assert_eq!(patches[1]["author"], "Test Author <author@example.org>");
    assert!(
        patches[1]["archive_path"]
            .as_str()
            .unwrap()
            .ends_with(".patch"),
        "{one}"
    );
    assert_eq!(
        patches[1]["trailers"],
        json!([{"trailer": ada, "source": "reply", "reply": "review@example.org"}])
    );
    assert_eq!(patches[1]["late_trailers"], json!([]));
    assert_eq!(patches[2]["trailers"], json!([]));
    assert_eq!(
        patches[2]["late_trailers"],
        json!([{"trailer": dave, "source": "reply", "reply": "late@example.org"}])
    );
    let versions = one["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{one}");
    assert_eq!(
        (&versions[0]["id"], &versions[0]["version"]),
        (&json!(old_id), &json!(1))
    );
    let back = w.get(&format!("/api/v1/series/{old_id}")).expect(200);
    assert_eq!(back["versions"][0]["id"], new_id, "linked both ways");
    assert_eq!(back["applied"], Value::Null);
    let replies: Vec<&str> = one["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        replies,
        [
            "review@example.org",
            "thanks@example.org",
            "late@example.org"
        ]
    );
    let review = &one["replies"][0];
    assert_eq!(review["from"], "Ada Lovelace <ada@example.org>");
    assert_eq!(review["in_reply_to"], p1.as_str());
    assert_eq!(review["subject"], "Re: [master PATCH hello 1/2] Shout two");
    assert_eq!(review["date"], 1_795_514_400);
    let applied = &one["applied"];
    assert_eq!(applied["run"], run);
    assert_eq!(applied["run_url"], format!("/api/v1/runs/{run}"));
    assert_eq!(applied["state"], "applied");
    let tip = git(&p.join("hello.git"), &["rev-parse", "master"]);
    assert_eq!(applied["new_tip"], tip.trim());
    let commits = applied["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[1], tip.trim());
    assert!(
        applied["old_tip"].is_string() && applied["error"].is_null(),
        "{one}"
    );
    assert_eq!(applied["based_on"], json!([]));
    assert_eq!(applied["applied_from"], Value::Null);

    // Refusals: bad filters name the parameter; unknown or malformed ids
    // are not found; no token, no series.
    for (q, names) in [
        ("state=done", "state"),
        ("state=", "state"),
        ("since=yesterday", "since"),
        ("since=-1", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("before=x", "before"),
        ("color=red", "color"),
    ] {
        let body = w.get(&format!("/api/v1/series?{q}")).expect(422);
        assert_eq!(body["error"], "invalid");
        assert!(
            body["message"].as_str().unwrap().contains(names),
            "{q}: {body}"
        );
    }
    for path in ["999", "0", "-1", "abc", "..%2F1"] {
        w.get(&format!("/api/v1/series/{path}")).expect(404);
    }
    assert_eq!(
        w.get("/api/v1/series/999").expect(404)["message"],
        "series 999 does not exist"
    );
    for path in ["/api/v1/series", &format!("/api/v1/series/{new_id}")] {
        w.request("GET", path, None, &[], None).expect(401);
        w.request("GET", path, Some("wrong-token-0123456789"), &[], None)
            .expect(403);
    }
    w.request("POST", "/api/v1/series", Some(TOKEN), &[], None)
        .expect(405);
}

/// The hostile HTTP requests of `tests/corpus/hostile/http.tsv`: each gets
/// the status the table says, the JSON error shape when it is an error,
/// and nothing outside the state directory changes (a shell command in a
/// parameter never runs).
#[test]
fn hostile_http_requests_get_clear_answers() {
    let site = site();
    let p = site.path();
    std::fs::create_dir_all(p.join("state/publish/hello")).unwrap();
    let canary = p.join("canary");
    std::fs::write(&canary, "untouched").unwrap();
    let worker = Worker::spawn(p);
    let table = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/corpus/hostile/http.tsv"
    ))
    .unwrap();
    let mut cases = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let [method, path, auth, body, status, note] = cols[..] else {
            panic!("bad row: {line:?}");
        };
        let path = path.replace("TOKEN", TOKEN);
        let basic = format!("Basic {TOKEN}");
        let (token, extra): (Option<&str>, Vec<(&str, &str)>) = match auth {
            "token" => (Some(TOKEN), vec![]),
            "wrong" => (Some("wrong-token-0123456789abcdef"), vec![]),
            "basic" => (None, vec![("Authorization", basic.as_str())]),
            _ => (None, vec![]),
        };
        let body = (body != "-").then(|| body.replace("\\n", "\n").into_bytes());
        let mut extra = extra;
        if body.is_some() {
            extra.push(("Content-Type", "application/json"));
        }
        let got = worker.request(method, &path, token, &extra, body.as_deref());
        let want: u16 = status.parse().unwrap();
        assert_eq!(
            got.status,
            want,
            "{method} {path} ({note}): {}\n{}",
            got.text(),
            worker.log()
        );
        if want >= 400 && !path.starts_with("/repos") {
            let error: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_else(|e| {
                panic!("{method} {path} ({note}): not JSON ({e}): {}", got.text())
            });
            assert!(
                error["error"].is_object() || error["error"].is_string(),
                "{method} {path}: {error}"
            );
        }
        cases += 1;
    }
    assert!(cases >= 25, "{cases} cases");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
    assert!(!p.join("pwned").exists() && !std::path::Path::new("pwned").exists());
}
