//! The `apply` stage: every complete series from intake, in arrival order
//! (of its first mail), applied to its repository and branch from the
//! config. A series that fails does not stop the others.
//!
//! Crash safety: the commits of a series are written first (objects only),
//! then the planned move `old tip -> new tip` is committed to the state as
//! `applying`, then the branch moves by compare-and-swap, then the series
//! is marked `applied`. A run killed anywhere resumes: a series found
//! `applying` is `applied` if its branch is at the new tip, is moved again
//! if the branch is still at the old tip, and fails as "branch moved"
//! otherwise — never applied twice.

use crate::config::Config;
use crate::patch::apply::{self, AmOptions, Identity, PatchFailure, SeriesResult};
use crate::store::{self, ApplyRecord, SeriesState, SeriesToApply, Store};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot read archived mail {path}: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] apply::Error),
}

/// One series' outcome, as the report and `status --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesOutcome {
    pub key: String,
    pub title: String,
    pub version: u32,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub state: SeriesState,
    pub old_tip: Option<String>,
    pub new_tip: Option<String>,
    pub commits: Vec<String>,
    /// The patch that failed (`file` is its archived `.patch`), and why.
    pub failed_patch: Option<String>,
    pub error: Option<PatchFailure>,
}

impl SeriesOutcome {
    /// Whether the series ended in `state`.
    pub fn is(&self, state: SeriesState) -> bool {
        self.state == state
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ApplySummary {
    pub run: i64,
    pub series_applied: u64,
    pub series_failed: u64,
    pub patches_applied: u64,
    pub series: Vec<SeriesOutcome>,
}

/// Applies every complete series (and finishes interrupted ones) of the
/// repositories in `repos` (empty: of every repository); a series of
/// another repository waits for a run that covers it.
pub fn apply_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
    repos: &[String],
    committer: Option<&Identity>,
    opts: AmOptions,
) -> Result<ApplySummary, Error> {
    let candidates = store
        .series_to_apply()?
        .into_iter()
        .filter(|c| repos.is_empty() || c.repo.as_ref().is_some_and(|r| repos.contains(r)));
    let mut summary = ApplySummary {
        run,
        ..ApplySummary::default()
    };
    for c in candidates {
        let _span = tracing::info_span!("series", run, key = %c.key).entered();
        let outcome = apply_one(store, config, run, committer, opts, &c)?;
        if outcome.is(SeriesState::Applied) {
            summary.series_applied += 1;
            summary.patches_applied += outcome.commits.len() as u64;
        } else {
            summary.series_failed += 1;
        }
        summary.series.push(outcome);
    }
    Ok(summary)
}

/// Records that the series ended in `state` with `outcome`.
fn finish(
    store: &mut Store,
    run: i64,
    c: &SeriesToApply,
    state: SeriesState,
    mut outcome: SeriesOutcome,
) -> Result<SeriesOutcome, Error> {
    outcome.state = state;
    let result = serde_json::to_string(&outcome).unwrap_or_default();
    store.record_apply_result(
        c,
        run,
        &ApplyRecord {
            state,
            old_tip: outcome.old_tip.as_deref(),
            new_tip: outcome.new_tip.as_deref(),
            result: &result,
        },
    )?;
    Ok(outcome)
}

fn apply_one(
    store: &mut Store,
    config: &Config,
    run: i64,
    committer: Option<&Identity>,
    opts: AmOptions,
    c: &SeriesToApply,
) -> Result<SeriesOutcome, Error> {
    let mut outcome = SeriesOutcome {
        key: c.key.clone(),
        title: c.title.clone(),
        version: c.version,
        repo: c.repo.clone(),
        branch: c.branch.clone(),
        state: SeriesState::Failed,
        old_tip: c.old_tip.clone(),
        new_tip: None,
        commits: Vec::new(),
        failed_patch: None,
        error: None,
    };
    let fail = |store: &mut Store, mut outcome: SeriesOutcome, why: PatchFailure| {
        outcome.error = Some(why);
        finish(store, run, c, SeriesState::Failed, outcome)
    };
    let Some(repo_name) = &c.repo else {
        return fail(
            store,
            outcome,
            PatchFailure::general(
                "no repository: the subject names none and no route of the config matches",
            ),
        );
    };
    let Some(repo) = config.repos.iter().find(|r| &r.name == repo_name) else {
        return fail(
            store,
            outcome,
            PatchFailure::general(format!(
                "repository {repo_name:?} is not in the configuration"
            )),
        );
    };
    let repo_path = &config.repo_path(repo);
    if !repo_path.exists()
        && let Some(url) = &repo.url
        && let Err(e) = clone_bare(url, repo_path)
    {
        return fail(store, outcome, PatchFailure::general(e.to_string()));
    }
    let branch = c
        .branch
        .clone()
        .or_else(|| repo.default_branch.clone())
        .or_else(|| repo.branches.first().cloned())
        .unwrap_or_else(|| "master".into());
    outcome.branch = Some(branch.clone());
    if !repo.branches.contains(&branch) {
        return fail(
            store,
            outcome,
            PatchFailure::general(format!(
                "branch {branch:?} is not one of {repo_name}'s branches {:?}",
                repo.branches
            )),
        );
    }

    // Resume a series that was being applied when a run stopped.
    if c.state == SeriesState::Applying
        && let (Some(old), Some(new)) = (&c.old_tip, &c.new_tip)
    {
        let tip = apply::branch_tip(repo_path, &branch)?;
        outcome.new_tip = Some(new.clone());
        outcome.commits = stored_commits(store, c)?;
        if tip.as_deref() == Some(old) {
            apply::update_branch(
                repo_path,
                &branch,
                old,
                new,
                &format!("patchline: {}", c.title),
            )?;
        } else if tip.as_deref() != Some(new) {
            outcome.new_tip = None;
            return fail(
                store,
                outcome,
                PatchFailure::general(format!(
                    "branch {branch} moved to {} while this series was being applied; it was not applied",
                    tip.unwrap_or_default()
                )),
            );
        }
        return finish(store, run, c, SeriesState::Applied, outcome);
    }

    if apply::branch_tip(repo_path, &branch)?.is_none()
        && let Some(base) = &repo.base_branch
    {
        match apply::branch_tip(repo_path, base)? {
            Some(tip) => apply::create_branch(
                repo_path,
                &branch,
                &tip,
                &format!("patchline: branch from {base}"),
            )?,
            None => {
                return fail(
                    store,
                    outcome,
                    PatchFailure::general(format!(
                        "branch {branch:?} is missing and its base {base:?} too"
                    )),
                );
            }
        }
    }
    let mails = series_mails(store, config, c)?;
    let committer = match committer {
        Some(id) => id.clone(),
        None => configured_committer(config, repo_path),
    };
    let result: SeriesResult = match apply::prepare_series(
        repo_path,
        &branch,
        mails.into_iter().map(Ok),
        &committer,
        opts,
    ) {
        Ok(r) => r,
        Err(e @ apply::Error::NoBranch { .. }) => {
            return fail(store, outcome, PatchFailure::general(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    outcome.old_tip = Some(result.old_tip.clone());
    if let Some(bad) = result.patches.iter().find(|p| !p.ok) {
        outcome.failed_patch = Some(bad.file.clone());
        let why = bad
            .error
            .clone()
            .unwrap_or_else(|| PatchFailure::general("did not apply"));
        return fail(store, outcome, why);
    }
    let Some(new_tip) = result.new_tip.clone() else {
        return fail(
            store,
            outcome,
            PatchFailure::general("the series changes nothing"),
        );
    };
    outcome.commits = result
        .patches
        .iter()
        .filter_map(|p| p.commit.clone())
        .collect();
    outcome.new_tip = Some(new_tip.clone());
    // Write-ahead: the planned move is on disk before the branch moves.
    store.record_apply_plan(
        c,
        run,
        &result.old_tip,
        &new_tip,
        &serde_json::to_string(&outcome).unwrap_or_default(),
    )?;
    match apply::update_branch(
        repo_path,
        &branch,
        &result.old_tip,
        &new_tip,
        &format!("patchline: {}", c.title),
    ) {
        Ok(()) => finish(store, run, c, SeriesState::Applied, outcome),
        Err(e @ apply::Error::BranchMoved { .. }) => {
            outcome.new_tip = None;
            fail(store, outcome, PatchFailure::general(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The committer: `[apply]` in the config, else the environment or the
/// repository's configuration, else `patchline <patchline@localhost>` — a
/// nightly run must not fail for want of a `user.name`.
fn configured_committer(config: &Config, repo_path: &std::path::Path) -> Identity {
    let now = gix::date::Time::now_local_or_utc();
    let time = (now.seconds, now.offset);
    if let (Some(name), Some(email)) = (&config.apply.committer_name, &config.apply.committer_email)
    {
        return Identity {
            name: name.clone(),
            email: email.clone(),
            time,
        };
    }
    apply::committer_from_env_or_config(repo_path).unwrap_or(Identity {
        name: "patchline".into(),
        email: "patchline@localhost".into(),
        time,
    })
}

/// Why a configured repository could not be cloned (the series' failure
/// in the report says it).
#[derive(Debug, thiserror::Error)]
enum CloneError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run git clone: {0}")]
    Spawn(#[source] std::io::Error),
    /// git ran and failed: its stderr says why.
    #[error("git clone {url} failed: {stderr}")]
    Failed { url: String, stderr: String },
}

/// `git clone --bare URL PATH`, with an argument vector (the URL comes
/// from the configuration, never from mail).
fn clone_bare(url: &str, path: &std::path::Path) -> Result<(), CloneError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CloneError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    let out = std::process::Command::new("git")
        .args(["clone", "--quiet", "--bare", "--", url])
        .arg(path)
        .output()
        .map_err(CloneError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CloneError::Failed {
            url: url.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The commits the interrupted apply of `series` wrote, from the outcome
/// it recorded with its plan.
fn stored_commits(store: &Store, series: &SeriesToApply) -> Result<Vec<String>, Error> {
    Ok(store
        .apply_result(series)?
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .and_then(|v| {
            v["commits"].as_array().map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default())
}

/// The series' patch mails (cover letter excluded), in order, as
/// `(archived .patch path, raw bytes)`.
fn series_mails(
    store: &Store,
    config: &Config,
    series: &SeriesToApply,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    store
        .patch_paths(series)?
        .into_iter()
        .map(|p| {
            let path = config.intake.archive_dir.join(&p.raw_path);
            std::fs::read(&path)
                .map(|bytes| (p.archive_path, bytes))
                .map_err(|source| Error::Archive { path, source })
        })
        .collect()
}
