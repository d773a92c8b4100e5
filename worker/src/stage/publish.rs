//! The `publish` stage: the RPMs the run built go into the yum
//! repositories ([`crate::yum`]), one per repository, branch and target
//! (or per repository and target with `[publish] per_branch = false`), and
//! the `latest/` directory of each.

use crate::config::Config;
use crate::stage::build::{BuildState, TargetBuild};
use crate::store::{self, Store};
use crate::yum::{self, LatestLink, Package, PublishedRepo, Scope, publish_latest, publish_one};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Yum(#[from] yum::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PublishSummary {
    pub run: i64,
    /// `true`: one repository per branch (`<repo>/<branch>/<target>/`).
    pub per_branch: bool,
    pub repos: Vec<PublishedRepo>,
    /// Per repository (and branch), the `latest/` directory: only this
    /// run's packages.
    pub latest: Vec<LatestLink>,
    /// Said once, in the first run after the layout changed (per branch or
    /// not): where the repositories went. The report prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout_note: Option<String>,
}

pub fn publish_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<PublishSummary, Error> {
    let builds: Vec<TargetBuild> = store.builds_of_run(run)?;
    let per_branch = config.publish.per_branch;
    // (repo, branch if per branch, target) -> files to add.
    let mut wanted: BTreeMap<(String, Option<String>, String), Vec<Package>> = BTreeMap::new();
    for b in builds.iter().filter(|b| b.state == BuildState::Ok) {
        let branch = per_branch.then(|| b.branch.clone());
        let files = wanted
            .entry((b.repo.clone(), branch, b.target.clone()))
            .or_default();
        let package = |path: &String| Package {
            path: PathBuf::from(path),
            branch: b.branch.clone(),
        };
        files.extend(b.rpms.iter().map(package));
        files.extend(b.srpm.iter().map(package));
    }
    let root = config.publish_dir();
    let mut summary = PublishSummary {
        run,
        per_branch,
        ..PublishSummary::default()
    };
    let mut notes = Vec::new();
    let mut noted = std::collections::BTreeSet::new();
    type Latest = BTreeMap<(String, Option<String>), Vec<(String, Vec<Package>)>>;
    let mut latest: Latest = BTreeMap::new();
    for ((repo, branch, target), files) in wanted {
        let _span =
            tracing::info_span!("publish", run, repo = %repo, branch = ?branch, target = %target)
                .entered();
        if noted.insert(repo.clone()) {
            notes.extend(yum::layout_change(config, &root, &repo)?);
        }
        let scope = Scope {
            repo: &repo,
            branch: branch.as_deref(),
        };
        summary
            .repos
            .push(publish_one(config, &root, run, scope, &target, &files)?);
        latest
            .entry((repo.clone(), branch.clone()))
            .or_default()
            .push((target, files));
    }
    for ((repo, branch), files) in latest {
        let scope = Scope {
            repo: &repo,
            branch: branch.as_deref(),
        };
        summary
            .latest
            .push(publish_latest(config, &root, run, scope, &files)?);
    }
    summary.layout_note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(summary)
}
