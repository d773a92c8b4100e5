//! `junit.xml` of a run: one test case per patch the apply stage handled
//! and one per build target, so Jenkins' test view shows what applied and
//! what built.
//!
//! The cases are made from plain data by pure functions and rendered by
//! `crate::junit`; `load` reads that data from the store (series, patches,
//! mails and builds of the run, and the test stage's results).

pub use crate::junit::render;
use crate::junit::{Case, Outcome, Suite};
use crate::stage::apply::SeriesOutcome;
use crate::stage::build::{BuildState, TargetBuild};
use crate::store::{self, PatchRow, SeriesState, Store};

/// The apply cases of one series: every patch passes when the series
/// applied; when it failed, the failing patch fails and the ones after it
/// are skipped (nothing of a failed series is committed).
pub fn series_cases(outcome: &SeriesOutcome, total: u32, patches: &[PatchRow]) -> Vec<Case> {
    let classname = format!(
        "apply.{}.{}",
        outcome.repo.as_deref().unwrap_or("unrouted"),
        outcome.branch.as_deref().unwrap_or("unknown")
    );
    let failed_at = if outcome.is(SeriesState::Applied) {
        None
    } else {
        Some(
            patches
                .iter()
                .position(|p| outcome.failed_patch.as_deref() == Some(p.archive_path.as_str()))
                .unwrap_or(0),
        )
    };
    patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let outcome_here = match failed_at {
                None => Outcome::Passed,
                Some(f) if i < f => Outcome::Passed,
                Some(f) if i == f => {
                    let e = outcome.error.as_ref();
                    let message =
                        e.map_or_else(|| "the series did not apply".into(), |e| e.message.clone());
                    let mut details = message.clone();
                    if let Some(e) = e {
                        if let Some(path) = &e.path {
                            details.push_str(&format!("\nfile: {path}"));
                        }
                        if let Some(hunk) = &e.hunk {
                            details.push_str(&format!("\nhunk: {hunk}"));
                        }
                    }
                    details.push_str(&format!("\npatch: {}", p.archive_path));
                    Outcome::Failed { message, details }
                }
                Some(_) => Outcome::Skipped {
                    message: "an earlier patch of the series did not apply".into(),
                },
            };
            let output = match (&outcome_here, outcome.commits.get(i)) {
                (Outcome::Passed, Some(commit)) => {
                    Some(format!("commit {commit}\npatch: {}", p.archive_path))
                }
                _ => None,
            };
            Case {
                classname: classname.clone(),
                name: format!("[{}/{}] {}", p.idx, total, p.subject),
                seconds: 0.0,
                outcome: outcome_here,
                output,
            }
        })
        .collect()
}

/// The build case of one target build.
pub fn build_case(b: &TargetBuild) -> Case {
    let outcome = match (&b.error, b.state) {
        (None, BuildState::Ok) => Outcome::Passed,
        (error, _) => {
            let details = error
                .clone()
                .unwrap_or_else(|| format!("state {}", b.state));
            Outcome::Failed {
                message: details.lines().next().unwrap_or("build failed").to_owned(),
                details,
            }
        }
    };
    let mut output = format!("commit {}", b.commit);
    if let Some(nvr) = &b.nvr {
        output.push_str(&format!("\nnvr {nvr}"));
    }
    for rpm in &b.rpms {
        output.push_str(&format!("\nrpm {rpm}"));
    }
    if let Some(log) = &b.log {
        output.push_str(&format!("\nlog {log}"));
    }
    Case {
        classname: format!("build.{}.{}", b.repo, b.branch),
        name: b.target.clone(),
        seconds: b.duration_ms as f64 / 1000.0,
        outcome,
        output: Some(output),
    }
}

