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
//!
//! Trailers: before a series is applied, the replies in its thread are
//! read (a reply to a patch gives that patch its trailers, a reply to the
//! cover letter every patch) and added to the commit messages with the
//! repository's `link` and `sign_off` ones; what each patch got is
//! recorded with the plan. Replies arriving after a series was applied are
//! read by every later apply stage and recorded as late: the report lists
//! them, the branch is never rewritten.

use crate::config::{Config, Repo};
use crate::mail::base::{SeriesBase, series_base};
use crate::mail::trailers::{self, Sender};
use crate::patch::apply::{self, AmOptions, Identity, PatchFailure, SeriesMail, SeriesResult};
use crate::patch::mailinfo::{append_trailers, mailinfo};
use crate::store::{
    self, ApplyRecord, PatchTrailer, ReplyMail, SeriesState, SeriesToApply, Store, ThreadMail,
    TrailerSource,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    #[error("cannot remove the temporary files a killed apply left in {repo}: {source}")]
    Cleanup {
        repo: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// The trailers each patch's commit got (from replies, `link`,
    /// `sign_off`); patches that got none are left out.
    #[serde(default)]
    pub trailers: Vec<PatchTrailers>,
    /// The `base-commit:` the series states (`git format-patch --base`).
    #[serde(default)]
    pub base_commit: Option<String>,
    /// Message-IDs of the series it says it is based on (`Based-on:`).
    #[serde(default)]
    pub based_on: Vec<String>,
    /// Set when it did not apply on the branch tip but did from its base
    /// commit (each change merged onto the tip): that commit.
    #[serde(default)]
    pub applied_from: Option<String>,
    /// Set when it waits for the series it is based on (key): not tried,
    /// still `complete`.
    #[serde(default)]
    pub waiting_for: Option<String>,
}

/// The trailers one patch's commit got, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchTrailers {
    /// The patch's index in its series (1-based).
    pub index: u32,
    pub trailers: Vec<String>,
}

/// A trailer of a reply that arrived after its series was applied: not in
/// the commit (the branch is not rewritten), listed in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateTrailer {
    pub key: String,
    pub title: String,
    pub version: u32,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub trailer: String,
    /// The patches it is for (every one for a reply to the cover letter).
    pub patches: Vec<u32>,
    /// Patches in the series.
    pub total: u32,
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
    /// Series not tried because the series they are based on
    /// (`Based-on:`) is not applied yet.
    pub series_waiting: u64,
    /// Trailers found in replies to series applied before this run.
    pub late_trailers: Vec<LateTrailer>,
    pub pulls_landed: u64,
    pub pulls_refused: u64,
    /// The pull requests of this run (`[GIT PULL]`, `[PULL]`).
    pub pulls: Vec<crate::stage::pull::PullOutcome>,
}

