//! RPM building: source RPMs from a git tree and a spec ([`srpm`]), and
//! the backends that rebuild them per target: local `rpmbuild --rebuild`
//! (the embedded default) or a Koji hub ([`koji`]).
//!
//! Honest about the host: local builds are for the host architecture only;
//! a target is a set of macros ([`Target`]: `dist`, `rhel`, `fedora`, ...),
//! not a chroot. It knows nothing of
//! the state database: the build stage records what a backend returns.

pub mod koji;
pub mod srpm;
pub mod vercmp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A platform to build for: locally, the macros `rpmbuild` is given so a
/// spec that branches on `%rhel` or `%fedora` builds as it would there;
/// on Koji only `name` is used (the hub takes `dist` from the target's
/// build tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Any name (`el9`, `epel9-candidate`): paths, reports, Koji target.
    pub name: String,
    /// `%{dist}`, e.g. `.el9`; empty for none.
    pub dist: String,
    /// Further macros, e.g. `rhel` -> `9`, `el9` -> `1`.
    pub macros: BTreeMap<String, String>,
}

impl Target {
    /// The target of a bare name: dist `.<name>`, no other macros.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dist: format!(".{name}"),
            macros: BTreeMap::new(),
        }
    }

    /// `--define` arguments (one argument per definition, never a shell
    /// line): `dist` first, then the macros by name.
    pub fn define_args(&self) -> Vec<String> {
        let dist = if self.dist.is_empty() {
            "%{nil}"
        } else {
            &self.dist
        };
        let mut args = vec!["--define".to_owned(), format!("dist {dist}")];
        for (name, value) in &self.macros {
            args.push("--define".to_owned());
            args.push(format!("{name} {value}"));
        }
        args
    }
}

/// Whether `dist` can end a `Release:` (as `%{?dist}` does): empty, or
/// `.`-led segments of letters, digits, `_`, `+`, `~`, `^` (a `-` would
/// split the NVR wrongly; rpm refuses it in a release).
pub fn is_valid_dist(dist: &str) -> bool {
    dist.is_empty()
        || (dist.starts_with('.')
            && dist[1..].split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '~' | '^'))
            }))
}

