//! `junit.xml` of a run: one test case per patch the apply stage handled,
//! one per build target, one per test command, and one per series the run
//! handled (applied and built and tested, failed, held, superseded), so
//! Jenkins' test view shows what applied, what built and what became of
//! each contribution. Every suite carries the `url` of the run's status
//! page, every series case the link to the series' page (absolute with
//! `[server] public_url`).
//!
//! The cases are made from plain data by pure functions and rendered by
//! `crate::junit`; `load` reads that data from the store (series, patches,
//! mails and builds of the run, and the stage summaries).

use crate::checks::{TestResult, TestState};
use crate::junit::{Case, Outcome, Suite};
use crate::stage::apply::{ApplySummary, SeriesOutcome};
use crate::stage::build::{BuildState, TargetBuild};
use crate::stage::collect::{CollectSummary, SeriesLine};
use crate::store::{self, PatchRow, SeriesRef, SeriesState, Stage, Store};

/// The suites of one run and the address of its status page.
#[derive(Debug, Clone, PartialEq)]
pub struct RunJunit {
    pub suites: Vec<Suite>,
    /// `/ui/runs/N`, absolute with a public URL.
    pub url: String,
}

pub fn render(junit: &RunJunit) -> String {
    crate::junit::render_with_properties(&junit.suites, &[("url", &junit.url)])
}

/// Why a series did not apply, with the file, hunk and patch when known.
fn apply_failure(outcome: &SeriesOutcome, patch: Option<&str>) -> Outcome {
    let e = outcome.error.as_ref();
    let message = e.map_or_else(|| "the series did not apply".into(), |e| e.message.clone());
    let mut details = message.clone();
    if let Some(e) = e {
        if let Some(path) = &e.path {
            details.push_str(&format!("\nfile: {path}"));
        }
        if let Some(hunk) = &e.hunk {
            details.push_str(&format!("\nhunk: {hunk}"));
        }
    }
    if let Some(patch) = patch {
        details.push_str(&format!("\npatch: {patch}"));
    }
    Outcome::Failed { message, details }
}

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
                Some(f) if i == f => apply_failure(outcome, Some(&p.archive_path)),
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

/// One series the run handled, as the series suite shows it: the apply
/// stage's outcome, or the collect stage's line of a series apply did not
/// take (held for missing patches, superseded, expired).
#[derive(Debug, Clone, Copy)]
pub enum HandledSeries<'a> {
    Apply(&'a SeriesOutcome),
    Collect(&'a SeriesLine),
}

impl HandledSeries<'_> {
    fn key(&self) -> &str {
        match self {
            HandledSeries::Apply(o) => &o.key,
            HandledSeries::Collect(l) => &l.key,
        }
    }

    fn route(&self) -> (Option<&str>, Option<&str>) {
        match self {
            HandledSeries::Apply(o) => (o.repo.as_deref(), o.branch.as_deref()),
            HandledSeries::Collect(l) => (l.repo.as_deref(), l.branch.as_deref()),
        }
    }
}