impl ApplySummary {
    /// One series' outcome, counted.
    fn add(&mut self, outcome: SeriesOutcome) {
        if outcome.is(SeriesState::Applied) {
            self.series_applied += 1;
            self.patches_applied += outcome.commits.len() as u64;
        } else if outcome.is(SeriesState::Failed) {
            self.series_failed += 1;
        }
        self.series.push(outcome);
    }
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
    progress: &dyn crate::stage::Progress,
) -> Result<ApplySummary, Error> {
    // A killed apply left temporary objects and packs (git fsck calls them
    // bad objects) and maybe the lock of a branch it was moving (which
    // would refuse every later move); this stage owns them.
    for repo in config
        .repos
        .iter()
        .filter(|r| repos.is_empty() || repos.contains(&r.name))
    {
        let path = config.repo_path(repo);
        let mut branches = repo.branches.clone();
        branches.extend(repo.base_branch.clone());
        let removed = crate::patch::pack::remove_stale_temp_objects(&path)
            .and_then(|objects| {
                apply::remove_stale_ref_locks(&path, &branches).map(|locks| objects + locks)
            })
            .map_err(|source| Error::Cleanup {
                repo: path.clone(),
                source,
            })?;
        if removed > 0 {
            tracing::info!(removed, repo = %repo.name, "removed temporary objects and ref locks a killed apply left");
        }
    }
    // Read before this attempt records anything: what a killed attempt of
    // the same run already finished counts in this run's summary. A stage
    // that once ended (it has a summary) and is run again reports only
    // what the new attempt does.
    let interrupted = !store
        .stages(run)?
        .iter()
        .any(|s| s.stage == store::Stage::Apply && s.summary.is_some());
    let (earlier, earlier_pulls) = if interrupted {
        (store.finished_in_run(run)?, store.pulls_of_run(run)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let candidates = store
        .series_to_apply()?
        .into_iter()
        .filter(|c| repos.is_empty() || c.repo.as_ref().is_some_and(|r| repos.contains(r)));
    let mut summary = ApplySummary {
        run,
        ..ApplySummary::default()
    };
    for result in earlier {
        // An outcome that no longer decodes (written by another patchline)
        // is left out, as the report's views do.
        let Ok(outcome) = serde_json::from_str::<SeriesOutcome>(&result) else {
            continue;
        };
        summary.add(outcome);
    }
    // A series based on another one waits for it; when that one is among
    // this run's, it is tried again after the others.
    let mut waiting: Vec<SeriesToApply> = candidates.collect();
    progress.step(crate::stage::Unit::Series, Some(waiting.len() as u64));
    let mut tried = 0;
    for round in 0..2 {
        let list = std::mem::take(&mut waiting);
        let mut again = Vec::new();
        for c in list {
            let _span = tracing::info_span!("series", run, key = %c.key).entered();
            progress.advance(tried, &c.title);
            // A long series moves the line patch by patch.
            let on_patch = |n: usize, total: usize| {
                if total > 1 {
                    progress.advance(tried, &format!("{} (patch {n} of {total})", c.title));
                }
            };
            let outcome = apply_one_caught(store, config, run, committer, opts, &c, &on_patch)?;
            if outcome.waiting_for.is_some() {
                again.push((c, outcome));
                continue;
            }
            tried += 1;
            progress.advance(tried, &c.title);
            summary.add(outcome);
        }
        match round {
            0 => waiting = again.into_iter().map(|(c, _)| c).collect(),
            _ => {
                summary.series_waiting = again.len() as u64;
                summary.series.extend(again.into_iter().map(|(_, o)| o));
            }
        }
    }
    progress.done();
    // Pull requests the killed attempt dealt with come first, as series do.
    summary.pulls = earlier_pulls
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    summary.pulls.extend(crate::stage::pull::apply_pulls(
        store,
        config,
        run,
        repos,
        &|path| {
            committer
                .cloned()
                .unwrap_or_else(|| configured_committer(config, path))
        },
    )?);
    summary.pulls_landed = summary
        .pulls
        .iter()
        .filter(|p| p.state == crate::store::PullState::Landed)
        .count() as u64;
    summary.pulls_refused = summary.pulls.iter().filter(|p| p.error.is_some()).count() as u64;
    find_late_trailers(store, config, run, repos, opts)?;
    summary.late_trailers = late_trailers_of(store, run)?;
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

/// [`apply_one`] with a panic caught and recorded as that series' failure:
/// a bug that some mail's bytes reach must cost that series only, never
/// the other series of the run (or, under `patchline serve`, the worker).
fn apply_one_caught(
    store: &mut Store,
    config: &Config,
    run: i64,
    committer: Option<&Identity>,
    opts: AmOptions,
    c: &SeriesToApply,
    on_patch: &dyn Fn(usize, usize),
) -> Result<SeriesOutcome, Error> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        apply_one(store, config, run, committer, opts, c, on_patch)
    }));
    match caught {
        Ok(result) => result,
        Err(panic) => {
            let message = crate::stage::panic_message(panic.as_ref());
            tracing::error!(key = %c.key, %message, "applying the series panicked");
            let mut outcome = new_outcome(c);
            outcome.error = Some(PatchFailure::general(format!(
                "internal error while applying this series (a bug in patchline, please report it): {message}"
            )));
            finish(store, run, c, SeriesState::Failed, outcome)
        }
    }
}

fn new_outcome(c: &SeriesToApply) -> SeriesOutcome {
    SeriesOutcome {
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
        trailers: Vec::new(),
        base_commit: None,
        based_on: Vec::new(),
        applied_from: None,
        waiting_for: None,
    }
}

