//! The `publish` stage: the RPMs the run built go into the yum
//! repositories ([`crate::yum`]), one per repository and target, and the
//! `latest/` directory of each repository.

use crate::config::Config;
use crate::stage::build::{BuildState, TargetBuild};
use crate::store::{self, Store};
use crate::yum::{self, LatestLink, PublishedRepo, publish_latest, publish_one};
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
    pub repos: Vec<PublishedRepo>,
    /// Per repository, the `latest/` directory: only this run's packages.
    pub latest: Vec<LatestLink>,
}

pub fn publish_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<PublishSummary, Error> {
    let builds: Vec<TargetBuild> = store.builds_of_run(run)?;
    // (repo, target) -> files to add.
    let mut wanted: BTreeMap<(String, String), Vec<PathBuf>> = BTreeMap::new();
    for b in builds.iter().filter(|b| b.state == BuildState::Ok) {
        let files = wanted
            .entry((b.repo.clone(), b.target.clone()))
            .or_default();
        files.extend(b.rpms.iter().map(PathBuf::from));
        if let Some(srpm) = &b.srpm {
            files.push(PathBuf::from(srpm));
        }
    }
    let root = config.publish_dir();
    let mut summary = PublishSummary {
        run,
        ..PublishSummary::default()
    };
    let mut per_repo: BTreeMap<String, Vec<(String, Vec<PathBuf>)>> = BTreeMap::new();
    for ((repo, target), files) in wanted {
        let _span = tracing::info_span!("publish", run, repo = %repo, target = %target).entered();
        summary
            .repos
            .push(publish_one(config, &root, run, &repo, &target, &files)?);
        per_repo.entry(repo).or_default().push((target, files));
    }
    let base_url = config.publish_base_url();
    for (repo, files) in per_repo {
        let path = publish_latest(&root, run, &repo, &files)?;
        summary.latest.push(LatestLink {
            url: format!("{base_url}/{repo}/latest/"),
            repo,
            path,
        });
    }
    Ok(summary)
}
