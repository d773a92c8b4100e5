//! The status page in a real browser: a series with a hostile cover letter
//! subject and a review reply goes through collect, apply, build, publish,
//! test and report in `patchline serve`; headless Chromium (driven over the
//! DevTools protocol) logs in through the form, reads the run and series
//! pages, follows their links, and writes screenshots of the series page
//! and the run page to `target/status-page/series.png` and `run.png`. The same pages are also checked
//! over plain HTTP: redirects, the login's cookie, the read-only token.
//!
//! Chromium is Debian's `chromium` (scripts/setup.sh installs it). Without
//! it the test fails under CI (`CI=true`) and is skipped elsewhere, saying
//! why.

use crate::serve::{TOKEN, Worker, message_ids};
use crate::util::{TINY_SPEC, change_greeting, git, tiny_repo};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;

const READONLY: &str = "read-only-token-0123456789";
const HOSTILE: &str = "<script>alert(1)</script> Greetings & \"quotes\"";

/// A site: `tiny.git` with a spec, built for `el9` with the local backend,
/// published under `/repos` of the worker itself, one test command; a
/// two-patch series with a cover letter whose subject is `HOSTILE`, and a
/// review of its first patch.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, TINY_SPEC);
    change_greeting(&src, "hello, world", "Greet the world");
    std::fs::write(src.join("NEWS"), "greets the world\n").unwrap();
    git(&src, &["add", "NEWS"]);
    git(&src, &["commit", "-q", "-m", "Add NEWS"]);
    let series = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--cover-letter",
            "--thread=shallow",
            "--subject-prefix=master PATCH tiny",
            "-2",
        ],
    )
    .replace("*** SUBJECT HERE ***", HOSTILE)
    .replace("*** BLURB HERE ***", "Two small changes.");
    let ids = message_ids(&series);
    let review = format!(
        "From rev@example.org Tue Nov 24 10:00:00 2026\nFrom: Rev Iewer <rev@example.org>\nTo: list@example.org\nSubject: Re: [master PATCH tiny 1/2] Greet the world\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-Id: <review-1@example.org>\nIn-Reply-To: <{}>\nReferences: <{}> <{}>\n\nLooks good.\n\nReviewed-by: Rev Iewer <rev@example.org>\n",
        ids[1], ids[0], ids[1]
    );
    std::fs::write(p.join("list.mbox"), format!("{series}\n{review}")).unwrap();
    std::fs::write(p.join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(p.join("readonly-token"), format!("{READONLY}\n")).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        r#"
[intake]
source = "mbox"
mbox_format = "none"
path = "list.mbox"
archive_dir = "archive"

[[repos]]
name = "tiny"
path = "tiny.git"
spec = "tiny.spec"
targets = ["el9"]

[[repos.tests]]
name = "greeting-installed"
command = ["test", "-n", "{nvr}"]

[publish]
base_url = "/repos"

[state]
db = "state/patchline.db"

[server]
token_file = "token"
readonly_token_file = "readonly-token"
"#,
    )
    .unwrap();
    dir
}