fn apply_one(
    store: &mut Store,
    config: &Config,
    run: i64,
    committer: Option<&Identity>,
    opts: AmOptions,
    c: &SeriesToApply,
    on_patch: &dyn Fn(usize, usize),
) -> Result<SeriesOutcome, Error> {
    let mut outcome = new_outcome(c);
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
        (outcome.commits, outcome.trailers) = stored_plan(store, c)?;
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
            outcome.trailers.clear();
            store.record_added_trailers(c, run, &[], None)?;
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
    let committer = match committer {
        Some(id) => id.clone(),
        None => configured_committer(config, repo_path),
    };
    // Read before the replies: a reply stored meanwhile is late, not lost.
    let upto = store.last_mail_id()?;
    let thread = store.series_thread(&c.key)?;
    let patch_mails: Vec<&ThreadMail> = thread.iter().filter(|m| m.idx > 0).collect();
    let mut planned = planned_trailers(store, config, repo, &thread, &committer, upto)?;
    let mails: Vec<SeriesMail> = series_mails(store, config, c)?
        .into_iter()
        .enumerate()
        .map(|(i, (label, raw))| {
            let idx = patch_mails.get(i).map_or(i as u32 + 1, |m| m.idx);
            let trailers = planned
                .get(&idx)
                .map(|p| p.iter().map(|t| t.trailer.clone()).collect())
                .unwrap_or_default();
            SeriesMail {
                label,
                raw,
                trailers,
            }
        })
        .collect();
    // The `[PULL n/N]` patches of a QEMU-style pull request: taken as the
    // pull (fetched by the pull stage) when its cover names a URL to fetch;
    // as a series only when it does not.
    if let Some(cover_id) = pull_cover_with_request(store, config, &thread)? {
        outcome.state = SeriesState::Superseded;
        outcome.error = Some(PatchFailure::general(format!(
            "its cover <{cover_id}> is a pull request with a repository to fetch: taken as that pull request"
        )));
        return finish(store, run, c, SeriesState::Superseded, outcome);
    }
    // What the series says it is based on.
    let stated = stated_base(config, &thread, &mails);
    outcome.base_commit = stated.commit.clone();
    outcome.based_on = stated.based_on.clone();
    for id in &stated.based_on {
        match store.series_of_mail(id)? {
            // Not a series patchline has: already upstream, or elsewhere.
            None => {}
            Some((_, SeriesState::Applied)) => {}
            Some((
                key,
                SeriesState::Complete | SeriesState::Incomplete | SeriesState::Applying,
            )) => {
                outcome.state = c.state;
                outcome.waiting_for = Some(key);
                return Ok(outcome);
            }
            Some((key, state)) => {
                return fail(
                    store,
                    outcome,
                    PatchFailure::general(format!(
                        "it is based on series {key} (Based-on: <{id}>), which is {state}: it cannot apply without it"
                    )),
                );
            }
        }
    }
    let prepare = |base: Option<&str>, mails: Vec<SeriesMail>| {
        let total = mails.len();
        apply::prepare_series(
            repo_path,
            &branch,
            base,
            mails.into_iter().map(Ok),
            &committer,
            opts,
            &|n| on_patch(n, total),
        )
    };
    let mut result: SeriesResult = match prepare(None, mails.clone()) {
        Ok(r) => r,
        Err(e @ apply::Error::NoBranch { .. }) => {
            return fail(store, outcome, PatchFailure::general(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    // Not on the tip: from its base commit, as `b4 am -3` would.
    if result.patches.iter().any(|p| !p.ok)
        && let Some(base) = &stated.commit
    {
        let note = if apply::has_commit(repo_path, base)? {
            let from_base = prepare(Some(base), mails)?;
            match from_base.patches.iter().find(|p| !p.ok) {
                None => {
                    outcome.applied_from = Some(base.clone());
                    result = from_base;
                    None
                }
                Some(bad) => Some(format!(
                    "from its base commit {base} it does not apply either: {}",
                    bad.error
                        .as_ref()
                        .map_or("did not apply", |e| e.message.as_str())
                )),
            }
        } else {
            Some(format!(
                "its base commit {base} is not in the repository, so a 3-way apply from it was not possible"
            ))
        };
        if let (Some(note), Some(bad)) = (note, result.patches.iter_mut().find(|p| !p.ok))
            && let Some(error) = bad.error.as_mut()
        {
            error.message = format!("{} ({note})", error.message);
        }
    }
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
    // What each commit really got (the engine leaves out what the patch
    // already had), with where it came from.
    let mut rows = Vec::new();
    for (i, p) in result.patches.iter().enumerate() {
        let idx = patch_mails.get(i).map_or(i as u32 + 1, |m| m.idx);
        let mut offered = planned.remove(&idx).unwrap_or_default();
        for added in &p.trailers {
            let at = offered.iter().position(|t| &t.trailer == added);
            let from = at.map(|at| offered.remove(at));
            rows.push(PatchTrailer {
                idx,
                trailer: added.clone(),
                source: from.as_ref().map_or(TrailerSource::Reply, |t| t.source),
                reply_mail_id: from.and_then(|t| t.reply_mail_id),
            });
        }
        if !p.trailers.is_empty() {
            outcome.trailers.push(PatchTrailers {
                index: idx,
                trailers: p.trailers.clone(),
            });
        }
    }
    let watch = repo.trailers.then_some(upto);
    store.record_added_trailers(c, run, &rows, watch)?;
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
            outcome.trailers.clear();
            store.record_added_trailers(c, run, &[], None)?;
            fail(store, outcome, PatchFailure::general(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The Message-ID of the pull request cover of a series of `[PULL n/N]`
/// patches, when that cover has `git request-pull` text.
fn pull_cover_with_request(
    store: &Store,
    config: &Config,
    thread: &[ThreadMail],
) -> Result<Option<String>, Error> {
    let is_pull = |m: &ThreadMail| {
        m.fields
            .as_ref()
            .and_then(|f| f.get("kind"))
            .and_then(|k| k.as_str())
            == Some("pull")
    };
    let Some(first) = thread.iter().find(|m| m.idx > 0 && is_pull(m)) else {
        return Ok(None);
    };
    let Some(cover_id) = first.references.first() else {
        return Ok(None);
    };
    let Some(raw_path) = store.pull_cover(cover_id)? else {
        return Ok(None);
    };
    let body = crate::stage::archived_body(config, &raw_path).unwrap_or_default();
    Ok(crate::mail::pull::parse_request_pull(&body)
        .is_ok()
        .then(|| cover_id.clone()))
}

/// What a series says it is based on: `git format-patch --base` writes
/// `base-commit:` in the first mail it outputs (the cover letter, else
/// patch 1), b4 and Patchew their footers in the cover letter; so only
/// that mail is read.
fn stated_base(config: &Config, thread: &[ThreadMail], mails: &[SeriesMail]) -> SeriesBase {
    let body = match thread.iter().find(|m| m.idx == 0) {
        Some(cover) => crate::stage::archived_body(config, &cover.archive_path).ok(),
        None => mails.first().and_then(|m| {
            crate::mail::parse::parse_mail(&m.raw, &Default::default())
                .ok()
                .map(|m| m.body)
        }),
    };
    body.map(|b| series_base(&b)).unwrap_or_default()
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

/// The commits the interrupted apply of `series` wrote and the trailers
/// they got, from the outcome it recorded with its plan.
fn stored_plan(
    store: &Store,
    series: &SeriesToApply,
) -> Result<(Vec<String>, Vec<PatchTrailers>), Error> {
    let planned = store
        .apply_result(series)?
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .unwrap_or_default();
    let commits = planned["commits"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // A plan written before trailers existed has none.
    let trailers = serde_json::from_value(planned["trailers"].clone()).unwrap_or_default();
    Ok((commits, trailers))
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

/// A trailer offered to a patch's commit, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Offered {
    trailer: String,
    source: TrailerSource,
    reply_mail_id: Option<i64>,
}

/// The mail of a series (its index) a reply is about: the nearest of its
/// ancestors that is one of `series` — through the replies in `replies`
/// (its In-Reply-To, else the last of its References), and when the chain
/// leaves them, the nearest of the last reply's References. A reply whose
/// nearest filed ancestor is a mail of another series (`others`: a later
/// version sent into this thread) is about that one, not this.
fn reply_target<T: Copy>(
    reply: &ReplyMail,
    replies: &HashMap<&str, &ReplyMail>,
    series: &HashMap<&str, T>,
    others: &HashSet<&str>,
) -> Option<T> {
    let mut current = reply;
    // Broken threading may loop; a real thread is never this deep.
    for _ in 0..64 {
        let parent = current
            .in_reply_to
            .as_deref()
            .or(current.references.last().map(String::as_str))?;
        if let Some(target) = series.get(parent) {
            return Some(*target);
        }
        if others.contains(parent) {
            return None;
        }
        match replies.get(parent) {
            Some(r) if r.mail_id != current.mail_id => current = r,
            _ => break,
        }
    }
    for id in current.references.iter().rev() {
        if let Some(target) = series.get(id.as_str()) {
            return Some(*target);
        }
        if others.contains(id.as_str()) {
            return None;
        }
    }
    None
}

/// The ids the replies answer or reference, sorted, once each.
fn referenced_ids(replies: &[ReplyMail]) -> Vec<String> {
    let mut ids: Vec<String> = replies
        .iter()
        .flat_map(|r| r.in_reply_to.iter().chain(&r.references).cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The trailers of one reply, read from the archive; a reply that cannot
/// be read gives none (with a warning): a lost review must not stop a
/// series.
fn trailers_of_reply(config: &Config, repo: &Repo, reply: &ReplyMail) -> Vec<String> {
    let path = config.intake.archive_dir.join(&reply.raw_path);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(message_id = %reply.message_id, path = %path.display(), error = %e,
                "cannot read an archived reply: its trailers are not taken");
            return Vec::new();
        }
    };
    let Some(text) = trailers::reply_text(&raw) else {
        return Vec::new();
    };
    let sender = Sender {
        name: reply.from_name.as_deref(),
        email: reply.from_email.as_deref().unwrap_or(""),
    };
    let found = trailers::reply_trailers(&text, sender, repo.trailers_from_sender_only);
    for ignored in &found.ignored {
        tracing::info!(message_id = %reply.message_id, line = %ignored.line, reason = ignored.reason,
            "trailer not taken");
    }
    found.trailers.iter().map(|t| t.to_string()).collect()
}

/// Every reply in the thread of `thread` up to mail `upto`, replies to
/// replies included (asked again with their ids until no new one comes),
/// in arrival order. Only mails stored after the thread's first are
/// looked at: a reply comes after what it answers, and the scan of the
/// References of every mail ever stored would grow with the archive.
fn thread_replies(
    store: &Store,
    thread: &[ThreadMail],
    upto: i64,
) -> Result<Vec<ReplyMail>, Error> {
    let mut ids: Vec<String> = thread.iter().map(|m| m.message_id.clone()).collect();
    let first = thread.iter().map(|m| m.mail_id).min().unwrap_or(0);
    let mut replies: BTreeMap<i64, ReplyMail> = BTreeMap::new();
    // A bound for broken threading; each round goes one level deeper.
    for _ in 0..16 {
        let found = store.thread_replies(&ids, first)?;
        let mut new = false;
        for r in found.into_iter().filter(|r| r.mail_id <= upto) {
            if let std::collections::btree_map::Entry::Vacant(e) = replies.entry(r.mail_id) {
                ids.push(r.message_id.clone());
                e.insert(r);
                new = true;
            }
        }
        if !new {
            break;
        }
    }
    Ok(replies.into_values().collect())
}

/// Per patch index, the trailers its commit is offered: those of the
/// replies to the patch, then those of the replies to the cover letter
/// (each in arrival order, as b4 orders them), then the configured
/// `Link:` and the committer's `Signed-off-by:`.
fn planned_trailers(
    store: &Store,
    config: &Config,
    repo: &Repo,
    thread: &[ThreadMail],
    committer: &Identity,
    upto: i64,
) -> Result<BTreeMap<u32, Vec<Offered>>, Error> {
    let mut per_patch: BTreeMap<u32, Vec<Offered>> = thread
        .iter()
        .filter(|m| m.idx > 0)
        .map(|m| (m.idx, Vec::new()))
        .collect();
    if repo.trailers {
        let series: HashMap<&str, u32> = thread
            .iter()
            .map(|m| (m.message_id.as_str(), m.idx))
            .collect();
        let replies = thread_replies(store, thread, upto)?;
        let by_id: HashMap<&str, &ReplyMail> =
            replies.iter().map(|r| (r.message_id.as_str(), r)).collect();
        let filed = store.filed_message_ids(&referenced_ids(&replies))?;
        let others: HashSet<&str> = filed
            .iter()
            .map(String::as_str)
            .filter(|id| !series.contains_key(id))
            .collect();
        let mut to_cover = Vec::new();
        for reply in &replies {
            let Some(idx) = reply_target(reply, &by_id, &series, &others) else {
                continue;
            };
            let offered = trailers_of_reply(config, repo, reply)
                .into_iter()
                .map(|trailer| Offered {
                    trailer,
                    source: TrailerSource::Reply,
                    reply_mail_id: Some(reply.mail_id),
                });
            match per_patch.get_mut(&idx) {
                Some(list) => list.extend(offered),
                None => to_cover.extend(offered),
            }
        }
        for list in per_patch.values_mut() {
            list.extend(to_cover.iter().cloned());
        }
    }
    for m in thread.iter().filter(|m| m.idx > 0) {
        let Some(list) = per_patch.get_mut(&m.idx) else {
            continue;
        };
        if let Some(url) = repo.link_for(&m.message_id) {
            list.push(Offered {
                trailer: format!("Link: {url}"),
                source: TrailerSource::Link,
                reply_mail_id: None,
            });
        }
        if repo.sign_off {
            list.push(Offered {
                trailer: format!("Signed-off-by: {} <{}>", committer.name, committer.email),
                source: TrailerSource::SignOff,
                reply_mail_id: None,
            });
        }
    }
    Ok(per_patch)
}

/// Reads the replies that arrived since the applied series (of the run's
/// repositories, with `trailers` on) were last looked at, and records the
/// trailers they bring that the commits do not have as late.
fn find_late_trailers(
    store: &mut Store,
    config: &Config,
    run: i64,
    repos: &[String],
    opts: AmOptions,
) -> Result<(), Error> {
    let covered = |repo: &Option<String>| -> Option<&Repo> {
        let name = repo.as_ref()?;
        if !repos.is_empty() && !repos.contains(name) {
            return None;
        }
        config.repos.iter().find(|r| &r.name == name && r.trailers)
    };
    let watched: Vec<(i64, i64)> = store
        .watched_series()?
        .into_iter()
        .filter(|(_, repo, _)| covered(repo).is_some())
        .map(|(id, _, upto)| (id, upto))
        .collect();
    let Some(from) = watched.iter().map(|(_, upto)| *upto).min() else {
        return Ok(());
    };
    let upto = store.last_mail_id()?;
    if upto <= from {
        return Ok(());
    }
    let replies: Vec<ReplyMail> = store
        .replies_after(from)?
        .into_iter()
        .filter(|r| r.mail_id <= upto)
        .collect();
    let referenced = referenced_ids(&replies);
    let mails = store.watched_mails(&referenced)?;
    let targets: HashMap<&str, usize> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| (m.message_id.as_str(), i))
        .collect();
    let filed = store.filed_message_ids(&referenced)?;
    let others: HashSet<&str> = filed
        .iter()
        .map(String::as_str)
        .filter(|id| !targets.contains_key(id))
        .collect();
    let by_id: HashMap<&str, &ReplyMail> =
        replies.iter().map(|r| (r.message_id.as_str(), r)).collect();
    // Per series: the message each patch's commit has now, built once.
    let mut messages: HashMap<i64, BTreeMap<u32, String>> = HashMap::new();
    let mut late: Vec<(i64, PatchTrailer)> = Vec::new();
    for reply in &replies {
        let Some(target) = reply_target(reply, &by_id, &targets, &others).map(|i| &mails[i]) else {
            continue;
        };
        if reply.mail_id <= target.upto {
            continue;
        }
        let Some(repo) = store
            .series_repo(target.series_id)?
            .and_then(|name| covered(&Some(name)))
        else {
            continue;
        };
        let found = trailers_of_reply(config, repo, reply);
        if found.is_empty() {
            continue;
        }
        let patches = match messages.entry(target.series_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(commit_messages(
                store,
                config,
                target.series_id,
                &target.key,
                opts,
            )?),
        };
        let indexes: Vec<u32> = if target.idx == 0 {
            patches.keys().copied().collect()
        } else {
            vec![target.idx]
        };
        for idx in indexes {
            let Some(message) = patches.get_mut(&idx) else {
                continue;
            };
            let (with, added) = append_trailers(message, &found);
            *message = with;
            late.extend(added.into_iter().map(|trailer| {
                (
                    target.series_id,
                    PatchTrailer {
                        idx,
                        trailer,
                        source: TrailerSource::Reply,
                        reply_mail_id: Some(reply.mail_id),
                    },
                )
            }));
        }
    }
    let ids: Vec<i64> = watched.iter().map(|(id, _)| *id).collect();
    store.record_late_trailers(run, &late, &ids, upto)?;
    Ok(())
}

/// Per patch index of series `series_id`, its commit message as apply
/// wrote it (the mail's message with the recorded trailers) and with the
/// late trailers recorded so far: what a late trailer must not repeat.
fn commit_messages(
    store: &Store,
    config: &Config,
    series_id: i64,
    key: &str,
    opts: AmOptions,
) -> Result<BTreeMap<u32, String>, store::Error> {
    let recorded = store.series_trailers(series_id)?;
    let mut out = BTreeMap::new();
    for m in store.series_thread(key)?.iter().filter(|m| m.idx > 0) {
        let path = config.intake.archive_dir.join(&m.archive_path);
        // A patch file gone from the archive must not stop the stage for
        // a report line: its late trailers are then checked against the
        // recorded ones only.
        let message = match std::fs::read(&path) {
            Ok(raw) => mailinfo(&raw, opts.mailinfo)
                .map(|info| info.message)
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot read an archived patch: its late trailers are checked against the recorded ones only");
                String::new()
            }
        };
        let had: Vec<String> = recorded
            .iter()
            .filter(|(_, t)| t.idx == m.idx)
            .map(|(_, t)| t.trailer.clone())
            .collect();
        out.insert(m.idx, append_trailers(&message, &had).0);
    }
    Ok(out)
}

/// The late trailers `run` recorded, one entry per reply trailer and
/// series (a reply to the cover letter lists every patch).
fn late_trailers_of(store: &Store, run: i64) -> Result<Vec<LateTrailer>, Error> {
    let mut out: Vec<(Option<i64>, LateTrailer)> = Vec::new();
    for r in store.late_trailers(run)? {
        let same = out.iter_mut().find(|(reply, l)| {
            *reply == r.trailer.reply_mail_id
                && l.key == r.series_key
                && l.trailer == r.trailer.trailer
        });
        match same {
            Some((_, l)) => l.patches.push(r.trailer.idx),
            None => out.push((
                r.trailer.reply_mail_id,
                LateTrailer {
                    key: r.series_key,
                    title: r.series_title,
                    version: r.series_version,
                    repo: r.repo,
                    branch: r.branch,
                    trailer: r.trailer.trailer,
                    patches: vec![r.trailer.idx],
                    total: r.total,
                },
            )),
        }
    }
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: i64, in_reply_to: Option<&str>, refs: &[&str]) -> ReplyMail {
        ReplyMail {
            mail_id: id,
            message_id: format!("r{id}"),
            in_reply_to: in_reply_to.map(str::to_owned),
            references: refs.iter().map(|r| r.to_string()).collect(),
            from_name: None,
            from_email: None,
            raw_path: String::new(),
        }
    }

    #[test]
    fn a_reply_is_about_its_nearest_series_mail() {
        let series: HashMap<&str, u32> = [("cover", 0), ("p1", 1), ("p2", 2)].into();
        let replies = [
            reply(1, Some("p2"), &["cover", "p2"]),
            // A reply to a reply, without References: up the chain.
            reply(2, Some("r1"), &[]),
            // To a reply we do not have: the nearest of its References.
            reply(3, Some("lost"), &["cover", "p1", "lost"]),
            reply(4, Some("r3"), &["cover", "p1", "lost", "r3"]),
            // Only References.
            reply(5, None, &["cover"]),
            // Another thread; a loop of replies.
            reply(6, Some("nowhere"), &["nowhere"]),
            reply(7, Some("r8"), &[]),
            reply(8, Some("r7"), &[]),
        ];
        let by_id: HashMap<&str, &ReplyMail> =
            replies.iter().map(|r| (r.message_id.as_str(), r)).collect();
        let none = HashSet::new();
        let targets: Vec<Option<u32>> = replies
            .iter()
            .map(|r| reply_target(r, &by_id, &series, &none))
            .collect();
        assert_eq!(
            targets,
            [
                Some(2),
                Some(2),
                Some(1),
                Some(1),
                Some(0),
                None,
                None,
                None
            ]
        );
        // A v2 sent into this thread: a reply to its patch is about it,
        // even with this series' cover in its References.
        let v2 = reply(9, Some("v2p1"), &["cover", "v2cover", "v2p1"]);
        let others: HashSet<&str> = ["v2cover", "v2p1"].into();
        assert_eq!(reply_target(&v2, &by_id, &series, &none), Some(0));
        assert_eq!(reply_target(&v2, &by_id, &series, &others), None);
    }
}
