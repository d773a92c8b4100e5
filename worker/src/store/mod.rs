//! The state database (SQLite, WAL, foreign keys on): runs, stages, source
//! cursors, mails, series, patches, builds, the outbox and events.
//!
//! Every step that changes state does so in one transaction, so a process
//! killed at any point leaves either the old or the new state, never a mix.
//! Migrations are versioned in code (`PRAGMA user_version`); a database from
//! a newer patchline is refused rather than guessed at.

mod builds;
mod mails;
mod migrations;
mod outbox;
mod reports;
mod runs;
mod series;
mod stages;
mod views;

pub use builds::BuildKey;
pub use outbox::{NewReport, QueuedReport, StoredReport};
pub use reports::ThreadMail;
pub use runs::RunRow;
pub use stages::StageRow;
pub use views::{AppliedSeries, Counts, PatchRow, StageDuration};

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
    pub fn err(&self, source: rusqlite::Error) -> Error {
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

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let path = self.path.clone();
        self.conn
            .transaction()
            .map_err(|source| Error::Sqlite { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        {
            let mut s = Store::open(&path).unwrap();
            let run = s.create_run("manual", Some("test"), None, None).unwrap();
            s.start_stage(run, "collect").unwrap();
        }
        // Reopening keeps data and does not re-run migrations.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.latest_run().unwrap().unwrap().trigger, "manual");
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
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
        let run = s.create_run("timer", None, None, None).unwrap();
        s.start_stage(run, "apply").unwrap();
        s.start_stage(run, "collect").unwrap();
        s.finish_stage(run, "collect", true, &serde_json::json!({"mails": 3}), None)
            .unwrap();
        s.finish_stage(run, "apply", false, &serde_json::json!({}), Some("boom"))
            .unwrap();
        let stages = s.stages(run).unwrap();
        assert_eq!(stages[0].stage, "collect");
        assert_eq!(stages[0].state, "ok");
        assert_eq!(stages[0].summary.as_ref().unwrap()["mails"], 3);
        assert_eq!(stages[1].state, "failed");
        assert_eq!(stages[1].error.as_deref(), Some("boom"));
        assert_eq!(s.run(run).unwrap().state, "failed");
        assert!(matches!(s.run(999), Err(Error::NoSuchRun(999))));
    }
}
