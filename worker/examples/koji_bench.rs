//! Koji benchmark against the hub double (`scripts/bench-koji.sh` runs it):
//!
//! 1. Polling cost: 50 concurrent build tasks watched with
//!    `KojiClient::watch_tasks`; the hub's HTTP request counter is read
//!    after every round and the requests of each round printed (must be 1).
//! 2. Build-stage overhead: `patchline run` on 10 repositories x 3 targets
//!    with the Koji backend; the build stage's wall time minus the time
//!    spent in rpmbuild (the local `rpmbuild -bs` of each SRPM, and the
//!    hub's build span from the first task started to the last finished).
//!
//! Usage: koji_bench HUB_BINARY PATCHLINE_BINARY

use patchline::rpm::koji::client::KojiClient;
use patchline::rpm::koji::profile::{AuthType, Resolved};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = "Name: NAME\nVersion: 1.0\nRelease: 1%{?dist}\nSummary: bench package\nLicense: MIT\nBuildArch: noarch\nSource0: %{name}-%{version}.tar.gz\n\n%description\nBench.\n\n%prep\n%autosetup\n\n%build\n\n%install\ninstall -D -m 0644 greeting %{buildroot}/usr/share/NAME/greeting\n\n%files\n/usr/share/NAME/greeting\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: koji_bench HUB_BINARY PATCHLINE_BINARY");
        std::process::exit(2);
    }
    // Absolute: the pipeline runs in a site directory.
    let hub = std::path::absolute(&args[1]).unwrap();
    let patchline = std::path::absolute(&args[2]).unwrap();
    polling(&hub);
    overhead(&hub, &patchline);
}

struct Hub {
    child: std::process::Child,
    url: String,
    _root: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(bin: &Path, targets: &str, extra: &[&str]) -> Hub {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args(["--bind", "127.0.0.1:0", "--targets", targets, "--root"])
        .arg(root.path())
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    Hub {
        child,
        url,
        _root: root,
    }
}

fn stats(hub: &Hub) -> serde_json::Value {
    let body = ureq::get(format!("{}/control/stats", hub.url))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=master",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn srpm(dir: &Path, name: &str) -> std::path::PathBuf {
    let top = dir.join("top");
    let src = dir.join(format!("{name}-1.0"));
    std::fs::create_dir_all(top.join("SOURCES")).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("greeting"), "hi\n").unwrap();
    let ok = Command::new("tar")
        .arg("czf")
        .arg(top.join(format!("SOURCES/{name}-1.0.tar.gz")))
        .arg("-C")
        .arg(dir)
        .arg(format!("{name}-1.0"))
        .status()
        .unwrap();
    assert!(ok.success());
    let spec = dir.join(format!("{name}.spec"));
    std::fs::write(&spec, SPEC.replace("NAME", name)).unwrap();
    let out = Command::new("rpmbuild")
        .args(["-bs", "--nodeps", "--define"])
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(out.status.success());
    top.join(format!("SRPMS/{name}-1.0-1.src.rpm"))
}

fn polling(hub_bin: &Path) {
    let targets: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    let hub = start_hub(hub_bin, &targets.join(","), &["--build-delay-ms", "1500"]);
    let dir = tempfile::tempdir().unwrap();
    let srpm = srpm(dir.path(), "pollbench");
    let settings = Resolved {
        server: format!("{}/kojihub", hub.url),
        topurl: format!("{}/kojifiles", hub.url),
        auth: AuthType::Password,
        user: Some("bench".into()),
        password: Some("pw".to_owned().into()),
        cert: None,
        serverca: None,
        scratch: true,
        poll: Duration::from_millis(250),
        timeout: Duration::from_secs(60),
        retries: 3,
        backoff: Duration::from_millis(100),
        blocksize: 1 << 20,
        task_timeout: Duration::from_secs(600),
    };
    let mut client = KojiClient::new(&settings).unwrap();
    client.login(&settings).unwrap();
    client.upload(&srpm, "bench").unwrap();
    let src = format!("bench/{}", srpm.file_name().unwrap().to_string_lossy());
    let mut ids = Vec::new();
    for i in 0..50 {
        let opts = kojiwire::structure([("scratch", kojiwire::Value::Boolean(true))]);
        let id = client
            .call(
                "build",
                vec![
                    kojiwire::string(&src),
                    kojiwire::string(&targets[i % targets.len()]),
                    opts,
                ],
                Default::default(),
            )
            .unwrap();
        ids.push(kojiwire::ValueExt::as_i64(&id).unwrap());
    }
    let mut last = stats(&hub)["http_requests"].as_u64().unwrap();
    let mut per_round = Vec::new();
    let mut round = 0;
    let watched = client
        .watch_tasks(
            &ids,
            settings.poll,
            settings.task_timeout,
            &mut |seen| {
                let now = stats(&hub)["http_requests"].as_u64().unwrap();
                round += 1;
                let open = seen.iter().filter(|s| !s.state.is_done()).count();
                println!(
                    "polling round {round:>3}: {:>2} tasks watched, {open:>2} not done, HTTP requests this round: {}",
                    seen.len(),
                    now - last
                );
                per_round.push(now - last);
                last = now;
            },
        )
        .unwrap();
    let closed = watched
        .iter()
        .filter(|s| s.state == kojiwire::TaskState::Closed)
        .count();
    println!(
        "polling: 50 tasks, {} rounds, HTTP requests per round: min {} max {}; {closed} tasks closed",
        per_round.len(),
        per_round.iter().min().unwrap(),
        per_round.iter().max().unwrap()
    );
    assert!(
        per_round.iter().all(|&n| n == 1),
        "a round took more than one request"
    );
    assert_eq!(closed, 50);
}

