//! The state database (SQLite, WAL, foreign keys on): runs, stages, source
//! cursors, mails, series, patches, builds, the outbox and events.
//!
//! It owns every SQL statement of patchline: typed methods per table family
//! (`runs`, `stages`, `mails`, `series`, `builds`, `outbox`, and read-only
//! `reports`, `views` and `series_views`); no connection, transaction or rusqlite error
//! leaves this module.
//!
//! Every step that changes state does so in one transaction, so a process
//! killed at any point leaves either the old or the new state, never a mix.
//! Migrations are versioned in code (`PRAGMA user_version`); a database from
//! a newer patchline is refused rather than guessed at.

mod builds;
mod mails;
mod migrations;
mod outbox;
mod pulls;
mod reports;
mod runs;
mod series;
mod series_views;
mod stages;
mod views;

pub use builds::BuildKey;
pub use mails::{
    ConflictingCopy, IntakeCounts, ItemKind, MailBatch, NewMail, OpenPatchMail, OversizedMail,
    UnparsableMail,
};
pub use outbox::{NewReport, OutboxState, QueuedReport, StoredReport};
pub use pulls::{PendingPull, PullState};
pub use reports::{ReplyMail, ThreadMail, VersionFacts, WatchedMail};
pub use runs::{NewRun, RunOptions, RunRow, RunState, Trigger};
pub use series::{
    ApplyRecord, FiledPatch, KnownSeries, PatchPaths, PatchTrailer, RecordedTrailer,
    SeriesOverview, SeriesRecord, SeriesState, SeriesToApply, SeriesUpdate, TrailerSource,
    TrailerState,
};
pub use series_views::{SeriesFilter, SeriesPatch, SeriesRow, ThreadReply};
pub use stages::{Stage, StageEnd, StageRow, StageState};
pub use views::{AppliedSeries, Counts, PatchRow, SeriesRef, StageDuration};