/// The suites of `run`, read from the store.
pub fn load(store: &Store, run: i64) -> Result<Vec<Suite>, store::Error> {
    let apply: Vec<Case> = store
        .applied_series::<SeriesOutcome>(run)?
        .iter()
        .flat_map(|s| series_cases(&s.outcome, s.total, &s.patches))
        .collect();
    let build: Vec<Case> = store
        .builds_of_run::<TargetBuild>(run)?
        .iter()
        .map(build_case)
        .collect();
    let mut suites = vec![
        Suite {
            name: format!("patchline run {run}: apply"),
            cases: apply,
        },
        Suite {
            name: format!("patchline run {run}: build"),
            cases: build,
        },
    ];
    let tests: Option<crate::stage::test::TestSummary> = store
        .stages(run)?
        .into_iter()
        .find(|s| s.stage == crate::store::Stage::Test)
        .and_then(|s| s.summary)
        .and_then(|v| serde_json::from_value(v).ok());
    if let Some(tests) = tests.filter(|t| !t.results.is_empty()) {
        suites.push(crate::checks::junit_suite(run, &tests.results));
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::apply::PatchFailure;

    fn patches() -> Vec<PatchRow> {
        (1..=3)
            .map(|i| PatchRow {
                idx: i,
                subject: format!("[PATCH {i}/3] change <{i}> & more"),
                archive_path: format!("/a/000{i}.patch"),
            })
            .collect()
    }

    fn outcome(state: &str) -> SeriesOutcome {
        SeriesOutcome {
            key: "k".into(),
            title: "t".into(),
            version: 1,
            repo: Some("hello".into()),
            branch: Some("master".into()),
            state: state.parse().unwrap(),
            old_tip: None,
            new_tip: None,
            commits: vec!["c1".into(), "c2".into(), "c3".into()],
            failed_patch: None,
            error: None,
            trailers: Vec::new(),
            base_commit: None,
            based_on: Vec::new(),
            applied_from: None,
            waiting_for: None,
        }
    }

    #[test]
    fn failed_series_fails_its_patch_and_skips_the_rest() {
        let mut o = outcome("failed");
        o.commits.clear();
        o.failed_patch = Some("/a/0002.patch".into());
        o.error = Some(PatchFailure {
            path: Some("hello.c".into()),
            ..PatchFailure::general("hunk 1 does not apply")
        });
        let cases = series_cases(&o, 3, &patches());
        assert_eq!(cases[0].outcome, Outcome::Passed);
        assert!(
            matches!(&cases[1].outcome, Outcome::Failed { message, details }
            if message == "hunk 1 does not apply" && details.contains("file: hello.c"))
        );
        assert!(matches!(cases[2].outcome, Outcome::Skipped { .. }));
        assert_eq!(cases[1].classname, "apply.hello.master");
    }

    #[test]
    fn render_escapes_and_counts() {
        let cases = series_cases(&outcome("applied"), 3, &patches());
        assert!(cases.iter().all(|c| c.outcome == Outcome::Passed));
        let build = build_case(&TargetBuild {
            repo: "hello".into(),
            branch: "master".into(),
            commit: "abc".into(),
            target: "el9".into(),
            state: BuildState::Failed,
            nvr: None,
            srpm: None,
            rpms: vec![],
            log: Some("/l/el9.log".into()),
            duration_ms: 1500,
            error: Some("rpmbuild failed\x01\nerror: line".into()),
            task_id: None,
            urls: vec![],
        });
        let xml = render(&[
            Suite {
                name: "apply".into(),
                cases,
            },
            Suite {
                name: "build".into(),
                cases: vec![build],
            },
        ]);
        assert!(
            xml.contains("name=\"[1/3] [PATCH 1/3] change &lt;1&gt; &amp; more\""),
            "{xml}"
        );
        assert!(xml.contains("tests=\"3\" failures=\"0\""), "{xml}");
        assert!(
            xml.contains("tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"1.500\""),
            "{xml}"
        );
        assert!(xml.contains("rpmbuild failed\u{FFFD}"), "{xml}");
        assert!(
            xml.contains("<system-out>commit c1\npatch: /a/0001.patch</system-out>"),
            "{xml}"
        );
    }
}