fn overhead(hub_bin: &Path, patchline: &Path) {
    let hub = start_hub(hub_bin, "el9,fc40,fc41", &[]);
    let site = tempfile::tempdir().unwrap();
    let p = site.path();
    let mut config = String::from(
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n",
    );
    let mut mbox = String::new();
    for i in 0..10 {
        let name = format!("pkg{i}");
        let src = p.join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        std::fs::write(
            src.join(format!("{name}.spec")),
            SPEC.replace("NAME", &name),
        )
        .unwrap();
        std::fs::write(src.join("greeting"), "hello\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", "base"]);
        git(
            p,
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                &format!("{name}.git"),
            ],
        );
        std::fs::write(src.join("greeting"), "hello, world\n").unwrap();
        git(
            &src,
            &["commit", "-q", "-am", &format!("Greet the world in {name}")],
        );
        mbox.push_str(&git(
            &src,
            &[
                "format-patch",
                "--stdout",
                &format!("--subject-prefix=master PATCH {name}"),
                "-1",
            ],
        ));
        config.push_str(&format!(
            "[[repos]]\nname = \"{name}\"\npath = \"{name}.git\"\nspec = \"{name}.spec\"\ntargets = [\"el9\", \"fc40\", \"fc41\"]\n\n"
        ));
    }
    std::fs::write(p.join("list.mbox"), mbox).unwrap();
    std::fs::write(p.join("pw"), "pw\n").unwrap();
    config.push_str(&format!(
        "[build]\nbackend = \"koji\"\n\n[build.koji]\nserver = \"{0}/kojihub\"\ntopurl = \"{0}/kojifiles\"\nuser = \"bench\"\npassword_file = \"pw\"\npoll_ms = 100\n",
        hub.url
    ));
    std::fs::write(p.join("patchline.toml"), config).unwrap();
    // rpmbuild -bs of one of these SRPMs, the part of the stage that is
    // rpmbuild on the worker's side (done once per repository).
    let probe = tempfile::tempdir().unwrap();
    let t = Instant::now();
    srpm(probe.path(), "probe");
    let srpm_ms = t.elapsed().as_secs_f64() * 1000.0;
    for step in ["collect", "apply"] {
        let out = Command::new(patchline)
            .arg(step)
            .current_dir(p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = Instant::now();
    let out = Command::new(patchline)
        .args(["build", "--json"])
        .current_dir(p)
        .output()
        .unwrap();
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["built"], 30, "{summary}");
    // The hub's build span, from its task records.
    let client_settings_url = format!("{}/kojihub", hub.url);
    let ids: Vec<i64> = summary["builds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["task_id"].as_i64())
        .collect();
    let calls = ids
        .iter()
        .map(|&id| ("getTaskInfo".to_owned(), vec![kojiwire::int(id)]))
        .collect();
    let body = kojiwire::encode_call("multiCall", kojiwire::multicall_params(calls));
    let answer = ureq::post(&client_settings_url)
        .header("Content-Type", "text/xml")
        .send(body.as_bytes())
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let infos = kojiwire::decode_response(&answer).unwrap().unwrap();
    let (mut first, mut last) = (f64::MAX, 0f64);
    for e in kojiwire::ValueExt::as_array(&infos).unwrap() {
        let info = kojiwire::multicall_entry(e).unwrap();
        let ts = |k: &str| match kojiwire::ValueExt::get(&info, k) {
            Some(kojiwire::Value::Double(d)) => *d,
            _ => 0.0,
        };
        first = first.min(ts("start_ts"));
        last = last.max(ts("completion_ts"));
    }
    let hub_ms = (last - first) * 1000.0;
    let rpmbuild_ms = hub_ms + 10.0 * srpm_ms;
    println!(
        "build stage, 10 repos x 3 targets (30 Koji tasks): wall {wall_ms:.0} ms; rpmbuild: hub build span {hub_ms:.0} ms + 10 x rpmbuild -bs {srpm_ms:.0} ms; overhead excluding rpmbuild {:.0} ms",
        wall_ms - rpmbuild_ms
    );
    let s = stats(&hub);
    println!(
        "hub requests during the stage: {} HTTP ({} XML-RPC), calls {}",
        s["http_requests"], s["xmlrpc_requests"], s["calls"]
    );
}