/// What became of a series: passed when it applied and every build and
/// test of its branch in this run passed; failed with the reason (the
/// patch, file and hunk; the build target and its log tail; the test and
/// its output); skipped, with why, when it was not applied (held,
/// superseded, expired, waiting for the series it is based on).
fn series_outcome(s: HandledSeries<'_>, builds: &[TargetBuild], tests: &[TestResult]) -> Outcome {
    let skipped = |message: String| Outcome::Skipped { message };
    let o = match s {
        HandledSeries::Apply(o) => o,
        HandledSeries::Collect(line) => {
            let missing = line
                .missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return skipped(if line.is(SeriesState::Incomplete) {
                format!(
                    "held: received {} of {} patches; missing: {missing}",
                    line.received, line.total
                )
            } else if line.is(SeriesState::Superseded) {
                "superseded by a newer version of the same series; only the newest is applied"
                    .into()
            } else if line.is(SeriesState::Expired) {
                format!("expired: incomplete past the deadline; missing: {missing}")
            } else {
                format!("not applied in this run ({})", line.state)
            });
        }
    };
    if let Some(key) = &o.waiting_for {
        return skipped(format!(
            "waits for series {key}, which it is based on (Based-on:), to apply first"
        ));
    }
    if o.is(SeriesState::Failed) {
        return apply_failure(o, o.failed_patch.as_deref());
    }
    if o.is(SeriesState::Superseded) {
        return skipped(o.error.as_ref().map_or_else(
            || "superseded".to_owned(),
            |e| format!("superseded: {}", e.message),
        ));
    }
    if !o.is(SeriesState::Applied) {
        return skipped(format!("not applied in this run ({})", o.state));
    }
    let on_branch = |repo: &str, branch: &str| {
        o.repo.as_deref() == Some(repo) && o.branch.as_deref() == Some(branch)
    };
    let mut failures: Vec<(String, String)> = builds
        .iter()
        .filter(|b| on_branch(&b.repo, &b.branch) && b.state != BuildState::Ok)
        .map(|b| {
            let headline = format!(
                "applied, but the build of {}/{} for {} {}",
                b.repo,
                b.branch,
                b.target,
                if b.state == BuildState::Failed {
                    "failed".into()
                } else {
                    format!("is {}", b.state)
                }
            );
            let mut details = format!("{headline}\n{}", b.error.as_deref().unwrap_or_default());
            if let Some(log) = &b.log {
                details.push_str(&format!("\nlog: {log}"));
            }
            (headline, details)
        })
        .collect();
    failures.extend(
        tests
            .iter()
            .filter(|t| {
                on_branch(&t.repo, &t.branch)
                    && matches!(
                        t.state,
                        TestState::Failed | TestState::Timeout | TestState::Error
                    )
            })
            .map(|t| {
                let headline = format!("applied and built, but test {}", t.headline());
                let tail: Vec<&str> = t.output.lines().rev().take(40).collect();
                let output: Vec<&str> = tail.into_iter().rev().collect();
                (
                    headline.clone(),
                    format!("{headline}\n{}", output.join("\n")),
                )
            }),
    );
    match failures.first() {
        None => Outcome::Passed,
        Some((message, _)) => Outcome::Failed {
            message: message.clone(),
            details: failures
                .iter()
                .map(|(_, d)| d.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        },
    }
}

/// The series case of one handled series: classname `series.<repo>.<branch>`,
/// named by title, version and patch count, its output the link to the
/// series' status page (`base` is the public URL, or empty for a relative
/// link) when it is still stored.
pub fn series_case(
    s: HandledSeries<'_>,
    stored: Option<&SeriesRef>,
    builds: &[TargetBuild],
    tests: &[TestResult],
    base: &str,
) -> Case {
    let (repo, branch) = s.route();
    let (title, version) = match s {
        HandledSeries::Apply(o) => (&o.title, o.version),
        HandledSeries::Collect(l) => (&l.title, l.version),
    };
    let total = match (stored, s) {
        (Some(r), _) => r.total,
        (None, HandledSeries::Collect(l)) => l.total,
        (None, HandledSeries::Apply(o)) => o.commits.len() as u32,
    };
    let mut output = Vec::new();
    if let Some(r) = stored {
        output.push(format!("status page: {base}/ui/series/{}", r.id));
    }
    output.push(format!("series: {}", s.key()));
    if let HandledSeries::Apply(o) = s
        && let Some(tip) = o.new_tip.as_deref().filter(|_| o.is(SeriesState::Applied))
    {
        output.push(format!("branch tip: {tip}"));
    }
    Case {
        classname: format!(
            "series.{}.{}",
            repo.unwrap_or("unrouted"),
            branch.unwrap_or("unknown")
        ),
        name: format!(
            "{title} v{version} ({total} patch{})",
            if total == 1 { "" } else { "es" }
        ),
        seconds: 0.0,
        outcome: series_outcome(s, builds, tests),
        output: Some(output.join("\n")),
    }
}

/// The series a run handled, once each: the apply stage's outcomes, then
/// the collect stage's held, superseded and expired series (of the run's
/// repositories, when it names some).
pub fn handled_series<'a>(
    apply: Option<&'a ApplySummary>,
    collect: Option<&'a CollectSummary>,
    repos: &[String],
) -> Vec<HandledSeries<'a>> {
    let mut out: Vec<HandledSeries<'a>> = apply
        .into_iter()
        .flat_map(|a| a.series.iter().map(HandledSeries::Apply))
        .collect();
    let pending = collect.into_iter().flat_map(|c| &c.series).filter(|l| {
        [
            SeriesState::Incomplete,
            SeriesState::Superseded,
            SeriesState::Expired,
        ]
        .iter()
        .any(|state| l.is(*state))
            && (repos.is_empty() || l.repo.as_ref().is_some_and(|r| repos.contains(r)))
    });
    for line in pending {
        if !out.iter().any(|s| s.key() == line.key) {
            out.push(HandledSeries::Collect(line));
        }
    }
    out
}

