//! The schema, as numbered migrations: entry `i` takes the schema from
//! version `i` to `i + 1` (`PRAGMA user_version`).

/// Schema migrations; entry `i` takes the schema from version `i` to `i+1`.
pub(super) const MIGRATIONS: &[&str] = &[
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
    r#"
-- The state machine's records (crate::stage). A run keeps what it was
-- created with: the stage it begins at, its options (these were the HTTP
-- worker's own table `server_runs`, created outside the migrations; folded
-- in here, so every run has them and the CLI and the worker read the same
-- row) and whether it was made through the worker. A stage records whether
-- it ran to its end (a failed stage that did lets the next one start) and
-- the process that runs it (a stage whose process is gone is interrupted).
ALTER TABLE runs ADD COLUMN first_stage TEXT NOT NULL DEFAULT 'collect';
ALTER TABLE runs ADD COLUMN repos TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN dry_run INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN via_api INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS server_runs (
    run_id  INTEGER PRIMARY KEY REFERENCES runs(id),
    repos   TEXT NOT NULL,
    dry_run INTEGER NOT NULL DEFAULT 0
);
UPDATE runs SET via_api = 1,
    repos = (SELECT repos FROM server_runs WHERE server_runs.run_id = runs.id),
    dry_run = (SELECT dry_run FROM server_runs WHERE server_runs.run_id = runs.id)
 WHERE id IN (SELECT run_id FROM server_runs);
DROP TABLE server_runs;
ALTER TABLE stages ADD COLUMN completed INTEGER NOT NULL DEFAULT 0;
UPDATE stages SET completed = 1 WHERE state IN ('ok', 'skipped');
ALTER TABLE stages ADD COLUMN pid INTEGER;
"#,
    r#"
-- Intake (issue 13): `fingerprint` is what a mail says (subject, sender,
-- date, body up to the end of its patch; see mail::parse::content_fingerprint):
-- two copies of one Message-ID with the same fingerprint are duplicates,
-- whatever their transport headers. `oversize` is the size of a mail stored
-- unparsed because it was over intake.max_mail_size (its raw file is
-- archived); a later collect with a larger limit parses it from the archive.
ALTER TABLE mails ADD COLUMN fingerprint TEXT;
ALTER TABLE mails ADD COLUMN oversize INTEGER;
"#,
    r#"
-- Trailers from review replies (issue 14): what the commit of each patch
-- got (`added`: from a reply in its thread, or the repository's `link` and
-- `sign_off`), and what replies brought after the series was applied
-- (`late`: listed in the report of the run that found them, never added —
-- the branch is not rewritten). `reply_mail_id` is the reply's mail (NULL
-- for the configured ones). `series.trailers_upto` is the highest mail id
-- the series' replies were read up to: a reply above it is late; NULL for a
-- series applied without trailers.
CREATE TABLE patch_trailers (
    id            INTEGER PRIMARY KEY,
    series_id     INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    trailer       TEXT NOT NULL,
    source        TEXT NOT NULL,
    reply_mail_id INTEGER,
    state         TEXT NOT NULL,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (series_id, idx, trailer, state)
);
CREATE INDEX patch_trailers_run ON patch_trailers(run_id, state);
ALTER TABLE series ADD COLUMN trailers_upto INTEGER;
"#,
    r#"
-- Pull requests (issue 14): what the apply stage made of each kept
-- `[GIT PULL]`/`[PULL]` request mail: `landed` on its branch or `refused`
-- (both final), with the outcome as the stage describes it. `new_tip` is
-- where a landed request moved its branch (NULL when it was there
-- already), for the build stage.
CREATE TABLE pulls (
    mail_id     INTEGER PRIMARY KEY REFERENCES mails(id),
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    state       TEXT NOT NULL,
    repo        TEXT,
    branch      TEXT,
    new_tip     TEXT,
    result      TEXT NOT NULL,
    finished_at INTEGER NOT NULL
);
CREATE INDEX pulls_run ON pulls(run_id);
"#,
];
