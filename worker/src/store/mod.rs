//! The state database (SQLite, WAL, foreign keys on): runs, stages, source
//! cursors, mails, series, patches and events.
//!
//! Every step that changes state does so in one transaction, so a process
//! killed at any point leaves either the old or the new state, never a mix.
//! Migrations are versioned in code (`PRAGMA user_version`); a database from
//! a newer patchline is refused rather than guessed at.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
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
}

/// Schema migrations; entry `i` takes the schema from version `i` to `i+1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    trigger     TEXT NOT NULL,
    cause       TEXT,
    started_by  TEXT,
    jenkins_url TEXT,
    state       TEXT NOT NULL DEFAULT 'running',
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE stages (
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    stage       TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    summary     TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE sources (
    key        TEXT PRIMARY KEY,
    cursor     TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE mails (
    id           INTEGER PRIMARY KEY,
    message_id   TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    item         TEXT NOT NULL,
    origin       TEXT NOT NULL,
    run_id       INTEGER REFERENCES runs(id),
    received_at  INTEGER NOT NULL,
    raw_path     TEXT NOT NULL,
    subject      TEXT NOT NULL DEFAULT '',
    from_name    TEXT,
    from_email   TEXT,
    date         INTEGER,
    in_reply_to  TEXT,
    refs         TEXT NOT NULL DEFAULT '[]',
    list_id      TEXT,
    is_patch     INTEGER NOT NULL DEFAULT 0,
    is_cover     INTEGER NOT NULL DEFAULT 0,
    fields       TEXT,
    reason       TEXT,
    patch_hash   TEXT,
    warnings     TEXT NOT NULL DEFAULT '[]',
    error        TEXT
);
CREATE INDEX mails_run ON mails(run_id);
CREATE INDEX mails_patch ON mails(is_patch);
-- Every item a source delivered, kept or not: the de-duplication key of a
-- source, and the proof that nothing delivered was dropped.
CREATE TABLE source_items (
    source_key TEXT NOT NULL,
    item       TEXT NOT NULL,
    mail_id    INTEGER NOT NULL REFERENCES mails(id),
    run_id     INTEGER REFERENCES runs(id),
    -- 'new', 'duplicate' (same Message-ID, same bytes),
    -- 'conflict' (same Message-ID, different bytes)
    kind       TEXT NOT NULL,
    raw_path   TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source_key, item)
);
CREATE INDEX source_items_run ON source_items(run_id);
CREATE TABLE series (
    id             INTEGER PRIMARY KEY,
    key            TEXT NOT NULL UNIQUE,
    version        INTEGER NOT NULL,
    total          INTEGER NOT NULL,
    title          TEXT NOT NULL,
    author         TEXT NOT NULL,
    branch         TEXT,
    repo           TEXT,
    cover_mail_id  INTEGER REFERENCES mails(id),
    state          TEXT NOT NULL,
    missing        TEXT NOT NULL DEFAULT '[]',
    superseded_by  TEXT,
    archive_dir    TEXT NOT NULL,
    first_received INTEGER NOT NULL,
    created_run    INTEGER REFERENCES runs(id),
    updated_run    INTEGER REFERENCES runs(id)
);
CREATE TABLE patches (
    series_id    INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    mail_id      INTEGER NOT NULL REFERENCES mails(id),
    archive_path TEXT NOT NULL,
    PRIMARY KEY (series_id, idx)
);
CREATE INDEX patches_mail ON patches(mail_id);
CREATE TABLE duplicates (
    mail_id INTEGER PRIMARY KEY REFERENCES mails(id),
    kept_id INTEGER NOT NULL REFERENCES mails(id)
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER REFERENCES runs(id),
    at      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    stage   TEXT,
    message TEXT NOT NULL
);
"#,
    r#"
-- The apply stage: the planned branch move (written before the branch
-- moves, so a resumed run knows whether it happened) and the outcome.
ALTER TABLE series ADD COLUMN apply_old_tip TEXT;
ALTER TABLE series ADD COLUMN apply_new_tip TEXT;
ALTER TABLE series ADD COLUMN apply_result TEXT;
ALTER TABLE series ADD COLUMN applied_run INTEGER REFERENCES runs(id);
"#,
    r#"
-- The build stage: one row per run, repository, branch and target.
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    repo        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    target      TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    result      TEXT NOT NULL,
    finished_at INTEGER NOT NULL,
    UNIQUE (run_id, repo, branch, target)
);
"#,
    r#"
