//! Read-only views for the HTTP worker: counts for `/metrics`, the applied
//! series of a run and the series it names for `junit.xml`, and pages of
//! runs. Nothing here writes,
//! so all of it works on a reader from [`Store::open_reader`].

use super::{Error, Store};
use rusqlite::params;
use serde::de::DeserializeOwned;

/// One patch of a series as the apply suite needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRow {
    pub idx: u32,
    pub subject: String,
    pub archive_path: String,
}

/// A series the apply stage of a run handled, with its recorded outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedSeries<T> {
    pub total: u32,
    pub outcome: T,
    /// Its patches by index, without the cover letter.
    pub patches: Vec<PatchRow>,
}

/// A stored series as the series suite of `junit.xml` links and names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRef {
    pub id: i64,
    pub key: String,
    pub total: u32,
}

/// Finished stages of one name: how many and their summed duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDuration {
    pub stage: String,
    pub count: i64,
    pub seconds: i64,
}

/// What `/metrics` shows, counted over the whole database; every list is
/// sorted by its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// `(run state, runs)`.
    pub runs: Vec<(String, i64)>,
    /// `(stage, state, rows)`: one row per run and stage.
    pub stages: Vec<(String, String, i64)>,
    pub durations: Vec<StageDuration>,
    /// `(series state, patches)`.
    pub patches: Vec<(String, i64)>,
    /// `(build state, target builds)`.
    pub builds: Vec<(String, i64)>,
}

impl Store {
    /// Counts of runs, stages, patches and builds by state, for `/metrics`.
    pub fn counts(&self) -> Result<Counts, Error> {
        Ok(Counts {
            runs: self.count_by_label(
                "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state",
            )?,
            stages: self.rows(
                "SELECT stage, state, COUNT(*) FROM stages GROUP BY stage, state ORDER BY stage, state",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?,
            durations: self.rows(
                "SELECT stage, COUNT(*), COALESCE(SUM(finished_at - started_at), 0) FROM stages
                 WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY stage ORDER BY stage",
                |r| {
                    Ok(StageDuration {
                        stage: r.get(0)?,
                        count: r.get(1)?,
                        seconds: r.get(2)?,
                    })
                },
            )?,
            patches: self.count_by_label(
                "SELECT s.state, COUNT(*) FROM patches p JOIN series s ON s.id = p.series_id GROUP BY s.state ORDER BY s.state",
            )?,
            builds: self.count_by_label(
                "SELECT state, COUNT(*) FROM builds GROUP BY state ORDER BY state",
            )?,
        })
    }

    /// The series the apply stage of `run` recorded an outcome for, in the
    /// order they were first stored. An outcome that no longer decodes
    /// (written by another patchline) leaves its series out.
    pub fn applied_series<T: DeserializeOwned>(
        &self,
        run: i64,
    ) -> Result<Vec<AppliedSeries<T>>, Error> {
        let series: Vec<(i64, u32, String)> = self.rows_of(
            "SELECT id, total, apply_result FROM series WHERE applied_run = ?1 AND apply_result IS NOT NULL ORDER BY id",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut out = Vec::new();
        for (id, total, result) in series {
            let Ok(outcome) = serde_json::from_str(&result) else {
                continue;
            };
            let patches = self.rows_of(
                // The cover letter (index 0) is not a patch.
                "SELECT p.idx, m.subject, p.archive_path FROM patches p JOIN mails m ON m.id = p.mail_id
                 WHERE p.series_id = ?1 AND p.idx > 0 ORDER BY p.idx",
                params![id],
                |r| {
                    Ok(PatchRow {
                        idx: r.get(0)?,
                        subject: r.get(1)?,
                        archive_path: r.get(2)?,
                    })
                },
            )?;
            out.push(AppliedSeries {
                total,
                outcome,
                patches,
            });
        }
        Ok(out)
    }

    /// The stored series of these keys, in the order given; a key no
    /// series has any more is left out.
    pub fn series_refs(&self, keys: &[String]) -> Result<Vec<SeriesRef>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.extend(self.rows_of(
                "SELECT id, key, total FROM series WHERE key = ?1",
                [key],
                |r| {
                    Ok(SeriesRef {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        total: r.get(2)?,
                    })
                },
            )?);
        }
        Ok(out)
    }

    fn count_by_label(&self, sql: &str) -> Result<Vec<(String, i64)>, Error> {
        self.rows(sql, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    fn rows<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, Error> {
        self.rows_of(sql, [], row)
    }

    /// Every row of a cached statement; the HTTP worker runs the same
    /// few queries at every request.
    fn rows_of<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, Error> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_map(params, row)?.collect())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Stage, StageEnd, StageState, Trigger};

    #[test]
    fn counts_group_by_state_and_pages_go_newest_first() {
        let mut s = Store::open_in_memory().unwrap();
        let runs: Vec<i64> = (0..3)
            .map(|_| s.create_run(&NewRun::for_test(Trigger::Timer)).unwrap())
            .collect();
        s.start_stage(runs[0], Stage::Collect).unwrap();
        s.finish_stage(
            runs[0],
            Stage::Collect,
            &StageEnd {
                state: StageState::Failed,
                completed: false,
                summary: &serde_json::json!({}),
                error: Some("x"),
            },
        )
        .unwrap();
        s.start_stage(runs[1], Stage::Collect).unwrap();
        let counts = s.counts().unwrap();
        assert_eq!(
            counts.runs,
            [("failed".to_owned(), 1), ("running".to_owned(), 2)]
        );
        assert_eq!(
            counts.stages,
            [
                ("collect".to_owned(), "failed".to_owned(), 1),
                ("collect".to_owned(), "running".to_owned(), 1)
            ]
        );
        assert_eq!(counts.durations.len(), 1);
        assert_eq!(counts.durations[0].count, 1);
        assert!(counts.patches.is_empty() && counts.builds.is_empty());

        let ids =
            |rows: Vec<crate::store::RunRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(s.runs_before(i64::MAX, 2).unwrap()), [runs[2], runs[1]]);
        assert_eq!(ids(s.runs_before(runs[1], 5).unwrap()), [runs[0]]);
        assert!(
            s.applied_series::<serde_json::Value>(runs[0])
                .unwrap()
                .is_empty()
        );
        assert!(s.series_refs(&["nope".to_owned()]).unwrap().is_empty());
    }
}
