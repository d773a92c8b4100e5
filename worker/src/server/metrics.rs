//! `/metrics` in the Prometheus text format, computed from the state
//! database at each scrape: counts survive a restart and there is no
//! second bookkeeping that could drift from the store.

use crate::stage::Stage;
use crate::store::{self, Counts, Store};
use std::fmt::Write;

/// One gauge with one label, from `(label value, count)` rows.
fn gauge_by_label(
    out: &mut String,
    (name, help, label_name): (&str, &str, &str),
    rows: &[(String, i64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} {n}", label(value));
    }
}

/// The metrics text of the database behind `store`; `jobs_running` is the
/// number of stage jobs this process is running.
pub fn render(store: &Store, jobs_running: usize) -> Result<String, store::Error> {
    Ok(render_counts(&store.counts()?, jobs_running))
}

/// The metrics text of `counts`.
fn render_counts(counts: &Counts, jobs_running: usize) -> String {
    let mut out = String::new();
    gauge_by_label(
        &mut out,
        ("patchline_runs", "Runs by state.", "state"),
        &counts.runs,
    );

    let _ = writeln!(
        out,
        "# HELP patchline_stages Stage executions by stage and state (latest per run)."
    );
    let _ = writeln!(out, "# TYPE patchline_stages gauge");
    for (stage, state, n) in &counts.stages {
        let _ = writeln!(
            out,
            "patchline_stages{{stage=\"{}\",state=\"{}\"}} {n}",
            label(stage),
            label(state)
        );
    }

    let _ = writeln!(
        out,
        "# HELP patchline_stage_failures Stages that ended failed, by stage."
    );
    let _ = writeln!(out, "# TYPE patchline_stage_failures gauge");
    for stage in Stage::ALL {
        let n: i64 = counts
            .stages
            .iter()
            .filter(|(s, st, _)| s == stage.as_str() && st == "failed")
            .map(|(_, _, n)| n)
            .sum();
        let _ = writeln!(out, "patchline_stage_failures{{stage=\"{stage}\"}} {n}");
    }

    let _ = writeln!(
        out,
        "# HELP patchline_stage_duration_seconds Duration of finished stages."
    );
    let _ = writeln!(out, "# TYPE patchline_stage_duration_seconds summary");
    for d in &counts.durations {
        let stage = label(&d.stage);
        let _ = writeln!(
            out,
            "patchline_stage_duration_seconds_sum{{stage=\"{stage}\"}} {}",
            d.seconds
        );
        let _ = writeln!(
            out,
            "patchline_stage_duration_seconds_count{{stage=\"{stage}\"}} {}",
            d.count
        );
    }

    gauge_by_label(
        &mut out,
        (
            "patchline_patches",
            "Patches of series, by series state.",
            "series_state",
        ),
        &counts.patches,
    );
    gauge_by_label(
        &mut out,
        ("patchline_builds", "Target builds by state.", "state"),
        &counts.builds,
    );

    let _ = writeln!(
        out,
        "# HELP patchline_jobs_running Stage jobs running in this worker."
    );
    let _ = writeln!(out, "# TYPE patchline_jobs_running gauge");
    let _ = writeln!(out, "patchline_jobs_running {jobs_running}");
    out
}

/// A label value: the characters the text format needs escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StageDuration;

    #[test]
    fn counts_render_as_gauges_with_escaped_labels() {
        let counts = Counts {
            runs: vec![("ok".into(), 2)],
            stages: vec![
                ("apply".into(), "failed".into(), 1),
                ("apply".into(), "ok".into(), 3),
            ],
            durations: vec![StageDuration {
                stage: "apply".into(),
                count: 4,
                seconds: 9,
            }],
            patches: vec![("a\"b".into(), 5)],
            builds: vec![],
        };
        let text = render_counts(&counts, 1);
        for line in [
            "# TYPE patchline_runs gauge\npatchline_runs{state=\"ok\"} 2\n",
            "patchline_stages{stage=\"apply\",state=\"ok\"} 3\n",
            "patchline_stage_failures{stage=\"apply\"} 1\n",
            "patchline_stage_failures{stage=\"build\"} 0\n",
            "patchline_stage_duration_seconds_sum{stage=\"apply\"} 9\n\
             patchline_stage_duration_seconds_count{stage=\"apply\"} 4\n",
            "patchline_patches{series_state=\"a\\\"b\"} 5\n",
            "# TYPE patchline_builds gauge\n# HELP patchline_jobs_running",
            "patchline_jobs_running 1\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
