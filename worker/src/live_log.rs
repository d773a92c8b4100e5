//! A child process (rpmbuild, a test command) whose output is followed
//! while it runs: stdout and stderr go, in the order written, through one
//! pipe that a thread copies to the command's log file, emitting every
//! line as a `tracing` event in the caller's span as it comes — so the
//! stage log (and Jenkins polling it) shows the output live, not when the
//! process ends. The last lines are kept for a failure message, and lines
//! the caller asks for are returned whole (rpmbuild's `Wrote:` lines).
//!
//! A pipe, not the file itself, so a command whose patchline is killed
//! stops at its next write (SIGPIPE) instead of building on beside the
//! resumed stage. The pipe is always drained, so a chatty command never
//! blocks on it; a process the command leaves behind holding its output
//! delays the end by [`DRAIN`] at most. It knows nothing of the stage
//! log: it only emits events (target `patchline::output`, level INFO).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

/// How long the output is still read after the command ended, when a
/// process it started keeps the pipe open.
pub const DRAIN: Duration = Duration::from_secs(2);

/// A longer line (a binary blob, a compiler command of a huge build) is
/// emitted in pieces of this size; the file keeps it whole.
const MAX_LINE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How to run one command.
pub struct Options<'a> {
    /// Starts each line of output in the log: `tiny/master el9 | ...`.
    pub label: &'a str,
    /// The whole output, created (truncated) first.
    pub log: &'a Path,
    /// Stop the command after this long. A command with a timeout runs in
    /// its own process group, and the whole group is killed, so what it
    /// started stops too. (Without one it stays in ours: a Ctrl-C at the
    /// terminal reaches it.)
    pub timeout: Option<Duration>,
    /// Where the command's process group is written while it runs (and
    /// removed at its end). Before it starts, a group named there that is
    /// still alive — left by a patchline that was killed — is killed and
    /// waited for, so a resumed stage never works beside its leftovers. The
    /// command then runs in its own group.
    pub leftovers: Option<&'a Path>,
    /// Number of last non-empty lines kept in [`Finished::tail`].
    pub tail_lines: usize,
    /// Lines returned whole in [`Finished::kept`].
    pub keep: fn(&str) -> bool,
}

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: stopped at its timeout (or its status could not be read).
    pub status: Option<ExitStatus>,
    /// The last non-empty lines, oldest first.
    pub tail: Vec<String>,
    /// The lines `keep` chose, in order.
    pub kept: Vec<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr to `opts.log`) to
/// its end or its timeout, emitting its output line by line as it comes.
pub fn run(cmd: &mut Command, opts: &Options<'_>) -> Result<Finished, Error> {
    let log_error = |source| Error::Log {
        path: opts.log.to_owned(),
        source,
    };
    let file = File::create(opts.log).map_err(log_error)?;
    let (reader, writer) = std::io::pipe().map_err(log_error)?;
    let writer_too = writer.try_clone().map_err(log_error)?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer_too);
    let own_group = opts.timeout.is_some() || opts.leftovers.is_some();
    if own_group {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
    }
    if let Some(file) = opts.leftovers {
        stop_leftovers(file);
    }
    let spawned = cmd.spawn();
    // The command keeps its copies of the pipe's writing end until they
    // are replaced: with them open here, the reader would never see the
    // end of the output.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawned.map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if let Some(file) = opts.leftovers {
        // Not fatal: without the file only a crash's leftovers go unseen.
        let _ = std::fs::write(file, child.id().to_string());
    }
    let lines = Arc::new(Mutex::new(Lines::new(opts)));
    let (done, ended) = std::sync::mpsc::channel();
    let copier = {
        let lines = lines.clone();
        let span = tracing::Span::current();
        // Not joined when a leftover process keeps the pipe open: it ends
        // with that process.
        std::thread::spawn(move || {
            let _entered = span.enter();
            copy(reader, file, &lines);
            let _ = done.send(());
        })
    };
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let status = loop {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match child.wait_timeout(wait) {
            Ok(Some(status)) => break Some(status),
            Ok(None) if deadline.is_none_or(|d| Instant::now() < d) => {}
            // At the timeout, or the child cannot be waited for: stop it.
            Ok(None) | Err(_) => {
                stop(&mut child, own_group);
                break None;
            }
        }
    };
    if ended.recv_timeout(DRAIN).is_ok() {
        let _ = copier.join();
    }
    if let Some(file) = opts.leftovers {
        let _ = std::fs::remove_file(file);
    }
    let mut lines = lock(&lines);
    Ok(Finished {
        status,
        tail: std::mem::take(&mut lines.tail).into(),
        kept: std::mem::take(&mut lines.kept),
    })
}