-- The report stage: every composed report, kept until it is sent (a failed
-- send is retried by the next report stage, never dropped).
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    key         TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    raw         BLOB NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER,
    UNIQUE (run_id, key)
);
"#,
];

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub cause: Option<String>,
    pub started_by: Option<String>,
    pub jenkins_url: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageRow {
    pub stage: String,
    pub state: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
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

    pub fn create_run(
        &mut self,
        trigger: &str,
        cause: Option<&str>,
        started_by: Option<&str>,
        jenkins_url: Option<&str>,
    ) -> Result<i64, Error> {
        self.conn
            .execute(
                "INSERT INTO runs (trigger, cause, started_by, jenkins_url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![trigger, cause, started_by, jenkins_url, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn run(&self, id: i64) -> Result<RunRow, Error> {
        self.conn
            .query_row(
                "SELECT id, trigger, cause, started_by, jenkins_url, state, created_at, finished_at FROM runs WHERE id = ?1",
                [id],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(Error::NoSuchRun(id))
    }

    pub fn latest_run(&self) -> Result<Option<RunRow>, Error> {
        self.conn
            .query_row(
                "SELECT id, trigger, cause, started_by, jenkins_url, state, created_at, finished_at FROM runs ORDER BY id DESC LIMIT 1",
                [],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn stages(&self, run: i64) -> Result<Vec<StageRow>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT stage, state, started_at, finished_at, summary, error FROM stages WHERE run_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows: Vec<StageRow> = stmt
            .query_map([run], |r| {
                let summary: Option<String> = r.get(4)?;
                Ok(StageRow {
                    stage: r.get(0)?,
                    state: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                    error: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        rows.sort_by_key(|s| crate::stage::Stage::parse(&s.stage).map(|s| s as u8));
        Ok(rows)
    }

    pub fn start_stage(&mut self, run: i64, stage: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO stages (run_id, stage, state, started_at) VALUES (?1, ?2, 'running', ?3)
                 ON CONFLICT (run_id, stage) DO UPDATE SET state = 'running', started_at = excluded.started_at, finished_at = NULL, error = NULL",
                params![run, stage, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn finish_stage(
        &mut self,
        run: i64,
        stage: &str,
        ok: bool,
        summary: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), Error> {
        let tx = self.transaction()?;
        let res = (|| {
            tx.execute(
                "UPDATE stages SET state = ?3, finished_at = ?4, summary = ?5, error = ?6 WHERE run_id = ?1 AND stage = ?2",
                params![
                    run,
                    stage,
                    if ok { "ok" } else { "failed" },
                    now(),
                    summary.to_string(),
                    error
                ],
            )?;
            if !ok {
                tx.execute("UPDATE runs SET state = 'failed' WHERE id = ?1", [run])?;
            }
            tx.commit()
        })();
        res.map_err(|e| self.err(e))
    }

    pub fn event(
        &self,
        run: Option<i64>,
        stage: Option<&str>,
        level: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO events (run_id, at, level, stage, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, now(), level, stage, message],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn source_cursor(&self, key: &str) -> Result<Option<String>, Error> {
        self.conn
            .query_row("SELECT cursor FROM sources WHERE key = ?1", [key], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    pub fn set_source_cursor(&mut self, key: &str, cursor: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO sources (key, cursor, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                params![key, cursor, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a source's position (after its mailbox was replaced). Items
    /// already stored stay de-duplicated by Message-ID.
    pub fn reset_source(&mut self, key: &str) -> Result<bool, Error> {
        let n = self
            .conn
            .execute("DELETE FROM sources WHERE key = ?1", [key])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn item_seen(&self, source_key: &str, item: &str) -> Result<bool, Error> {
        self.conn
            .query_row(
                "SELECT 1 FROM source_items WHERE source_key = ?1 AND item = ?2",
                [source_key, item],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        cause: r.get(2)?,
        started_by: r.get(3)?,
        jenkins_url: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        finished_at: r.get(7)?,
    })
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
