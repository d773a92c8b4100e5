//! The `test` stage: each repository's configured commands ([`checks`])
//! run against the RPMs every target built in the run; the results become
//! JUnit XML (`<run dir>/tests.xml`) for Jenkins. A target whose build
//! failed has its tests skipped, not failed: the build failure is the
//! report's news.

use crate::checks::{self, TestResult, TestState, Vars, junit_suite};
use crate::config::Config;
use crate::junit;
use crate::stage::build::{BuildState, TargetBuild};
use crate::store::{self, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Checks(#[from] checks::Error),
    #[error("test: cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TestSummary {
    pub run: i64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub results: Vec<TestResult>,
    /// The JUnit XML file of this run's tests.
    pub junit: Option<String>,
}

/// Runs the `test` stage of `run`.
pub fn test_stage(
    store: &Store,
    config: &Config,
    run: i64,
    progress: &dyn crate::stage::Progress,
) -> Result<TestSummary, Error> {
    let builds: Vec<TargetBuild> = store.builds_of_run(run)?;
    let published = published_urls(store, run)?;
    let run_dir = crate::stage::build::work_dir(config, run);
    let mut summary = TestSummary {
        run,
        ..TestSummary::default()
    };
    let repo_of = |build: &TargetBuild| config.repos.iter().find(|r| r.name == build.repo);
    let total = builds
        .iter()
        .filter_map(repo_of)
        .map(|r| r.tests.len() as u64)
        .sum();
    progress.step(crate::stage::Unit::Tests, Some(total));
    let mut ran = 0;
    for build in &builds {
        let Some(repo) = repo_of(build) else {
            continue;
        };
        for test in &repo.tests {
            progress.advance(
                ran,
                &format!(
                    "{} on {}/{} {}",
                    test.name, build.repo, build.branch, build.target
                ),
            );
            let vars = Vars {
                run,
                repo: build.repo.clone(),
                branch: build.branch.clone(),
                target: build.target.clone(),
                commit: build.commit.clone(),
                nvr: build.nvr.clone().unwrap_or_default(),
                srpm: build.srpm.clone().unwrap_or_default(),
                rpms: build.rpms.clone(),
                repo_url: published
                    .iter()
                    .find(|(r, b, t, _)| {
                        r == &build.repo
                            && t == &build.target
                            && b.as_ref().is_none_or(|b| b == &build.branch)
                    })
                    .map(|(_, _, _, url)| url.clone())
                    .unwrap_or_default(),
            };
            let _span = tracing::info_span!("test", run, repo = %build.repo, target = %build.target, test = %test.name).entered();
            let dir = run_dir.join("tests").join(format!(
                "{}-{}-{}-{}",
                build.repo,
                build.branch.replace('/', "_"),
                build.target,
                test.name
            ));
            let skip = (build.state != BuildState::Ok)
                .then(|| format!("the {} build failed", build.target));
            let result = checks::run_test(test, &vars, &dir, skip)?;
            match result.state {
                TestState::Passed => summary.passed += 1,
                TestState::Skipped => summary.skipped += 1,
                TestState::Failed | TestState::Timeout | TestState::Error => summary.failed += 1,
            }
            tracing::info!(state = %result.state, "test finished");
            summary.results.push(result);
            ran += 1;
        }
    }
    progress.done();
    let file = run_dir.join("tests.xml");
    std::fs::create_dir_all(&run_dir).map_err(|source| Error::Write {
        path: run_dir.clone(),
        source,
    })?;
    let xml = junit::render(&[junit_suite(run, &summary.results)]);
    let tmp = run_dir.join(".tests.xml.tmp");
    std::fs::write(&tmp, xml)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|source| Error::Write {
            path: file.clone(),
            source,
        })?;
    summary.junit = Some(file.display().to_string());
    Ok(summary)
}

/// `(repo, branch, target, url)` of the repositories the publish stage of
/// `run` wrote, from its recorded summary (branch `None`: one repository
/// for all branches).
type Published = (String, Option<String>, String, String);

fn published_urls(store: &Store, run: i64) -> Result<Vec<Published>, store::Error> {
    let stages = store.stages(run)?;
    let Some(summary) = stages
        .into_iter()
        .find(|s| s.stage == store::Stage::Publish)
        .and_then(|s| s.summary)
    else {
        return Ok(Vec::new());
    };
    let publish: crate::stage::publish::PublishSummary =
        serde_json::from_value(summary).unwrap_or_default();
    Ok(publish
        .repos
        .into_iter()
        .map(|r| (r.repo, r.branch, r.target, r.url))
        .collect())
}