/// Whether `name` can be defined as a macro with `--define` (`rhel`,
/// `el9`, `_with_tests`).
pub fn is_macro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A backend that cannot work at all ([`Backend::build`]'s `Err`), or why
/// one SRPM or one target failed ([`make_srpm`], [`TargetResult::result`]:
/// the build stage records its text for that target).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Koji(#[from] koji::client::Error),
    /// One target of a Koji build: not started, canceled, failed.
    #[error(transparent)]
    KojiTarget(#[from] koji::TargetError),
    /// Stamping the spec, reading it with `rpmspec`, writing the tarball.
    #[error(transparent)]
    Srpm(#[from] srpm::Error),
    #[error("{source} (log: {log})")]
    SrpmBuild {
        log: PathBuf,
        #[source]
        source: srpm::Error,
    },
    #[error(
        "spec {} is neither in the repository at {} nor readable at {}: {source}",
        spec.display(),
        short(commit),
        beside.display()
    )]
    NoSpec {
        spec: PathBuf,
        commit: String,
        beside: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rpmbuild --rebuild` ran and failed: its log is the diagnosis.
    #[error("rpmbuild --rebuild for {target} failed; log tail: {tail}")]
    Rebuild {
        target: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the build thread for {target} panicked")]
    Panicked { target: String },
    /// rpmbuild could not be started, or its log not written.
    #[error(transparent)]
    Run(#[from] crate::live_log::Error),
}

/// dnf's `$basearch` of this machine: the architecture directory that
/// always exists, so noarch-only packages install here.
pub fn host_basearch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "i386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "arm" => "armhfp",
        other => other,
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        path: path.to_owned(),
        source,
    })
}

impl Error {
    /// The build service could not be reached (exit code 3).
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Error::Koji(e) if e.is_unreachable())
    }
}

/// One branch to build: its SRPM and the targets still to do.
pub struct Job {
    pub repo: String,
    pub branch: String,
    pub commit: String,
    /// The branch's work directory (SRPM, logs, results).
    pub dir: PathBuf,
    pub srpm: PathBuf,
    pub nvr: String,
    pub targets: Vec<Target>,
    /// Targets whose build a backend started earlier for this very SRPM
    /// (a stage interrupted while it waited): `(target, Koji task id)`, to
    /// be watched again instead of started twice.
    pub started: Vec<(String, i64)>,
}

/// What a backend made of one target of a [`Job`].
pub struct TargetResult {
    pub target: String,
    pub log: Option<PathBuf>,
    pub duration_ms: u64,
    /// Local paths of the binary RPMs, or the failure (with its log tail).
    pub result: Result<Vec<PathBuf>, Error>,
    pub task_id: Option<i64>,
    pub urls: Vec<String>,
}

/// Builds the targets of every job of a stage; results in job order, one
/// per target. `Err` only when the backend as a whole cannot work (build
/// service unreachable, login refused): nothing is recorded then, and the
/// stage can be run again. What happens meanwhile is told to `events`.
pub trait Backend {
    fn build(
        &mut self,
        jobs: &[Job],
        events: &mut dyn BuildEvents,
    ) -> Result<Vec<Vec<TargetResult>>, Error>;
}

/// What a backend tells while it builds, always on the thread that called
/// [`Backend::build`]; `job` is an index into its jobs. Each method does
/// nothing by default.
pub trait BuildEvents {
    /// A build that outlives the backend (a Koji task) was started: told
    /// before it is waited for, so the stage records it and an interrupted
    /// stage finds it again ([`Job::started`]).
    fn task_started(&mut self, _job: usize, _target: &str, _task: i64) {}
    /// A target of a job begins to build (locally).
    fn target_begins(&mut self, _job: usize, _target: &str) {}
    /// A target of a job is done: built (`ok`) or failed.
    fn target_ends(&mut self, _job: usize, _target: &str, _ok: bool) {}
}

/// `rpmbuild --rebuild` on this machine, `jobs` targets at a time.
pub struct LocalBackend {
    pub jobs: usize,
}

impl Backend for LocalBackend {
    fn build(
        &mut self,
        jobs: &[Job],
        events: &mut dyn BuildEvents,
    ) -> Result<Vec<Vec<TargetResult>>, Error> {
        Ok(jobs
            .iter()
            .enumerate()
            .map(|(j, job)| {
                rebuild_all(j, job, self.jobs, events)
                    .into_iter()
                    .map(|(target, o)| TargetResult {
                        target,
                        log: Some(o.log),
                        duration_ms: o.duration_ms,
                        result: o.result,
                        task_id: None,
                        urls: Vec::new(),
                    })
                    .collect()
            })
            .collect())
    }
}

/// Where a repository's spec is: `spec` (a relative path) inside the
/// repository's tree at the commit built, else in the directory `beside`
/// (next to the configuration).
pub struct SpecSource<'a> {
    pub name: &'a str,
    pub repo_path: &'a Path,
    pub spec: &'a Path,
    pub beside: &'a Path,
}

/// The SRPM of `tip`: spec from the repository (or beside the config),
/// release stamped, sources from the tree. Returns its path and NVR.
pub fn make_srpm(
    source: &SpecSource<'_>,
    tip: &str,
    dir: &Path,
) -> Result<(PathBuf, String), Error> {
    let repo_path = source.repo_path;
    let spec_rel = source.spec;
    let spec_text = read_spec(repo_path, tip, spec_rel, source.beside)?;
    let topdir = dir.join("rpmbuild");
    for sub in ["SOURCES", "SPECS", "SRPMS", "RPMS", "BUILD"] {
        create_dir(&topdir.join(sub))?;
    }
    let date = chrono::Utc::now().format("%Y%m%d").to_string();
    let spec_name = spec_rel.display().to_string();
    let stamp = srpm::Stamp {
        count: srpm::commit_count(repo_path, tip)?,
        date: &date,
        short: short(tip),
    };
    let stamped = srpm::stamp_release(&spec_text, &spec_name, &stamp)?;
    let spec_file_name = spec_rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.spec", source.name));
    let spec_path = topdir.join("SPECS").join(&spec_file_name);
    std::fs::write(&spec_path, &stamped).map_err(|source| Error::Write {
        path: spec_path.clone(),
        source,
    })?;
    let (name, version) = srpm::name_version(&spec_path)?;
    let prefix = format!("{name}-{version}");
    srpm::write_tarball(
        repo_path,
        tip,
        &prefix,
        &topdir.join("SOURCES").join(format!("{prefix}.tar.gz")),
    )?;
    let log_path = dir.join("srpm.log");
    let label = format!("{} srpm", source.name);
    let srpm_path = srpm::build_srpm(&topdir, &spec_path, &log_path, &label).map_err(|source| {
        Error::SrpmBuild {
            log: log_path,
            source,
        }
    })?;
    let nvr = srpm_path
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".src.rpm").to_owned())
        .unwrap_or_default();
    Ok((srpm_path, nvr))
}

fn read_spec(repo_path: &Path, tip: &str, spec: &Path, beside: &Path) -> Result<String, Error> {
    // Inside the repository's tree at `tip` first.
    let from_tree = (|| -> Option<String> {
        let repo = gix::open(repo_path).ok()?;
        let id = gix::ObjectId::from_hex(tip.as_bytes()).ok()?;
        let tree = repo.find_commit(id).ok()?.tree().ok()?;
        let entry = tree.lookup_entry_by_path(spec).ok()??;
        let data = repo.find_blob(entry.object_id()).ok()?.take_data();
        String::from_utf8(data).ok()
    })();
    if let Some(text) = from_tree {
        return Ok(text);
    }
    let beside = beside.join(spec);
    std::fs::read_to_string(&beside).map_err(|source| Error::NoSpec {
        spec: spec.to_owned(),
        commit: tip.to_owned(),
        beside,
        source,
    })
}

struct TargetOutcome {
    log: PathBuf,
    duration_ms: u64,
    result: Result<Vec<PathBuf>, Error>,
}

/// `rpmbuild --rebuild` of each target of `job` (index `j`), `parallel`
/// at a time; each build's output streams into the caller's span (the
/// stage log) from its own thread.
fn rebuild_all(
    j: usize,
    job: &Job,
    parallel: usize,
    events: &mut dyn BuildEvents,
) -> Vec<(String, TargetOutcome)> {
    let span = tracing::Span::current();
    let mut out = Vec::new();
    for chunk in job.targets.chunks(parallel.max(1)) {
        std::thread::scope(|scope| {
            // Outcomes come back as builds end, so each end is told when
            // it happens, not when the slowest of the chunk is done.
            let (tx, ended) = std::sync::mpsc::channel();
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    events.target_begins(j, &t.name);
                    let (tx, span) = (tx.clone(), &span);
                    let label = format!("{}/{} {}", job.repo, job.branch, t.name);
                    scope.spawn(move || {
                        let _entered = span.enter();
                        let _ = tx.send((i, rebuild(&job.dir, &job.srpm, t, &label)));
                    })
                })
                .collect();
            drop(tx);
            let mut outcomes: Vec<Option<TargetOutcome>> = chunk.iter().map(|_| None).collect();
            for (i, outcome) in ended {
                events.target_ends(j, &chunk[i].name, outcome.result.is_ok());
                outcomes[i] = Some(outcome);
            }
            // Joined here, so a panicked build is this target's failure
            // instead of the scope's panic.
            for h in handles {
                let _ = h.join();
            }
            for (t, outcome) in chunk.iter().zip(outcomes) {
                let outcome = outcome.unwrap_or_else(|| {
                    events.target_ends(j, &t.name, false);
                    TargetOutcome {
                        log: job.dir.join(format!("{}.log", t.name)),
                        duration_ms: 0,
                        result: Err(Error::Panicked {
                            target: t.name.clone(),
                        }),
                    }
                });
                out.push((t.name.clone(), outcome));
            }
        });
    }
    out
}

/// Lines of a failed rpmbuild's output quoted in its error.
const REBUILD_TAIL_LINES: usize = 15;

fn rebuild(dir: &Path, srpm: &Path, t: &Target, label: &str) -> TargetOutcome {
    let target = t.name.as_str();
    let started = std::time::Instant::now();
    let topdir = dir.join(format!("target-{target}"));
    let log = dir.join(format!("{target}.log"));
    let result = (|| -> Result<Vec<PathBuf>, Error> {
        // A private rpm database: parallel builds must not share one.
        create_dir(&topdir.join("rpmdb"))?;
        let mut rpmbuild = Command::new("rpmbuild");
        rpmbuild
            .arg("--rebuild")
            .arg("--nodeps")
            .arg("--define")
            .arg(format!("_topdir {}", topdir.display()))
            .arg("--define")
            .arg(format!("_dbpath {}", topdir.join("rpmdb").display()))
            .args(t.define_args())
            .arg(srpm);
        let ran = crate::live_log::run(
            &mut rpmbuild,
            &crate::live_log::Options {
                label,
                log: &log,
                timeout: None,
                leftovers: Some(&topdir.join("rpmbuild.pgid")),
                tail_lines: REBUILD_TAIL_LINES,
                keep: |line| line.starts_with("Wrote: "),
            },
        )?;
        if !ran.success() {
            return Err(Error::Rebuild {
                target: target.to_owned(),
                log: log.clone(),
                tail: ran.tail.join(" | "),
            });
        }
        Ok(ran
            .kept
            .iter()
            .filter_map(|l| l.strip_prefix("Wrote: "))
            .map(|p| PathBuf::from(p.trim()))
            .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
            .collect())
    })();
    TargetOutcome {
        log,
        duration_ms: started.elapsed().as_millis() as u64,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn targets_define_their_macros_one_argument_each() {
        let mut t = Target::named("epel9-candidate");
        t.dist = ".el9".into();
        t.macros.insert("rhel".into(), "9".into());
        t.macros.insert("el9".into(), "1".into());
        assert_eq!(
            t.define_args(),
            [
                "--define",
                "dist .el9",
                "--define",
                "el9 1",
                "--define",
                "rhel 9"
            ]
        );
        t.dist.clear();
        assert_eq!(t.define_args()[1], "dist %{nil}");
    }

    #[test]
    fn dists_and_macro_names() {
        for ok in [
            "",
            ".el9",
            ".fc41",
            ".el9_4",
            ".module+el9.1.0+123",
            ".el9~bootstrap",
        ] {
            assert!(is_valid_dist(ok), "{ok:?}");
        }
        for bad in [".epel9-candidate", "el9", ".", ".el9.", ".el 9", ".el9%"] {
            assert!(!is_valid_dist(bad), "{bad:?}");
        }
        for ok in ["rhel", "el9", "_with_tests", "fedora"] {
            assert!(is_macro_name(ok), "{ok:?}");
        }
        for bad in ["", "9rhel", "rh-el", "a b"] {
            assert!(!is_macro_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_spec_found_nowhere_names_both_places_and_keeps_the_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = SpecSource {
            name: "tiny",
            repo_path: &dir.path().join("not-a-repo"),
            spec: Path::new("tiny.spec"),
            beside: dir.path(),
        };
        let tip = "0123456789abcdef0123456789abcdef01234567";
        let e = make_srpm(&source, tip, &dir.path().join("work")).unwrap_err();
        assert!(matches!(e, Error::NoSpec { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("spec tiny.spec is neither in the repository at 0123456 "),
            "{text}"
        );
        assert!(text.contains(&dir.path().join("tiny.spec").display().to_string()));
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
