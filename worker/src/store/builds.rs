//! Builds: one row per run, repository, branch and target.
//!
//! The `result` column holds the whole build as its stage describes it
//! (JSON); the store encodes and decodes it but never looks inside, so it
//! knows nothing of the build stage's types. The `state` column repeats
//! the build's state for counting without decoding every row.

use super::{Error, Store, now};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which build a row is, and what the table indexes and counts of it.
#[derive(Debug, Clone, Copy)]
pub struct BuildKey<'a> {
    pub repo: &'a str,
    pub branch: &'a str,
    pub target: &'a str,
    pub commit: &'a str,
    /// The build's state as its stage names it (`ok`, `failed`, ...).
    pub state: &'a str,
}

impl Store {
    /// Records the build of `key.target` in `run` with its `result`,
    /// replacing what was recorded for that target in that run.
    pub fn record_build<T: Serialize>(
        &mut self,
        run: i64,
        key: &BuildKey<'_>,
        result: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(result).map_err(|source| Error::Encode {
            path: self.path.clone(),
            what: format!(
                "build of {}/{} for {} in run {run}",
                key.repo, key.branch, key.target
            ),
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO builds (run_id, repo, branch, target, commit_id, state, result, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (run_id, repo, branch, target) DO UPDATE SET commit_id = excluded.commit_id,
                    state = excluded.state, result = excluded.result, finished_at = excluded.finished_at",
                params![
                    run,
                    key.repo,
                    key.branch,
                    key.target,
                    key.commit,
                    key.state,
                    json,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The build recorded for `target` of `repo`/`branch` in `run`. A
    /// result that no longer decodes (written by another patchline) counts
    /// as not recorded: the target is built again.
    pub fn recorded_build<T: DeserializeOwned>(
        &self,
        run: i64,
        repo: &str,
        branch: &str,
        target: &str,
    ) -> Result<Option<T>, Error> {
        self.conn
            .query_row(
                "SELECT result FROM builds WHERE run_id = ?1 AND repo = ?2 AND branch = ?3 AND target = ?4",
                params![run, repo, branch, target],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|o| o.and_then(|json| serde_json::from_str(&json).ok()))
            .map_err(|e| self.err(e))
    }

    /// Every build recorded for `run`, in the order they were first
    /// recorded; results that no longer decode are left out.
    pub fn builds_of_run<T: DeserializeOwned>(&self, run: i64) -> Result<Vec<T>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT result FROM builds WHERE run_id = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows: Vec<String> = stmt
            .query_map([run], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Trigger};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Built {
        target: String,
        rpms: u32,
    }

    fn key<'a>(target: &'a str, state: &'a str) -> BuildKey<'a> {
        BuildKey {
            repo: "hello",
            branch: "master",
            target,
            commit: "abc",
            state,
        }
    }

    #[test]
    fn a_build_is_replaced_per_target_and_listed_in_order() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let el9 = |rpms| Built {
            target: "el9".into(),
            rpms,
        };
        s.record_build(run, &key("el9", "started"), &el9(0))
            .unwrap();
        s.record_build(
            run,
            &key("fc41", "ok"),
            &Built {
                target: "fc41".into(),
                rpms: 1,
            },
        )
        .unwrap();
        s.record_build(run, &key("el9", "ok"), &el9(2)).unwrap();
        let got: Option<Built> = s.recorded_build(run, "hello", "master", "el9").unwrap();
        assert_eq!(got, Some(el9(2)));
        let none: Option<Built> = s.recorded_build(run, "hello", "other", "el9").unwrap();
        assert_eq!(none, None);
        let all: Vec<Built> = s.builds_of_run(run).unwrap();
        let targets: Vec<&str> = all.iter().map(|b| b.target.as_str()).collect();
        assert_eq!(targets, ["el9", "fc41"]);
        assert!(s.builds_of_run::<Built>(run + 1).unwrap().is_empty());
    }

    #[test]
    fn a_result_that_does_not_decode_is_not_recorded() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        s.record_build(run, &key("el9", "ok"), &"not a build")
            .unwrap();
        let got: Option<Built> = s.recorded_build(run, "hello", "master", "el9").unwrap();
        assert_eq!(got, None);
        assert!(s.builds_of_run::<Built>(run).unwrap().is_empty());
    }
}
