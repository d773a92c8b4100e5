//! `/metrics` in the Prometheus text format, computed from the state
//! database at each scrape: counts survive a restart and there is no
//! second bookkeeping that could drift from the store.

use crate::stage::Stage;
use crate::store::{self, Store};
use std::fmt::Write;

/// One gauge with one label: `(name, help, label)` and a query giving
/// `(label value, count)` rows.
fn gauge_by_state(
    store: &Store,
    out: &mut String,
    (name, help, label_name): (&str, &str, &str),
    sql: &str,
) -> Result<(), store::Error> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let mut stmt = store.conn().prepare(sql).map_err(|e| store.err(e))?;
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|r| r.collect())
        .map_err(|e| store.err(e))?;
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} {n}", label(&value));
    }
    Ok(())
}

/// The metrics text of the database behind `store`; `jobs_running` is the
/// number of stage jobs this process is running.
pub fn render(store: &Store, jobs_running: usize) -> Result<String, store::Error> {
    let conn = store.conn();
    let mut out = String::new();
    let q = |e| store.err(e);

    gauge_by_state(
        store,
        &mut out,
        ("patchline_runs", "Runs by state.", "state"),
        "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state",
    )?;

    let _ = writeln!(
        out,
        "# HELP patchline_stages Stage executions by stage and state (latest per run)."
    );
    let _ = writeln!(out, "# TYPE patchline_stages gauge");
    let mut stmt = conn
        .prepare(
            "SELECT stage, state, COUNT(*) FROM stages GROUP BY stage, state ORDER BY stage, state",
        )
        .map_err(q)?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|r| r.collect())
        .map_err(q)?;
    for (stage, state, n) in &rows {
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
        let n: i64 = rows
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
    let mut stmt = conn
        .prepare(
            "SELECT stage, COUNT(*), COALESCE(SUM(finished_at - started_at), 0) FROM stages
             WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY stage ORDER BY stage",
        )
        .map_err(q)?;
    let rows: Vec<(String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|r| r.collect())
        .map_err(q)?;
    for (stage, count, sum) in rows {
        let stage = label(&stage);
        let _ = writeln!(
            out,
            "patchline_stage_duration_seconds_sum{{stage=\"{stage}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "patchline_stage_duration_seconds_count{{stage=\"{stage}\"}} {count}"
        );
    }

    gauge_by_state(
        store,
        &mut out,
        (
            "patchline_patches",
            "Patches of series, by series state.",
            "series_state",
        ),
        "SELECT s.state, COUNT(*) FROM patches p JOIN series s ON s.id = p.series_id GROUP BY s.state ORDER BY s.state",
    )?;
    gauge_by_state(
        store,
        &mut out,
        ("patchline_builds", "Target builds by state.", "state"),
        "SELECT state, COUNT(*) FROM builds GROUP BY state ORDER BY state",
    )?;

    let _ = writeln!(
        out,
        "# HELP patchline_jobs_running Stage jobs running in this worker."
    );
    let _ = writeln!(out, "# TYPE patchline_jobs_running gauge");
    let _ = writeln!(out, "patchline_jobs_running {jobs_running}");
    Ok(out)
}

/// A label value: the characters the text format needs escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