fn stage_summary<T: serde::de::DeserializeOwned>(
    stages: &[store::StageRow],
    stage: Stage,
) -> Option<T> {
    stages
        .iter()
        .find(|s| s.stage == stage)
        .and_then(|s| s.summary.clone())
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The suites of `run`, read from the store; links are absolute under
/// `public_url` when it is given, else relative to the worker.
pub fn load(store: &Store, run: i64, public_url: Option<&str>) -> Result<RunJunit, store::Error> {
    let base = public_url.unwrap_or_default();
    let apply: Vec<Case> = store
        .applied_series::<SeriesOutcome>(run)?
        .iter()
        .flat_map(|s| series_cases(&s.outcome, s.total, &s.patches))
        .collect();
    let builds: Vec<TargetBuild> = store.builds_of_run(run)?;
    let mut suites = vec![
        Suite {
            name: format!("patchline run {run}: apply"),
            cases: apply,
        },
        Suite {
            name: format!("patchline run {run}: build"),
            cases: builds.iter().map(build_case).collect(),
        },
    ];
    let stages = store.stages(run)?;
    let tests: Vec<TestResult> =
        stage_summary::<crate::stage::test::TestSummary>(&stages, Stage::Test)
            .map(|t| t.results)
            .unwrap_or_default();
    if !tests.is_empty() {
        suites.push(crate::checks::junit_suite(run, &tests));
    }
    let apply: Option<ApplySummary> = stage_summary(&stages, Stage::Apply);
    let collect: Option<CollectSummary> = stage_summary(&stages, Stage::Collect);
    let handled = handled_series(
        apply.as_ref(),
        collect.as_ref(),
        &store.run(run)?.options.repos,
    );
    let keys: Vec<String> = handled.iter().map(|s| s.key().to_owned()).collect();
    let stored = store.series_refs(&keys)?;
    suites.push(Suite {
        name: format!("patchline run {run}: series"),
        cases: handled
            .iter()
            .map(|s| {
                let r = stored.iter().find(|r| r.key == s.key());
                series_case(*s, r, &builds, &tests, base)
            })
            .collect(),
    });
    Ok(RunJunit {
        suites,
        url: format!("{base}/ui/runs/{run}"),
    })
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

    fn target_build(branch: &str, state: BuildState) -> TargetBuild {
        TargetBuild {
            repo: "hello".into(),
            branch: branch.into(),
            commit: "abc".into(),
            target: "el9".into(),
            state,
            nvr: None,
            srpm: None,
            rpms: vec![],
            log: Some("/l/el9.log".into()),
            duration_ms: 1500,
            error: (state != BuildState::Ok).then(|| "rpmbuild failed\nerror: line 3".into()),
            task_id: None,
            urls: vec![],
        }
    }

    fn test_result(state: TestState) -> TestResult {
        TestResult {
            repo: "hello".into(),
            branch: "master".into(),
            target: "el9".into(),
            name: "smoke".into(),
            command: vec!["true".into()],
            state,
            exit_code: Some(1),
            duration_ms: 10,
            output: "line 1\nboom".into(),
            log: None,
            message: Some("exit status 1".into()),
        }
    }

    fn line(key: &str, state: &str, repo: &str) -> SeriesLine {
        SeriesLine {
            key: key.into(),
            title: "held one".into(),
            version: 2,
            total: 3,
            received: 1,
            state: state.into(),
            missing: vec![2, 3],
            repo: Some(repo.into()),
            branch: Some("master".into()),
            archive_dir: "a".into(),
        }
    }

    const STORED: SeriesRef = SeriesRef {
        id: 5,
        key: String::new(),
        total: 3,
    };

    #[test]
    fn an_applied_series_passes_when_its_branch_built_and_tested() {
        let mut o = outcome("applied");
        o.new_tip = Some("c3".into());
        let builds = [
            target_build("master", BuildState::Ok),
            // Another branch's failure is not this series'.
            target_build("stable", BuildState::Failed),
        ];
        let tests = [
            test_result(TestState::Passed),
            test_result(TestState::Skipped),
        ];
        let case = series_case(
            HandledSeries::Apply(&o),
            Some(&STORED),
            &builds,
            &tests,
            "https://ci.example.org",
        );
        assert_eq!(case.outcome, Outcome::Passed);
        assert_eq!(case.classname, "series.hello.master");
        assert_eq!(case.name, "t v1 (3 patches)");
        assert_eq!(
            case.output.as_deref(),
            Some("status page: https://ci.example.org/ui/series/5\nseries: k\nbranch tip: c3")
        );
    }

    #[test]
    fn an_applied_series_fails_with_its_branch_build_or_test() {
        let o = outcome("applied");
        let builds = [target_build("master", BuildState::Failed)];
        let case = series_case(HandledSeries::Apply(&o), Some(&STORED), &builds, &[], "");
        let Outcome::Failed { message, details } = &case.outcome else {
            panic!("{case:?}")
        };
        assert_eq!(
            message,
            "applied, but the build of hello/master for el9 failed"
        );
        assert!(
            details.contains("error: line 3") && details.contains("log: /l/el9.log"),
            "{details}"
        );
        // Relative without a public URL.
        assert!(
            case.output
                .unwrap()
                .starts_with("status page: /ui/series/5\n")
        );

        let builds = [target_build("master", BuildState::Ok)];
        let tests = [test_result(TestState::Timeout)];
        let case = series_case(HandledSeries::Apply(&o), None, &builds, &tests, "");
        let Outcome::Failed { message, details } = &case.outcome else {
            panic!("{case:?}")
        };
        assert_eq!(
            message,
            "applied and built, but test smoke on hello/master for el9: exit status 1"
        );
        assert!(details.ends_with("line 1\nboom"), "{details}");
        // Not stored any more: no link, the count from the commits.
        assert_eq!(case.output.as_deref(), Some("series: k"));
        assert_eq!(case.name, "t v1 (3 patches)");
    }

    #[test]
    fn a_series_that_did_not_apply_fails_with_patch_file_and_hunk() {
        let mut o = outcome("failed");
        o.commits.clear();
        o.failed_patch = Some("/a/0002.patch".into());
        o.error = Some(PatchFailure {
            path: Some("hello.c".into()),
            hunk: Some("@@ -1,3 +1,3 @@".into()),
            ..PatchFailure::general("hunk 1 does not apply")
        });
        let case = series_case(HandledSeries::Apply(&o), Some(&STORED), &[], &[], "");
        assert_eq!(
            case.outcome,
            Outcome::Failed {
                message: "hunk 1 does not apply".into(),
                details: "hunk 1 does not apply\nfile: hello.c\nhunk: @@ -1,3 +1,3 @@\npatch: /a/0002.patch"
                    .into()
            }
        );
    }

    #[test]
    fn held_superseded_expired_and_waiting_series_are_skipped_with_why() {
        let skipped = |case: Case| match case.outcome {
            Outcome::Skipped { message } => message,
            other => panic!("{other:?}"),
        };
        let held = line("h", "incomplete", "hello");
        let case = series_case(HandledSeries::Collect(&held), None, &[], &[], "");
        assert_eq!(case.name, "held one v2 (3 patches)");
        assert_eq!(
            skipped(case),
            "held: received 1 of 3 patches; missing: 2, 3"
        );
        let old = line("o", "superseded", "hello");
        assert!(
            skipped(series_case(
                HandledSeries::Collect(&old),
                None,
                &[],
                &[],
                ""
            ))
            .starts_with("superseded by a newer version")
        );
        let expired = line("e", "expired", "hello");
        assert_eq!(
            skipped(series_case(
                HandledSeries::Collect(&expired),
                None,
                &[],
                &[],
                ""
            )),
            "expired: incomplete past the deadline; missing: 2, 3"
        );
        let mut waiting = outcome("complete");
        waiting.waiting_for = Some("base#v1".into());
        assert!(
            skipped(series_case(
                HandledSeries::Apply(&waiting),
                None,
                &[],
                &[],
                ""
            ))
            .starts_with("waits for series base#v1")
        );
    }

    #[test]
    fn handled_series_are_apply_outcomes_then_pending_lines_of_the_run_repos() {
        let apply = ApplySummary {
            series: vec![outcome("applied")],
            ..ApplySummary::default()
        };
        let collect = CollectSummary {
            series: vec![
                // Apply's already.
                line("k", "incomplete", "hello"),
                line("h", "incomplete", "hello"),
                line("x", "incomplete", "other"),
                line("c", "complete", "hello"),
                line("o", "superseded", "hello"),
            ],
            ..CollectSummary::default()
        };
        let keys = |repos: &[String]| {
            handled_series(Some(&apply), Some(&collect), repos)
                .iter()
                .map(|s| s.key().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&[]), ["k", "h", "x", "o"]);
        assert_eq!(keys(&["hello".to_owned()]), ["k", "h", "o"]);
        assert!(handled_series(None, None, &[]).is_empty());
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
        let xml = crate::junit::render(&[
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
