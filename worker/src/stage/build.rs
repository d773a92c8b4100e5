//! The `build` stage: every branch the apply stage moved in this run is
//! made into a source RPM, then rebuilt for each of its repository's
//! targets by a [`crate::rpm`] backend: local `rpmbuild --rebuild` (the
//! embedded default) or a Koji hub.
//!
//! Each target's log is kept; a finished build is recorded and not done
//! again when the stage of the same run is re-run.

use crate::config::Config;
use crate::rpm::{self, Backend, BuildEvents, Job, SpecSource, make_srpm};
use crate::stage::{Progress, Unit};
use crate::store::{self, BuildKey, Store};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Rpm(#[from] rpm::Error),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
}

impl Error {
    /// The build service could not be reached (exit code 3).
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Error::Rpm(e) if e.is_infrastructure())
    }
}

/// The backend `[build].backend` names.
pub fn backend(config: &Config) -> Result<Box<dyn Backend>, Error> {
    match config.build.backend {
        crate::config::BuildBackend::Local => Ok(Box::new(rpm::LocalBackend {
            jobs: config.build.jobs,
        })),
        crate::config::BuildBackend::Koji => Ok(Box::new(rpm::koji::KojiBackend::new(
            config.koji_settings()?,
        ))),
    }
}

crate::vocabulary::vocabulary! {
    /// Where the build of one target is.
    pub enum BuildState {
        /// Built: its RPMs are there.
        Ok = "ok",
        Failed = "failed",
        /// Begun by a backend (a Koji task), its outcome not known yet: an
        /// interrupted stage takes it up again instead of starting it twice.
        Started = "started",
    }
}

/// One repository, branch and target: what `status --json` and the report show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetBuild {
    pub repo: String,
    pub branch: String,
    pub commit: String,
    pub target: String,
    pub state: BuildState,
    pub nvr: Option<String>,
    pub srpm: Option<String>,
    pub rpms: Vec<String>,
    pub log: Option<String>,
    pub duration_ms: u64,
    /// The failure, with the tail of the log.
    pub error: Option<String>,
    /// Koji: the build task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    /// Koji: where the RPMs are served (`topurl`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl TargetBuild {
    /// Records this build for `run` in the builds table.
    fn record(&self, store: &mut Store, run: i64) -> Result<(), store::Error> {
        let key = BuildKey {
            repo: &self.repo,
            branch: &self.branch,
            target: &self.target,
            commit: &self.commit,
            state: self.state.as_str(),
        };
        store.record_build(run, &key, self)
    }

    /// A target of a branch at `commit`, nothing known about it but `state`.
    fn new(repo: &str, branch: &str, commit: &str, target: &str, state: BuildState) -> Self {
        Self {
            repo: repo.to_owned(),
            branch: branch.to_owned(),
            commit: commit.to_owned(),
            target: target.to_owned(),
            state,
            nvr: None,
            srpm: None,
            rpms: Vec::new(),
            log: None,
            duration_ms: 0,
            error: None,
            task_id: None,
            urls: Vec::new(),
        }
    }

    /// A target of `job`, with its SRPM and NVR.
    fn of_job(job: &Job, target: &str, state: BuildState) -> Self {
        let mut b = Self::new(&job.repo, &job.branch, &job.commit, target, state);
        b.nvr = Some(job.nvr.clone());
        b.srpm = Some(job.srpm.display().to_string());
        b
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildSummary {
    pub run: i64,
    pub built: u64,
    pub failed: u64,
    pub builds: Vec<TargetBuild>,
    /// Branches the run moved but that were not built, and why (no
    /// targets configured), so an empty `builds` is never silent.
    pub not_built: Vec<String>,
}

/// Where a run's build files go: next to the state database.
pub fn work_dir(config: &Config, run: i64) -> PathBuf {
    config
        .state
        .db
        .parent()
        .unwrap_or(Path::new("."))
        .join("work")
        .join(format!("run-{run}"))
}

/// What a backend tells, for the stage: a started Koji task is recorded
/// at once; targets begun and ended advance the progress.
struct Events<'a> {
    store: &'a mut Store,
    run: i64,
    jobs: &'a [Job],
    progress: &'a dyn Progress,
    done: u64,
    /// `repo/branch target` of the builds under way.
    building: Vec<String>,
}

impl Events<'_> {
    fn name(&self, job: usize, target: &str) -> String {
        let job = &self.jobs[job];
        format!("{}/{} {target}", job.repo, job.branch)
    }

    fn tell(&self) {
        self.progress.advance(self.done, &self.building.join(", "));
    }
}

impl BuildEvents for Events<'_> {
    fn task_started(&mut self, job: usize, target: &str, task: i64) {
        let mut b = TargetBuild::of_job(&self.jobs[job], target, BuildState::Started);
        b.task_id = Some(task);
        if let Err(e) = b.record(self.store, self.run) {
            // Not fatal: the build goes on; an interruption would then
            // start it again.
            tracing::warn!(target = %target, task, "cannot record the started build: {e}");
        }
        let name = self.name(job, target);
        self.building.push(format!("{name} (task {task})"));
        self.tell();
    }

    fn target_begins(&mut self, job: usize, target: &str) {
        let name = self.name(job, target);
        self.building.push(name);
        self.tell();
    }

    fn target_ends(&mut self, job: usize, target: &str, _ok: bool) {
        let name = self.name(job, target);
        self.building
            .retain(|b| b != &name && !b.starts_with(&format!("{name} (task ")));
        self.done += 1;
        self.tell();
    }
}

