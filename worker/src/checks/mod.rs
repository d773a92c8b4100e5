//! Test commands: each repository's configured commands run against the
//! RPMs of one target build, with a timeout; their output is streamed
//! into the stage log as it comes ([`crate::live_log`]) and its end kept;
//! results become JUnit suites.
//!
//! Commands are argument vectors with placeholders replaced per argument;
//! they never pass through a shell, so nothing from a mail can become
//! shell syntax. It knows nothing of the state database.

use crate::config::TestCommand;
use crate::junit;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("test: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes of a test's output kept in the summary and the report (the whole
/// output stays in the test's work directory).
const OUTPUT_TAIL: u64 = 16 * 1024;

crate::vocabulary::vocabulary! {
    /// How one test command ended.
    pub enum TestState {
        /// Exited 0.
        Passed = "passed",
        /// Exited non-zero or was ended by a signal.
        Failed = "failed",
        /// Not run: its target did not build.
        Skipped = "skipped",
        /// Stopped at its timeout.
        Timeout = "timeout",
        /// Could not be started.
        Error = "error",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub repo: String,
    pub branch: String,
    pub target: String,
    pub name: String,
    /// The argument vector as run (placeholders replaced).
    pub command: Vec<String>,
    pub state: TestState,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of the combined stdout and stderr.
    pub output: String,
    /// Where the whole output is.
    pub log: Option<String>,
    pub message: Option<String>,
}

impl TestResult {
    /// `name on repo/branch for target: why`, as reports name a failure.
    pub fn headline(&self) -> String {
        format!(
            "{} on {}/{} for {}: {}",
            self.name,
            self.repo,
            self.branch,
            self.target,
            self.message.as_deref().unwrap_or(self.state.as_str())
        )
    }
}

/// Values the placeholders of a command stand for.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub run: i64,
    pub repo: String,
    pub branch: String,
    pub target: String,
    pub commit: String,
    pub nvr: String,
    pub srpm: String,
    pub rpms: Vec<String>,
    pub repo_url: String,
}

/// The command with placeholders replaced: an argument that is exactly
/// `{rpms}` becomes one argument per binary RPM; the others are replaced
/// inside arguments. Unknown `{...}` stay as written (a script's own braces).
pub fn expand(command: &[String], vars: &Vars) -> Vec<String> {
    let mut out = Vec::new();
    for arg in command {
        if arg == "{rpms}" {
            out.extend(vars.rpms.iter().cloned());
            continue;
        }
        let run = vars.run.to_string();
        let pairs: [(&str, &str); 9] = [
            ("{run}", &run),
            ("{repo}", &vars.repo),
            ("{branch}", &vars.branch),
            ("{target}", &vars.target),
            ("{commit}", &vars.commit),
            ("{nvr}", &vars.nvr),
            ("{srpm}", &vars.srpm),
            ("{repo_url}", &vars.repo_url),
            ("{rpms}", &vars.rpms.join(" ")),
        ];
        // One pass over the argument, so a value that itself contains
        // `{repo}` is never expanded again.
        let mut expanded = String::with_capacity(arg.len());
        let mut rest = arg.as_str();
        'scan: while let Some(open) = rest.find('{') {
            expanded.push_str(&rest[..open]);
            let tail = &rest[open..];
            for (key, value) in pairs {
                if let Some(after) = tail.strip_prefix(key) {
                    expanded.push_str(value);
                    rest = after;
                    continue 'scan;
                }
            }
            expanded.push('{');
            rest = &tail[1..];
        }
        expanded.push_str(rest);
        out.push(expanded);
    }
    out
}

/// Runs `test` for one target build with `vars`, in `dir` (emptied
/// first); `skip` is why the test cannot run (the target did not build),
/// which makes it a `skipped` result.
pub fn run_test(
    test: &TestCommand,
    vars: &Vars,
    dir: &Path,
    skip: Option<String>,
) -> Result<TestResult, Error> {
    let command = expand(&test.command, vars);
    let mut result = TestResult {
        repo: vars.repo.clone(),
        branch: vars.branch.clone(),
        target: vars.target.clone(),
        name: test.name.clone(),
        command: command.clone(),
        state: TestState::Skipped,
        exit_code: None,
        duration_ms: 0,
        output: String::new(),
        log: None,
        message: None,
    };
    if let Some(why) = skip {
        result.message = Some(why);
        return Ok(result);
    }
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(write(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(write(dir))?;
    let log = dir.join("output.log");
    result.log = Some(log.display().to_string());
    let started = Instant::now();
    let (program, args) = command.split_first().unwrap_or((&test.name, &[]));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("PATCHLINE_RUN", vars.run.to_string())
        .env("PATCHLINE_REPO", &vars.repo)
        .env("PATCHLINE_BRANCH", &vars.branch)
        .env("PATCHLINE_TARGET", &vars.target)
        .env("PATCHLINE_COMMIT", &vars.commit)
        .env("PATCHLINE_NVR", &vars.nvr)
        .env("PATCHLINE_SRPM", &vars.srpm)
        .env("PATCHLINE_RPMS", vars.rpms.join("\n"))
        .env("PATCHLINE_REPO_URL", &vars.repo_url);
    // The output streams into the stage log as it comes; with a timeout
    // the command runs in its own process group, which the timeout stops
    // whole (what the test started too).
    let label = format!(
        "{} {}/{} {}",
        test.name, vars.repo, vars.branch, vars.target
    );
    let ran = crate::live_log::run(
        &mut cmd,
        &crate::live_log::Options {
            label: &label,
            log: &log,
            timeout: Some(Duration::from_secs(test.timeout_secs)),
            leftovers: None,
            tail_lines: 0,
            keep: |_| false,
        },
    );
    match ran {
        Err(crate::live_log::Error::Log { path, source }) => {
            return Err(Error::Write { path, source });
        }
        Err(crate::live_log::Error::Spawn { source, .. }) => {
            result.state = TestState::Error;
            result.message = Some(format!("cannot run {program:?}: {source}"));
        }
        Ok(ran) => match ran.status {
            Some(status) if status.success() => {
                result.state = TestState::Passed;
                result.exit_code = status.code();
            }
            Some(status) => {
                result.state = TestState::Failed;
                result.exit_code = status.code();
                result.message = Some(match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => format!("ended by a signal ({status})"),
                });
            }
            None => {
                result.state = TestState::Timeout;
                result.message = Some(format!("stopped after the {} s timeout", test.timeout_secs));
            }
        },
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result.output = match tail(&log, OUTPUT_TAIL) {
        (text, true) => format!("[...]\n{text}"),
        (text, false) => text,
    };
    Ok(result)
}

/// The last `max` bytes of `path` as text, starting at a line, and
/// whether the start of the file was cut; reads only that end of the file.
pub fn tail(path: &Path, max: u64) -> (String, bool) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), false);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (String::new(), false);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return (text, false);
    }
    match text.find('\n') {
        Some(i) => (text[i + 1..].to_owned(), true),
        None => (text, true),
    }
}