use migrations::MIGRATIONS;
use rusqlite::{Connection, Transaction};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this patchline ({known}); upgrade patchline"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the directory of state database {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run {0} does not exist")]
    NoSuchRun(i64),
    #[error("state database {path}: cannot store mail <{message_id}>: {source}")]
    Mail {
        path: PathBuf,
        message_id: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: series {key}: {source}")]
    Series {
        path: PathBuf,
        key: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: cannot encode the {what}: {source}")]
    Encode {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
        };
        store.init()?;
        Ok(store)
    }

    /// An in-memory database, for tests of the pure-ish parts.
    pub fn open_in_memory() -> Result<Self, Error> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| Error::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut store = Store { conn, path };
        store.init()?;
        Ok(store)
    }

    /// A second, read-only connection to the same database, for reading
    /// while another thread writes through this one.
    pub fn open_reader(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|source| Error::Sqlite {
                path: path.to_owned(),
                source,
            })?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a rusqlite error with the database path.
    /// The rusqlite error with the database path; only the store's own
    /// modules see rusqlite.
    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn init(&mut self) -> Result<(), Error> {
        let path = self.path.clone();
        let wrap = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        // WAL lets the HTTP worker read while a stage writes; NORMAL
        // synchronous is durable in WAL mode except for the last commits
        // before a power loss, and the archive (fsynced) covers those.
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
            )
            .map_err(wrap)?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(Error::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(wrap)?;
            tx.execute_batch(sql).map_err(wrap)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(wrap)?;
            tx.commit().map_err(wrap)?;
        }
        Ok(())
    }

    /// For the store's own tests, which look at the schema directly.
    #[cfg(test)]
    fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A transaction that takes the write lock at once (a check and the
    /// write it allows cannot be split by another writer), with the
    /// function that wraps its errors.
    fn immediate(
        &mut self,
    ) -> Result<(Transaction<'_>, impl Fn(rusqlite::Error) -> Error + use<>), Error> {
        let path = self.path.clone();
        let wrap = move |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&wrap)?;
        Ok((tx, wrap))
    }

    fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let path = self.path.clone();
        self.conn
            .transaction()
            .map_err(|source| Error::Sqlite { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run(trigger: Trigger, cause: Option<&str>) -> NewRun<'_> {
        NewRun {
            trigger,
            cause,
            started_by: None,
            jenkins_url: None,
            first_stage: Stage::Collect,
            options: RunOptions::default(),
            via_api: false,
        }
    }

    fn end<'a>(
        state: StageState,
        summary: &'a serde_json::Value,
        error: Option<&'a str>,
    ) -> StageEnd<'a> {
        StageEnd {
            state,
            completed: state != StageState::Failed,
            summary,
            error,
        }
    }

    #[test]
    fn migrates_once_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        {
            let mut s = Store::open(&path).unwrap();
            let run = s
                .create_run(&new_run(Trigger::Manual, Some("test")))
                .unwrap();
            s.start_stage(run, Stage::Collect).unwrap();
        }
        // Reopening keeps data and does not re-run migrations.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.latest_run().unwrap().unwrap().trigger, Trigger::Manual);
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn the_workers_own_table_is_folded_into_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // A database of schema 4, as a worker of then left it: its table
        // made outside the migrations, a run of it with a stage running.
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 4;
                 CREATE TABLE server_runs (run_id INTEGER PRIMARY KEY REFERENCES runs(id), repos TEXT NOT NULL, dry_run INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO runs (id, trigger, created_at) VALUES (1, 'api', 0), (2, 'manual', 0);
                 INSERT INTO server_runs VALUES (1, '[\"hello\"]', 1);
                 INSERT INTO stages (run_id, stage, state) VALUES (1, 'collect', 'ok'), (1, 'apply', 'failed');",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let api = s.run(1).unwrap();
        assert!(api.via_api);
        assert_eq!(api.options.repos, ["hello"]);
        assert!(api.options.dry_run);
        assert_eq!(api.first_stage, Stage::Collect);
        let cli = s.run(2).unwrap();
        assert!(!cli.via_api && !cli.options.dry_run && cli.options.repos.is_empty());
        let stages = s.stages(1).unwrap();
        assert!(stages[0].completed, "an ok stage ran to its end");
        assert!(!stages[1].completed, "an old failure is not known to have");
        let tables: i64 = s
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'server_runs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn foreign_keys_and_wal_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let fk: i64 = s
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let mode: String = s
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let bad = s.conn().execute(
            "INSERT INTO stages (run_id, stage, state) VALUES (424242, 'collect', 'ok')",
            [],
        );
        assert!(bad.is_err(), "a stage of a missing run must be refused");
    }

    #[test]
    fn stage_lifecycle_sorted_in_pipeline_order() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&new_run(Trigger::Timer, None)).unwrap();
        s.start_stage(run, Stage::Apply).unwrap();
        s.start_stage(run, Stage::Collect).unwrap();
        s.finish_stage(
            run,
            Stage::Collect,
            &end(StageState::Ok, &serde_json::json!({"mails": 3}), None),
        )
        .unwrap();
        s.finish_stage(
            run,
            Stage::Apply,
            &end(StageState::Failed, &serde_json::json!({}), Some("boom")),
        )
        .unwrap();
        let stages = s.stages(run).unwrap();
        assert_eq!(stages[0].stage, Stage::Collect);
        assert_eq!(stages[0].state, StageState::Ok);
        assert_eq!(stages[0].summary.as_ref().unwrap()["mails"], 3);
        assert_eq!(stages[1].state, StageState::Failed);
        assert_eq!(stages[1].error.as_deref(), Some("boom"));
        assert_eq!(s.run(run).unwrap().state, RunState::Failed);
        assert!(matches!(s.run(999), Err(Error::NoSuchRun(999))));
    }

    #[test]
    fn admission_is_checked_and_recorded_in_one_step() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&new_run(Trigger::Manual, None)).unwrap();
        let refused = s
            .admit_stage(run, Stage::Apply, StageState::Queued, |_, _| Err("no"))
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert!(
            s.stages(run).unwrap().is_empty(),
            "a refusal writes nothing"
        );
        s.admit_stage(run, Stage::Collect, StageState::Queued, |row, stages| {
            assert_eq!(row.id, run);
            assert!(stages.is_empty());
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        let row = &s.stages(run).unwrap()[0];
        assert_eq!(row.state, StageState::Queued);
        assert_eq!(row.pid, Some(std::process::id()));
        assert_eq!(s.active_stages().unwrap().len(), 1);
        assert!(s.interrupt_stage(run, Stage::Collect, "gone").unwrap());
        assert!(!s.interrupt_stage(run, Stage::Collect, "gone").unwrap());
        assert_eq!(s.stages(run).unwrap()[0].state, StageState::Interrupted);
    }
}