/// Where the screenshot goes: `target/status-page/`, next to the test
/// binaries' own output.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("status-page")
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// Headless Chromium and one page of it, driven over the DevTools
/// protocol (one websocket, the page as a flattened session).
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Events read while waiting for a reply.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(program: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(Ok(url.trim().to_owned()));
                }
                said.push_str(&line);
                said.push('\n');
            }
            let _ = tx.send(Err(said));
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(url)) => url,
            Ok(Err(said)) => panic!("chromium ended without a DevTools URL:\n{said}"),
            Err(_) => panic!("chromium printed no DevTools URL in 60 s"),
        };
        let (ws, _) = tungstenite::connect(url.as_str())
            .unwrap_or_else(|e| panic!("cannot connect to chromium at {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Page.enable", json!({}));
        b.call("Network.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Sends `method` (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let interrupted = |e: &tungstenite::Error| matches!(e, tungstenite::Error::Io(e) if e.kind() == std::io::ErrorKind::Interrupted);
        // Interrupted by a signal: the frame is queued, flushing finishes it.
        let mut sent = self.ws.send(tungstenite::Message::text(msg.to_string()));
        while sent.as_ref().is_err_and(interrupted) {
            sent = self.ws.flush();
        }
        sent.unwrap_or_else(|e| panic!("{method}: cannot send: {e}"));
        loop {
            let reply = self.read(method);
            if reply["id"] == id {
                if let Some(e) = reply.get("error") {
                    panic!("{method} failed: {e}");
                }
                return reply["result"].clone();
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    fn read(&mut self, what: &str) -> Value {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    return serde_json::from_str(t.as_str()).unwrap();
                }
                Ok(_) => continue,
                // A signal (another test's child ending) interrupted the
                // read: nothing was lost, read again (the 60 s read timeout
                // still bounds a silent browser).
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{what}: no answer from chromium: {e}"),
            }
        }
    }

    /// Waits for the page's next `Page.loadEventFired`.
    fn wait_load(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["method"] == "Page.loadEventFired")
            {
                self.events.drain(..=i);
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the page never loaded");
            let event = self.read(what);
            self.events.push(event);
        }
    }

    fn goto(&mut self, url: &str) {
        self.events.clear();
        let nav = self.call("Page.navigate", json!({"url": url}));
        assert!(nav.get("errorText").is_none(), "{url}: {nav}");
        self.wait_load(url);
    }

    /// The value of a JavaScript expression in the page (run by the
    /// browser's debugger: the page itself has no script and may run none).
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn path(&mut self) -> String {
        self.eval("location.pathname + location.search")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `action` (which submits a form or follows a link) and waits
    /// for the page it leads to.
    fn submit(&mut self, action: &str) {
        self.events.clear();
        self.eval(action);
        self.wait_load(action);
    }

    fn screenshot(&mut self, file: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        // The whole group: chromium's renderer and GPU helper processes.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

fn assert_has(text: &str, needles: &[&str], page: &str) {
    for n in needles {
        assert!(text.contains(n), "{page} lacks {n:?}:\n{text}");
    }
}

#[test]
fn the_status_page_shows_runs_and_series_in_a_real_browser() {
    let site = site();
    let w = Worker::spawn(site.path());
    let run = w.new_run(None);
    let mut stage_states = Vec::new();
    for stage in ["collect", "apply", "build", "publish", "test", "report"] {
        let view = w.run_stage(run, stage);
        let state = view["state"].as_str().unwrap_or("").to_owned();
        assert!(
            ["ok", "skipped"].contains(&state.as_str()),
            "{stage}: {view}\n{}",
            w.log()
        );
        stage_states.push(state);
    }
    let series = w.get("/api/v1/series").expect(200)["series"][0].clone();
    let id = series["id"].as_i64().unwrap();
    assert_eq!(series["state"], "applied", "{series}");
    let detail = w.get(&format!("/api/v1/series/{id}")).expect(200);
    let new_tip = detail["applied"]["new_tip"].as_str().unwrap().to_owned();

    // Over HTTP: no token, no session -> the login form, which comes back.
    let r = w.request("GET", "/ui/", None, &[], None);
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    let r = w.request("GET", &format!("/ui/runs/{run}"), None, &[], None);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location").unwrap(),
        format!("/ui/login?next=%2Fui%2Fruns%2F{run}")
    );
    let r = w.request("GET", "/ui", None, &[], None);
    assert_eq!(r.status, 303, "{}", r.text());
    let form = |token: &str| format!("token={token}&next=%2Fui%2Fseries%2F{id}");
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let wrong = w.request(
        "POST",
        "/ui/login",
        None,
        &ct,
        Some(form("not-the-token-0123456789").as_bytes()),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(wrong.header("set-cookie").is_none());
    assert_has(&wrong.text(), &["not this worker", "<form"], "wrong login");
    let good = w.request("POST", "/ui/login", None, &ct, Some(form(TOKEN).as_bytes()));
    assert_eq!(good.status, 303, "{}", good.text());
    assert_eq!(good.header("location").unwrap(), format!("/ui/series/{id}"));
    let cookie = good.header("set-cookie").unwrap().to_owned();
    assert_has(
        &cookie,
        &[
            "patchline_session=",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/ui",
        ],
        "cookie",
    );
    assert!(!cookie.contains(TOKEN), "the token is not the cookie");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = w.request(
        "GET",
        &format!("/ui/series/{id}"),
        None,
        &[("Cookie", &session)],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "{:?}",
        page.headers
    );
    let html = page.text();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; Greetings &amp; &quot;quotes&quot;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt; Greetings &amp; \"quotes\""),
        "the subject is escaped: {html}"
    );
    assert!(!html.contains("<script"), "no script at all: {html}");
    // A session is not an API credential, not even by a detour.
    for path in [
        "/api/v1/runs",
        "/ui/../api/v1/runs",
        "/ui/%2e%2e/api/v1/runs",
    ] {
        let api = w.request("GET", path, None, &[("Cookie", &session)], None);
        assert_eq!(api.status, 401, "{path}: {}", api.text());
    }

    // The read-only token reads the API and the pages, and starts nothing.
    w.request("GET", "/api/v1/runs", Some(READONLY), &[], None)
        .expect(200);
    let refused = w.request(
        "POST",
        "/api/v1/runs",
        Some(READONLY),
        &[("Content-Type", "application/json")],
        Some(br#"{"trigger": "api", "cause": "x"}"#),
    );
    let body = refused.expect(403);
    assert!(
        body["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let detour = w.request(
        "POST",
        "/ui/../api/v1/runs",
        Some(READONLY),
        &[("Content-Type", "application/json")],
        Some(br#"{"trigger": "api", "cause": "x"}"#),
    );
    assert_eq!(detour.status, 403, "{}", detour.text());
    let r = w.request("GET", &format!("/ui/runs/{run}"), Some(READONLY), &[], None);
    assert_eq!(r.status, 200);
    let mail = w.request(
        "GET",
        &format!("/ui/series/{id}/mails/1"),
        Some(READONLY),
        &[],
        None,
    );
    assert_eq!(mail.status, 200);
    assert_eq!(
        mail.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_has(
        &mail.text(),
        &["Subject: [master PATCH tiny 1/2] Greet the world"],
        "mail",
    );
    for (path, status) in [
        (format!("/ui/series/{id}/mails/9"), 404),
        (format!("/ui/series/{id}/mails/..%2F..%2Fetc"), 404),
        ("/ui/runs/x".to_owned(), 404),
        ("/ui/series/999".to_owned(), 404),
        (format!("/ui/runs/{run}/stages/nope/log"), 404),
    ] {
        let r = w.request("GET", &path, Some(READONLY), &[], None);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains("<h1>Error"), "{path}: {}", r.text());
    }
    let logout = w.request("POST", "/ui/logout", None, &[("Cookie", &session)], None);
    assert_eq!(logout.status, 303);
    let after = w.request("GET", "/ui/", None, &[("Cookie", &session)], None);
    assert_eq!(after.status, 303, "the session ended");

    // In the browser.
    let Some(program) = chromium() else {
        let why = "chromium is not installed (scripts/setup.sh installs Debian's chromium)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("status_page: browser part skipped: {why}");
        return;
    };
    let base = format!("http://{}", w.addr);
    let mut b = Browser::start(&program);
    b.goto(&format!("{base}/ui/runs/{run}"));
    assert_eq!(b.path(), format!("/ui/login?next=%2Fui%2Fruns%2F{run}"));
    assert_has(&b.text(), &["Log in", "Token"], "login page");
    b.submit(
        "document.getElementById('token').value = 'wrong-token-0123456789'; document.querySelector('form.login').submit()",
    );
    assert_has(
        &b.text(),
        &["That is not this worker's token"],
        "wrong login",
    );
    b.submit(&format!(
        "document.getElementById('token').value = '{READONLY}'; document.querySelector('form.login').submit()"
    ));
    assert_eq!(
        b.path(),
        format!("/ui/runs/{run}"),
        "back where it was going"
    );
    let cookies = b.call(
        "Network.getCookies",
        json!({"urls": [format!("{base}/ui/")]}),
    );
    let c = &cookies["cookies"][0];
    assert_eq!(
        (&c["name"], &c["httpOnly"], &c["sameSite"]),
        (&json!("patchline_session"), &json!(true), &json!("Strict")),
        "{cookies}"
    );

    let text = b.text();
    assert_has(
        &text,
        &[
            &format!("Run {run}"),
            "collect",
            "apply",
            "build",
            "publish",
            "test",
            "report",
            "patches_applied: 2",
            "Series applied in this run",
        ],
        "run page",
    );
    let states = b.eval(
        "[...document.querySelectorAll('table.stages tr[id] td:nth-child(2) .state')].map(e => e.textContent)",
    );
    assert_eq!(states, json!(stage_states), "{text}");
    b.screenshot(&screenshot_dir().join("run.png"));
    // A stage's log, as plain text.
    b.submit("document.querySelector('#stage-build a[href$=\"/log\"]').click()");
    assert_eq!(b.path(), format!("/ui/runs/{run}/stages/build/log"));
    assert_has(&b.text(), &[&format!("build of run {run}")], "build log");

    b.goto(&format!("{base}/ui/"));
    assert_has(
        &b.text(),
        &[
            "Recent runs",
            "Recent series",
            &format!("run {run}"),
            HOSTILE,
        ],
        "index",
    );
    b.goto(&format!("{base}/ui/series?state=applied&repo=tiny"));
    assert_has(&b.text(), &[HOSTILE], "series list");
    b.goto(&format!("{base}/ui/series?state=failed"));
    assert_has(&b.text(), &["No series."], "empty series list");

    b.goto(&format!("{base}/ui/series/{id}"));
    let text = b.text();
    assert_has(
        &text,
        &[
            HOSTILE,
            "v1",
            "applied",
            "[master PATCH tiny 1/2] Greet the world",
            "[master PATCH tiny 2/2] Add NEWS",
            "Reviewed-by: Rev Iewer <rev@example.org>",
            &new_tip,
            "el9",
            "tiny-2.1-3",
            "greeting-installed",
            "passed",
            "/repos/tiny",
            "Rev Iewer",
            "raw mail",
        ],
        "series page",
    );
    assert_eq!(b.eval("document.scripts.length"), json!(0));
    assert_eq!(
        b.eval("document.title"),
        json!(format!("{HOSTILE} — patchline"))
    );
    let file = screenshot_dir().join("series.png");
    b.screenshot(&file);
    println!("status page screenshot: {}", file.display());
    eprintln!("status page screenshot: {}", file.display());

    // Its links: the archived mail, the published repository, the run.
    b.submit("document.querySelector('table.patches a[href$=\"/mails/1\"]').click()");
    assert_has(
        &b.text(),
        &["Subject: [master PATCH tiny 1/2] Greet the world"],
        "raw mail",
    );
    b.goto(&format!("{base}/ui/series/{id}"));
    b.submit("document.querySelector('ul.published a').click()");
    assert!(b.path().starts_with("/repos/tiny"), "{}", b.path());
    assert_has(&b.text(), &["Index of /repos/tiny"], "published repository");
    b.goto(&format!("{base}/ui/series/{id}"));
    b.submit("document.querySelector('dl.where a').click()");
    assert_eq!(b.path(), format!("/ui/runs/{run}"));

    // Log out: the next page is the login form again.
    b.submit("document.querySelector('header form').submit()");
    assert_eq!(b.path(), "/ui/login");
    b.goto(&format!("{base}/ui/"));
    assert!(b.path().starts_with("/ui/login"), "{}", b.path());
}