/// The JUnit suite of a run's tests: one case per test and target.
pub fn junit_suite(run: i64, results: &[TestResult]) -> junit::Suite {
    junit::Suite {
        name: format!("patchline run {run} tests"),
        cases: results
            .iter()
            .map(|r| junit::Case {
                classname: format!("test.{}.{}", r.repo, r.target),
                name: r.name.clone(),
                seconds: r.duration_ms as f64 / 1000.0,
                outcome: match r.state {
                    TestState::Passed => junit::Outcome::Passed,
                    TestState::Skipped => junit::Outcome::Skipped {
                        message: r.message.clone().unwrap_or_default(),
                    },
                    TestState::Failed | TestState::Timeout | TestState::Error => {
                        junit::Outcome::Failed {
                            message: r.message.clone().unwrap_or_else(|| r.state.to_string()),
                            details: format!("$ {}\n{}", shell_words(&r.command), r.output),
                        }
                    }
                },
                output: (!r.output.is_empty() && r.state == TestState::Passed)
                    .then(|| r.output.clone()),
            })
            .collect(),
    }
}

/// The command as a reader would type it (for display only, never run).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::build::BuildState;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_expand_per_argument_and_never_twice() {
        let vars = Vars {
            run: 7,
            repo: "hello".into(),
            branch: "master".into(),
            target: "el9".into(),
            commit: "abc".into(),
            nvr: "hello-1.0-1.el9".into(),
            srpm: "/w/hello.src.rpm".into(),
            rpms: vec!["/w/a.rpm".into(), "/w/b {repo}.rpm".into()],
            repo_url: "http://x/hello/el9".into(),
        };
        let cases: [(&[&str], &[&str]); 5] = [
            (
                &["rpm", "-qp", "--requires", "{rpms}"],
                &["rpm", "-qp", "--requires", "/w/a.rpm", "/w/b {repo}.rpm"],
            ),
            (
                &["echo", "{repo}-{target}@{commit}"],
                &["echo", "hello-el9@abc"],
            ),
            (
                &["awk", "{print $1}", "{nvr}"],
                &["awk", "{print $1}", "hello-1.0-1.el9"],
            ),
            (
                &["t", "run={run}", "{repo_url}/", "{srpm}"],
                &["t", "run=7", "http://x/hello/el9/", "/w/hello.src.rpm"],
            ),
            (
                &["x", "{rpms}s", "{"],
                &["x", "/w/a.rpm /w/b {repo}.rpms", "{"],
            ),
        ];
        for (command, want) in cases {
            assert_eq!(expand(&argv(command), &vars), argv(want), "{command:?}");
        }
    }

    #[test]
    fn test_states_keep_their_names_in_json_and_text() {
        use TestState::*;
        for (state, name) in [
            (Passed, "passed"),
            (Failed, "failed"),
            (Skipped, "skipped"),
            (Timeout, "timeout"),
            (Error, "error"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<TestState>(name.into()).unwrap(),
                state
            );
        }
        assert_eq!(format!("{:<8}|", Passed), "passed  |");
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        assert_eq!(
            shell_words(&argv(&["rpm", "-qp", "a b.rpm", "it's", ""])),
            r"rpm -qp 'a b.rpm' 'it'\''s' ''"
        );
    }

    /// Why a test of a target build in `state` is skipped, as the test
    /// stage says it.
    fn build(state: BuildState) -> Option<String> {
        (state != BuildState::Ok).then(|| "the el9 build failed".to_owned())
    }

    fn command(name: &str, words: &[&str], timeout_secs: u64) -> TestCommand {
        TestCommand {
            name: name.into(),
            command: argv(words),
            timeout_secs,
        }
    }

    #[test]
    fn outcomes_passed_failed_timeout_error_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let vars = Vars {
            repo: "hello".into(),
            nvr: "hello-1.0-1".into(),
            ..Vars::default()
        };
        let ok = run_test(
            &command(
                "echo",
                &["sh", "-c", "echo out $PATCHLINE_NVR; echo err >&2", "{nvr}"],
                10,
            ),
            &vars,
            &dir.path().join("a"),
            build(BuildState::Ok),
        )
        .unwrap();
        assert_eq!(ok.state.as_str(), "passed");
        assert_eq!(ok.exit_code, Some(0));
        assert_eq!(ok.output, "out hello-1.0-1\nerr\n");

        let failed = run_test(
            &command("fail", &["sh", "-c", "echo broken; exit 3"], 10),
            &vars,
            &dir.path().join("b"),
            build(BuildState::Ok),
        )
        .unwrap();
        assert_eq!(failed.state.as_str(), "failed");
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.message.as_deref(), Some("exit status 3"));
        assert_eq!(failed.output, "broken\n");

        // The shell's child (sleep) is stopped with it: the test returns
        // at the timeout, not after 30 s.
        let started = Instant::now();
        let slow = run_test(
            &command(
                "slow",
                &["sh", "-c", "echo started; sleep 30; echo never"],
                1,
            ),
            &vars,
            &dir.path().join("c"),
            build(BuildState::Ok),
        )
        .unwrap();
        assert_eq!(slow.state.as_str(), "timeout");
        assert_eq!(slow.output, "started\n");
        assert!(started.elapsed() < Duration::from_secs(20));

        let missing = run_test(
            &command("missing", &["/nonexistent/tool"], 10),
            &vars,
            &dir.path().join("d"),
            build(BuildState::Ok),
        )
        .unwrap();
        assert_eq!(missing.state.as_str(), "error");
        assert!(
            missing
                .message
                .as_deref()
                .unwrap()
                .starts_with("cannot run \"/nonexistent/tool\""),
            "{missing:?}"
        );

        let skipped = run_test(
            &command("echo", &["true"], 10),
            &vars,
            &dir.path().join("e"),
            build(BuildState::Failed),
        )
        .unwrap();
        assert_eq!(skipped.state.as_str(), "skipped");
        assert_eq!(skipped.message.as_deref(), Some("the el9 build failed"));
    }

    #[test]
    fn long_output_keeps_its_tail_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&file, &text).unwrap();
        let (t, cut) = tail(&file, 100);
        assert!(cut);
        assert!(t.starts_with("line "), "{t}");
        assert!(t.ends_with("line 4999\n"));
        assert!(t.len() <= 100);
        let (whole, cut) = tail(&file, 1 << 20);
        assert!(!cut);
        assert_eq!(whole, text);

        // A test's output says where it was cut.
        let ran = run_test(
            &command("long", &["seq", "1", "20000"], 10),
            &Vars::default(),
            &dir.path().join("long"),
            build(BuildState::Ok),
        )
        .unwrap();
        assert!(ran.output.starts_with("[...]\n"), "{}", &ran.output[..40]);
        assert!(ran.output.ends_with("\n20000\n"));
    }
}