/// Copies the output to the log file, line by line into `lines`.
fn copy(mut reader: std::io::PipeReader, mut file: File, lines: &Mutex<Lines>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A full disk loses the file, not the stage log's lines.
                let _ = file.write_all(&buf[..n]);
                lock(lines).push(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lock(lines).flush();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills the process group `file` names, if it is still alive, and waits
/// (10 s at most) until it is gone.
pub fn stop_leftovers(file: &Path) {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
    let Some((raw, group)) = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(|raw| Some((raw, Pid::from_raw(raw)?)))
    else {
        return;
    };
    if test_kill_process_group(group).is_err() {
        return;
    }
    tracing::warn!(
        group = raw,
        "stopping what a killed patchline left running ({})",
        file.display()
    );
    let _ = kill_process_group(group, Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while test_kill_process_group(group).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child, own_group: bool) {
    if own_group && let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The output read so far, cut into lines.
struct Lines {
    label: String,
    keep: fn(&str) -> bool,
    tail_lines: usize,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    tail: VecDeque<String>,
    kept: Vec<String>,
}

impl Lines {
    fn new(opts: &Options<'_>) -> Self {
        Self {
            label: opts.label.to_owned(),
            keep: opts.keep,
            tail_lines: opts.tail_lines,
            partial: Vec::new(),
            tail: VecDeque::with_capacity(opts.tail_lines + 1),
            kept: Vec::new(),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(eol) = memchr::memchr(b'\n', bytes) {
            self.partial.extend_from_slice(&bytes[..eol]);
            let line = std::mem::take(&mut self.partial);
            for piece in line.chunks(MAX_LINE) {
                self.emit(piece);
            }
            if line.is_empty() {
                self.emit(b"");
            }
            bytes = &bytes[eol + 1..];
        }
        self.partial.extend_from_slice(bytes);
        // A line whose end is long in coming: its whole pieces now.
        let whole = self.partial.len() / MAX_LINE * MAX_LINE;
        if whole > 0 {
            let rest = self.partial.split_off(whole);
            let pieces = std::mem::replace(&mut self.partial, rest);
            for piece in pieces.chunks(MAX_LINE) {
                self.emit(piece);
            }
        }
    }

    /// The last line, when the output does not end with a newline.
    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
    }

    fn emit(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        tracing::info!(target: "patchline::output", "{} | {line}", self.label);
        if (self.keep)(&line) {
            self.kept.push(line.clone().into_owned());
        }
        if !line.trim().is_empty() && self.tail_lines > 0 {
            if self.tail.len() == self.tail_lines {
                self.tail.pop_front();
            }
            self.tail.push_back(line.into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects the messages of events, from any thread.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message<'a>(&'a mut String);
            impl tracing::field::Visit for Message<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0.push_str(&format!("{v:?}"));
                    }
                }
            }
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn opts<'a>(log: &'a Path, timeout: Option<Duration>) -> Options<'a> {
        Options {
            label: "t",
            log,
            timeout,
            leftovers: None,
            tail_lines: 2,
            keep: |l: &str| l.starts_with("Wrote: "),
        }
    }

    /// Every event's message, from any thread: one global subscriber for
    /// the test binary (a scoped one misses callsites another test thread
    /// registered first).
    fn messages() -> &'static Mutex<Vec<String>> {
        static EVENTS: std::sync::OnceLock<Events> = std::sync::OnceLock::new();
        &EVENTS
            .get_or_init(|| {
                use tracing_subscriber::layer::SubscriberExt;
                let events = Events::default();
                let _ = tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(events.clone()),
                );
                events
            })
            .0
    }

    /// A line is emitted while the command still runs: the command waits
    /// for a file the test creates only once it has seen the line.
    #[test]
    fn lines_are_emitted_while_the_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let go = dir.path().join("go");
        let all = messages();
        let mine = || -> Vec<String> {
            let all = all.lock().unwrap();
            all.iter()
                .filter(|m| m.starts_with("live-1 | "))
                .cloned()
                .collect()
        };
        let go_file = go.clone();
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let seen = loop {
                if mine().iter().any(|l| l == "live-1 | marker") {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            // Created either way, so a failure ends the command too.
            std::fs::write(go_file, "").unwrap();
            seen
        });
        let script = format!(
            "echo marker; echo to-stderr >&2; while [ ! -e {} ]; do sleep 0.05; done; printf 'Wrote: /x.rpm\\r\\nlast'",
            go.display()
        );
        let mut options = opts(&log, None);
        options.label = "live-1";
        let finished = run(&mut sh(&script), &options).unwrap();
        assert!(
            watcher.join().unwrap(),
            "the marker was not emitted while the command ran: {:?}",
            mine()
        );
        assert!(finished.success());
        assert_eq!(finished.kept, ["Wrote: /x.rpm"]);
        assert_eq!(finished.tail, ["Wrote: /x.rpm", "last"]);
        assert_eq!(
            mine(),
            [
                "live-1 | marker",
                "live-1 | to-stderr",
                "live-1 | Wrote: /x.rpm",
                "live-1 | last"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "marker\nto-stderr\nWrote: /x.rpm\r\nlast"
        );
    }

    /// A command over its timeout is stopped with what it started, and
    /// a background process holding the output never keeps us waiting.
    #[test]
    fn a_timeout_kills_the_group_and_leftovers_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pid_file.display()
        );
        let started = Instant::now();
        let finished = run(&mut sh(&script), &opts(&log, Some(Duration::from_secs(1)))).unwrap();
        assert!(finished.status.is_none());
        assert_eq!(finished.tail, ["started"]);
        assert!(started.elapsed() < Duration::from_secs(60));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "the background sleep of the command was killed");
        // Without a timeout: a process left running with the output open
        // does not hold up the end.
        let script = format!("sleep 300 & echo $! > {}; echo left", pid_file.display());
        let finished = run(&mut sh(&script), &opts(&log, None)).unwrap();
        assert!(finished.success());
        assert_eq!(finished.tail, ["left"]);
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let _ = Command::new("kill").arg(pid.trim()).status();
    }

    /// A group a killed run left (here: started by hand, its id in the
    /// file) is stopped before the command runs, and the file is gone
    /// after it.
    #[test]
    fn leftovers_of_a_killed_run_are_stopped_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let file = dir.path().join("cmd.pgid");
        let mut left = Command::new("sleep");
        left.arg("300");
        std::os::unix::process::CommandExt::process_group(&mut left, 0);
        let mut left = left.spawn().unwrap();
        let started = Instant::now();
        std::fs::write(&file, left.id().to_string()).unwrap();
        // Reaped at once, as init reaps a killed patchline's orphans.
        let reaper = std::thread::spawn(move || left.wait().unwrap());
        let mut options = opts(&log, None);
        options.leftovers = Some(&file);
        let finished = run(&mut sh("echo fresh"), &options).unwrap();
        assert!(finished.success());
        assert_eq!(finished.tail, ["fresh"]);
        let status = reaper.join().unwrap();
        assert!(!status.success(), "the leftover was killed: {status}");
        assert!(!file.exists());
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "not waited for to the end"
        );
    }

    #[test]
    fn long_lines_come_in_pieces_and_a_missing_program_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let finished = run(
            &mut sh("head -c 9000 /dev/zero | tr '\\0' x; echo"),
            &opts(&log, None),
        )
        .unwrap();
        let lengths: Vec<usize> = finished.tail.iter().map(String::len).collect();
        assert_eq!(lengths, [4096, 808]);
        let e = run(&mut Command::new("/nonexistent/program"), &opts(&log, None)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run /nonexistent/program: "),
            "{e}"
        );
    }
}