pub fn build_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
    progress: &dyn Progress,
) -> Result<BuildSummary, Error> {
    let mut summary = BuildSummary {
        run,
        ..BuildSummary::default()
    };
    let mut jobs = Vec::new();
    let moved = store.moved_branches(run)?;
    progress.step(Unit::Branches, Some(moved.len() as u64));
    for (made, (repo_name, branch, tip)) in moved.into_iter().enumerate() {
        progress.advance(made as u64, &format!("{repo_name}/{branch}"));
        let Some(repo) = config.repos.iter().find(|r| r.name == repo_name) else {
            summary.not_built.push(format!(
                "{repo_name}/{branch}: the repository is no longer in the configuration"
            ));
            continue;
        };
        let targets = config.targets_of(repo);
        if targets.is_empty() {
            summary.not_built.push(format!(
                "{repo_name}/{branch}: no build targets (set `targets` of the repository or [build].targets)"
            ));
            continue;
        }
        let _span =
            tracing::info_span!("build", run, repo = %repo_name, branch = %branch).entered();
        let mut pending = Vec::new();
        let mut started = Vec::new();
        for target in &targets {
            match store.recorded_build::<TargetBuild>(run, &repo_name, &branch, &target.name)? {
                Some(done) if done.commit == tip && done.state == BuildState::Ok => {
                    summary.builds.push(done)
                }
                Some(TargetBuild {
                    commit,
                    state,
                    task_id: Some(task),
                    nvr: Some(nvr),
                    ..
                }) if commit == tip && state == BuildState::Started => {
                    started.push((target.name.clone(), task, nvr));
                    pending.push(target.clone());
                }
                _ => pending.push(target.clone()),
            }
        }
        if pending.is_empty() {
            continue;
        }
        let dir = work_dir(config, run).join(format!("{repo_name}-{}", branch.replace('/', "_")));
        let repo_path = config.repo_path(repo);
        let spec = repo
            .spec
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.spec", repo.name)));
        let source = SpecSource {
            name: &repo.name,
            repo_path: &repo_path,
            spec: &spec,
            beside: config.file.parent().unwrap_or(Path::new(".")),
        };
        match make_srpm(&source, &tip, &dir) {
            Ok((srpm, nvr)) => jobs.push(Job {
                repo: repo_name.clone(),
                branch: branch.clone(),
                commit: tip.clone(),
                dir,
                srpm,
                // Only a build of the same NVR (the release carries the
                // date) is taken up again.
                started: started
                    .into_iter()
                    .filter(|(_, _, n)| *n == nvr)
                    .map(|(t, task, _)| (t, task))
                    .collect(),
                nvr,
                targets: pending,
            }),
            Err(e) => {
                // The summary and the state keep the text (one per target).
                let error = e.to_string();
                for t in &pending {
                    let mut b =
                        TargetBuild::new(&repo_name, &branch, &tip, &t.name, BuildState::Failed);
                    b.error = Some(error.clone());
                    b.record(store, run)?;
                    summary.builds.push(b);
                }
            }
        }
    }
    progress.done();
    if !jobs.is_empty() {
        let targets = jobs.iter().map(|j| j.targets.len() as u64).sum();
        progress.step(Unit::Targets, Some(targets));
        let mut events = Events {
            store,
            run,
            jobs: &jobs,
            progress,
            done: 0,
            building: Vec::new(),
        };
        let results = backend(config)?.build(&jobs, &mut events);
        progress.done();
        let results = results?;
        for (job, targets) in jobs.iter().zip(results) {
            for outcome in targets {
                let mut b = TargetBuild::of_job(job, &outcome.target, BuildState::Failed);
                b.log = outcome.log.map(|l| l.display().to_string());
                b.duration_ms = outcome.duration_ms;
                b.task_id = outcome.task_id;
                b.urls = outcome.urls;
                match outcome.result {
                    Ok(rpms) => {
                        b.state = BuildState::Ok;
                        b.rpms = rpms.iter().map(|p| p.display().to_string()).collect();
                    }
                    Err(e) => b.error = Some(e.to_string()),
                }
                b.record(store, run)?;
                summary.builds.push(b);
            }
        }
    }
    summary.built = summary
        .builds
        .iter()
        .filter(|b| b.state == BuildState::Ok)
        .count() as u64;
    summary.failed = summary
        .builds
        .iter()
        .filter(|b| b.state != BuildState::Ok)
        .count() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_states_keep_their_names_in_json_and_text() {
        for (state, name) in [
            (BuildState::Ok, "ok"),
            (BuildState::Failed, "failed"),
            (BuildState::Started, "started"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<BuildState>(name.into()).unwrap(),
                state
            );
        }
        assert_eq!(format!("[{:>6}]", BuildState::Ok), "[    ok]");
    }
}
