//! Applying patch mails to a branch with gitoxide, as `git am` would:
//! blobs and trees are written to the object database, one commit per
//! mail, and the branch moves once, by compare-and-swap, after the whole
//! series applied. The working tree is never touched (bare repositories
//! work), and a series that fails leaves the branch where it was.

use crate::patch::hunks::{ApplyOptions, HunkFailure, apply_hunks, apply_hunks_lines};
use crate::patch::mailinfo::{MailInfoOptions, append_trailers, mailinfo};
use crate::patch::pack;
use crate::patch::parse::{BinaryData, FilePatch, Status, apply_delta, parse};
use gix::ObjectId;
use gix::bstr::BString;
use gix::objs::tree::EntryKind;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};
use serde::Serialize;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What gitoxide (or the object writer) returned: its error types differ
/// from call to call, so they are kept boxed, not flattened into text.
pub type GitError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open repository {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("repository {path}: branch {branch:?} does not exist")]
    NoBranch { path: PathBuf, branch: String },
    #[error("repository {path}: --branch {branch:?} is not a valid branch name: {source}")]
    BadBranchName {
        path: PathBuf,
        branch: String,
        #[source]
        source: gix::validate::reference::name::Error,
    },
    /// git's `check-ref-format --branch` refuses these too; a leading `-`
    /// would read as an option to every git command run on the branch.
    #[error(
        "repository {path}: --branch {branch:?} is not a valid branch name: it starts with '-'"
    )]
    BranchStartsWithDash { path: PathBuf, branch: String },
    #[error("repository {path}: {id:?} is not an object id: {source}")]
    BadObjectId {
        path: PathBuf,
        id: String,
        #[source]
        source: gix::Error,
    },
    /// A gitoxide call (or writing the new objects) failed; `what` names
    /// the operation, e.g. "write the commit".
    #[error("repository {path}: cannot {what}: {source}")]
    Git {
        path: PathBuf,
        what: Cow<'static, str>,
        #[source]
        source: GitError,
    },
    #[error("repository {path}: cannot read the committer identity: {source}")]
    Committer {
        path: PathBuf,
        #[source]
        source: GitError,
    },
    #[error(
        "repository {path}: branch {branch} moved from {expected} while the series was applied; nothing was changed"
    )]
    BranchMoved {
        path: PathBuf,
        branch: String,
        expected: String,
    },
    /// A mail that could not be read (the reader's message names it).
    #[error("{0}")]
    Input(String),
    #[error(
        "no committer identity: set GIT_COMMITTER_NAME and GIT_COMMITTER_EMAIL or user.name/user.email"
    )]
    NoCommitter,
}

/// Why one patch did not apply: what the report names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PatchFailure {
    /// The file the failure is about, when there is one.
    pub path: Option<String>,
    pub message: String,
    /// The hunk that did not match, for context-mismatch failures.
    pub hunk: Option<String>,
    pub expected: Vec<String>,
    pub found: Vec<String>,
}

impl PatchFailure {
    /// A failure that is not about one file (no mail author, no diff...).
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            path: None,
            message: message.into(),
            hunk: None,
            expected: Vec::new(),
            found: Vec::new(),
        }
    }

    fn file(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: Some(path.to_owned()),
            message: message.into(),
            hunk: None,
            expected: Vec::new(),
            found: Vec::new(),
        }
    }

    fn hunk(path: &str, failure: HunkFailure) -> Self {
        Self {
            path: Some(path.to_owned()),
            message: format!("patch failed: {path}: {failure}"),
            hunk: Some(failure.header),
            expected: failure.expected,
            found: failure.found,
        }
    }
}

/// One mail's result (`am --json` prints these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchResult {
    pub file: String,
    pub subject: String,
    pub ok: bool,
    pub commit: Option<String>,
    pub tree: Option<String>,
    pub error: Option<PatchFailure>,
    /// The trailers added to the mail's message (those it did not have).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<String>,
}

/// The series' result: the branch moved only when every patch applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesResult {
    pub branch: String,
    pub old_tip: String,
    pub new_tip: Option<String>,
    pub applied: usize,
    pub patches: Vec<PatchResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
    /// Seconds since the epoch and offset east of UTC in seconds.
    pub time: (i64, i32),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AmOptions {
    pub apply: ApplyOptions,
    pub mailinfo: MailInfoOptions,
    /// `--3way`: when a file's hunks do not apply and its `index` line
    /// names a preimage blob the repository has, merge instead.
    pub three_way: bool,
}

impl Error {
    fn git(path: &Path, what: impl Into<Cow<'static, str>>, source: impl Into<GitError>) -> Self {
        Error::Git {
            path: path.to_owned(),
            what: what.into(),
            source: source.into(),
        }
    }

    fn bad_id(path: &Path, id: &str, source: gix::Error) -> Self {
        Error::BadObjectId {
            path: path.to_owned(),
            id: id.to_owned(),
            source,
        }
    }
}

/// A failed gitoxide call deep in applying a patch, where the repository's
/// path is not at hand: [`GitFailure::at`] makes it an [`Error::Git`].
#[derive(Debug)]
struct GitFailure {
    what: &'static str,
    source: GitError,
}

impl GitFailure {
    fn new(what: &'static str, source: impl Into<GitError>) -> Self {
        Self {
            what,
            source: source.into(),
        }
    }

    fn at(self, path: &Path) -> Error {
        Error::git(path, self.what, self.source)
    }
}

/// The committer of the new commits: `GIT_COMMITTER_*` from the
/// environment, else the repository's configuration, at the current time.
pub fn committer_from_env_or_config(repo_path: &Path) -> Result<Identity, Error> {
    let now = gix::date::Time::now_local_or_utc();
    let time = (now.seconds, now.offset);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(name), Some(email)) = (env("GIT_COMMITTER_NAME"), env("GIT_COMMITTER_EMAIL")) {
        return Ok(Identity { name, email, time });
    }
    match open(repo_path)?.committer() {
        Some(Ok(sig)) => Ok(Identity {
            name: sig.name.to_string(),
            email: sig.email.to_string(),
            time,
        }),
        Some(Err(source)) => Err(Error::Committer {
            path: repo_path.to_owned(),
            source: source.into(),
        }),
        None => Err(Error::NoCommitter),
    }
}

pub(crate) fn open(path: &Path) -> Result<gix::Repository, Error> {
    gix::open(path).map_err(|e| Error::Open {
        path: path.to_owned(),
        source: e,
    })
}

/// One mail of a series: its label (file name, Message-ID) and raw bytes,
/// or why it could not be read. Mails are read as the series is applied
/// (on another thread), so a reader can hand them over lazily.
pub type MailInput = Result<(String, Vec<u8>), String>;

/// A mail of a series with what its commit message gets besides what the
/// mail says: trailers (`Token: value` lines) added to its trailer block
/// as `git interpret-trailers` adds them (see
/// [`append_trailers`](crate::patch::mailinfo::append_trailers)). A
/// `(label, raw)` pair is a mail without any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesMail {
    pub label: String,
    pub raw: Vec<u8>,
    pub trailers: Vec<String>,
}

impl From<(String, Vec<u8>)> for SeriesMail {
    fn from((label, raw): (String, Vec<u8>)) -> Self {
        SeriesMail {
            label,
            raw,
            trailers: Vec::new(),
        }
    }
}

/// Applies the mails in order on `branch` of the repository at
/// `repo_path`. All or nothing: the branch moves, by one compare-and-swap,
/// only if every mail applied; a mail that cannot be read stops the series
/// with [`Error::Input`] before anything is written.
///
/// `base` (a series' `base-commit:`): the patches apply to the base
/// commit's tree, and each one's change is then merged onto the branch
/// (ancestor: the patched base before it), as `b4 am -3` and `git
/// cherry-pick` would; the commits keep their authors and messages. `None`
/// applies on the tip, as `git am` does.
pub fn apply_series<M, T>(
    repo_path: &Path,
    branch: &str,
    base: Option<&str>,
    mails: M,
    committer: &Identity,
    opts: AmOptions,
) -> Result<SeriesResult, Error>
where
    M: IntoIterator<Item = Result<T, String>>,
    M::IntoIter: Send,
    T: Into<SeriesMail>,
{
    let mut repo = open(repo_path)?;
    let prepared = prepare_in(
        &mut repo,
        repo_path,
        branch,
        base,
        mails,
        committer,
        opts,
        &|_| {},
    )?;
    if let Some(new_tip) = &prepared.new_tip {
        let subject = prepared
            .patches
            .last()
            .map(|r| r.subject.as_str())
            .unwrap_or_default();
        update_branch_in(
            &repo,
            repo_path,
            branch,
            &prepared.old_tip,
            new_tip,
            &format!("am: {subject}"),
        )?;
    }
    Ok(prepared)
}

/// The tip of `refs/heads/<branch>` in an open repository.
fn tip_in(
    repo: &gix::Repository,
    repo_path: &Path,
    branch: &str,
) -> Result<Option<ObjectId>, Error> {
    let name = branch_ref_name(repo_path, branch)?;
    let reference = repo
        .try_find_reference(name.as_ref())
        .map_err(|e| Error::git(repo_path, format!("look up branch {branch:?}"), e))?;
    match reference {
        Some(mut r) => Ok(Some(
            r.peel_to_id()
                .map_err(|e| Error::git(repo_path, format!("resolve branch {branch:?}"), e))?
                .detach(),
        )),
        None => Ok(None),
    }
}

/// `refs/heads/<branch>`, or an error naming the branch and why it is not
/// one, checked before the repository is looked at.
fn branch_ref_name(repo_path: &Path, branch: &str) -> Result<FullName, Error> {
    if branch.starts_with('-') {
        return Err(Error::BranchStartsWithDash {
            path: repo_path.to_owned(),
            branch: branch.to_owned(),
        });
    }
    format!("refs/heads/{branch}")
        .as_str()
        .try_into()
        .map_err(|source| Error::BadBranchName {
            path: repo_path.to_owned(),
            branch: branch.to_owned(),
            source,
        })
}

/// The current tip of `branch`, if the branch exists.
pub fn branch_tip(repo_path: &Path, branch: &str) -> Result<Option<String>, Error> {
    Ok(tip_in(&open(repo_path)?, repo_path, branch)?.map(|id| id.to_string()))
}

/// Sets `refs/heads/<branch>` to `new` if its current value is `expected`,
/// with a reflog entry: the one place a branch is written.
fn set_branch(
    repo: &gix::Repository,
    repo_path: &Path,
    branch: &str,
    expected: PreviousValue,
    new: &str,
    reflog: &str,
) -> Result<(), Error> {
    let name = branch_ref_name(repo_path, branch)?;
    let new = ObjectId::from_hex(new.as_bytes()).map_err(|e| Error::bad_id(repo_path, new, e))?;
    repo.edit_reference(RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: BString::from(reflog),
            },
            expected,
            new: Target::Object(new),
        },
        name,
        deref: false,
    })
    .map(|_| ())
    .map_err(|e| Error::git(repo_path, format!("move branch {branch:?}"), e))
}

/// How old a lock of a branch must be before apply takes it for a killed
/// process's: git and patchline hold one for milliseconds.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes the lock files (`refs/heads/<branch>.lock`, `packed-refs.lock`)
/// a killed apply left on `branches` of the repository at `repo_path`:
/// each would refuse every later move of its branch. A lock is only taken
/// for stale when it is still there, unchanged, `STALE_LOCK` after it was
/// made (this waits for that); a live process's lock is gone by then.
/// Returns how many it removed.
pub fn remove_stale_ref_locks(repo_path: &Path, branches: &[String]) -> std::io::Result<usize> {
    let dot_git = repo_path.join(".git");
    let git_dir = if dot_git.is_dir() {
        dot_git
    } else {
        repo_path.to_owned()
    };
    let mut locks: Vec<PathBuf> = branches
        .iter()
        .map(|b| git_dir.join(format!("refs/heads/{b}.lock")))
        .collect();
    locks.push(git_dir.join("packed-refs.lock"));
    let mut removed = 0;
    for lock in locks {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let Some(before) = stamp(&lock) else { continue };
        let age = before.0.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if age < STALE_LOCK {
            std::thread::sleep(STALE_LOCK - age);
        }
        if stamp(&lock) == Some(before) {
            match std::fs::remove_file(&lock) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Creates `branch` at `at`; fails if it exists already.
pub fn create_branch(repo_path: &Path, branch: &str, at: &str, reflog: &str) -> Result<(), Error> {
    set_branch(
        &open(repo_path)?,
        repo_path,
        branch,
        PreviousValue::MustNotExist,
        at,
        reflog,
    )
}

/// Moves `branch` from `old` to `new` in one compare-and-swap: fails with
/// `BranchMoved` when the branch is not at `old` any more.
pub fn update_branch(
    repo_path: &Path,
    branch: &str,
    old: &str,
    new: &str,
    reflog: &str,
) -> Result<(), Error> {
    update_branch_in(&open(repo_path)?, repo_path, branch, old, new, reflog)
}

fn update_branch_in(
    repo: &gix::Repository,
    repo_path: &Path,
    branch: &str,
    old: &str,
    new: &str,
    reflog: &str,
) -> Result<(), Error> {
    let old_id =
        ObjectId::from_hex(old.as_bytes()).map_err(|e| Error::bad_id(repo_path, old, e))?;
    let expected = PreviousValue::MustExistAndMatch(Target::Object(old_id));
    if let Err(e) = set_branch(repo, repo_path, branch, expected, new, reflog) {
        // Re-read: if the branch is elsewhere now, someone else moved it.
        if tip_in(repo, repo_path, branch)? != Some(old_id) {
            return Err(Error::BranchMoved {
                path: repo_path.to_owned(),
                branch: branch.to_owned(),
                expected: old.to_owned(),
            });
        }
        return Err(e);
    }
    Ok(())
}

/// Writes the blobs, trees and commits of the series without moving any
/// reference; `new_tip` is `None` when a patch failed. `base`: as in
/// [`apply_series`]. `on_patch` is told after each patch made its commit,
/// how many have (a long series' progress).
pub fn prepare_series<M, T>(
    repo_path: &Path,
    branch: &str,
    base: Option<&str>,
    mails: M,
    committer: &Identity,
    opts: AmOptions,
    on_patch: &dyn Fn(usize),
) -> Result<SeriesResult, Error>
where
    M: IntoIterator<Item = Result<T, String>>,
    M::IntoIter: Send,
    T: Into<SeriesMail>,
{
    prepare_in(
        &mut open(repo_path)?,
        repo_path,
        branch,
        base,
        mails,
        committer,
        opts,
        on_patch,
    )
}

/// Whether `id` names a commit the repository has (a `base-commit:` that
/// can be applied from).
pub fn has_commit(repo_path: &Path, id: &str) -> Result<bool, Error> {
    let repo = open(repo_path)?;
    let Ok(oid) = ObjectId::from_hex(id.as_bytes()) else {
        return Ok(false);
    };
    Ok(repo.find_commit(oid).is_ok())
}

#[allow(clippy::too_many_arguments)]
fn prepare_in<M, T>(
    repo: &mut gix::Repository,
    repo_path: &Path,
    branch: &str,
    base: Option<&str>,
    mails: M,
    committer: &Identity,
    opts: AmOptions,
    on_patch: &dyn Fn(usize),
) -> Result<SeriesResult, Error>
where
    M: IntoIterator<Item = Result<T, String>>,
    M::IntoIter: Send,
    T: Into<SeriesMail>,
{
    // New objects stay in memory until the whole series applied: a failed
    // series leaves nothing behind, and a good one is written in one go.
    repo.objects.enable_object_memory();
    // Consecutive patches read the same trees and blobs again (each one
    // patched by the last): decoded objects are kept instead of being
    // inflated and delta-resolved from the pack every time.
    // Both caches bounded well below gix's defaults (96 MiB of delta
    // bases): a series re-reads its current tree, most of which is new and
    // in memory anyway; larger caches only raised peak RSS on histories
    // with large files (docs/performance.md).
    repo.object_cache_size_if_unset(OBJECT_CACHE);
    repo.objects.set_pack_cache(|| {
        Box::new(gix::odb::pack::cache::lru::StaticLinkedList::<64>::new(
            PACK_CACHE,
        ))
    });
    let old_tip = tip_in(repo, repo_path, branch)?.ok_or_else(|| Error::NoBranch {
        path: repo_path.to_owned(),
        branch: branch.to_owned(),
    })?;
    let mut tip = old_tip;
    let mut tree = repo
        .find_commit(tip)
        .map_err(|e| {
            Error::git(
                repo_path,
                format!("read the tip commit {tip} of {branch:?}"),
                e,
            )
        })?
        .tree_id()
        .map_err(|e| {
            Error::git(
                repo_path,
                format!("read the tree of {tip}, the tip of {branch:?}"),
                e,
            )
        })?
        .detach();
    // Applying from a base commit: the patched base's tree, which each
    // patch applies to before its change is merged onto `tree`.
    let mut from_base = match base {
        None => None,
        Some(hex) => {
            let id =
                ObjectId::from_hex(hex.as_bytes()).map_err(|e| Error::bad_id(repo_path, hex, e))?;
            let commit = repo
                .find_commit(id)
                .map_err(|e| Error::git(repo_path, format!("read the base commit {hex}"), e))?;
            let base_tree = commit
                .tree_id()
                .map_err(|e| Error::git(repo_path, format!("read the tree of {hex}"), e))?
                .detach();
            Some(base_tree)
        }
    };
    let mails = mails.into_iter();
    let mut results = Vec::with_capacity(mails.size_hint().0);
    let mut failed = false;
    let series = SeriesObjects::default();
    let encoder = pack::Encoder::start(&repo.git_dir().join("objects/pack"), PACK_THRESHOLD)
        .map_err(|e| Error::git(repo_path, "start the pack writer", e))?;
    // The mails are read and taken apart on another thread, ahead of the
    // one that applies them (which owns the repository): reading files and
    // splitting headers, body and patch are independent of the tree.
    std::thread::scope(|scope| -> Result<(), Error> {
        // In batches: a hand-over per mail would wake a thread per mail.
        // Few and small ones ahead: a parsed mail holds its patch text
        // twice (raw and decoded), and patches of test data run to
        // megabytes.
        const BATCH: usize = 16;
        const BATCH_BYTES: usize = 1 << 20;
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut bytes = 0;
            for mail in mails {
                batch.push(mail.map(|mail| {
                    let SeriesMail {
                        label,
                        raw,
                        trailers,
                    } = mail.into();
                    bytes += raw.len();
                    let info = mailinfo(&raw, opts.mailinfo).map(|mut info| {
                        let (message, added) = append_trailers(&info.message, &trailers);
                        info.message = message;
                        (info, added)
                    });
                    (label, info)
                }));
                if (batch.len() == BATCH || bytes >= BATCH_BYTES)
                    && tx
                        .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_err()
                {
                    return;
                }
                if batch.is_empty() {
                    bytes = 0;
                }
            }
            let _ = tx.send(batch);
        });
        for item in rx.into_iter().flatten() {
            let (label, info) = item.map_err(Error::Input)?;
            let label = &label;
            let (info, trailers) = match info {
                Ok(info) => info,
                Err(e) => {
                    results.push(failed_result(
                        label,
                        e.subject(),
                        PatchFailure::general(e.to_string()),
                    ));
                    failed = true;
                    break;
                }
            };
            let files = match parse(&info.patch) {
                Ok(files) => files,
                Err(e) => {
                    results.push(failed_result(
                        label,
                        &info.subject,
                        PatchFailure::general(e.to_string()),
                    ));
                    failed = true;
                    break;
                }
            };
            let objects = NewObjects {
                repo,
                series: &series,
            };
            let onto = from_base.unwrap_or(tree);
            let new_tree = match apply_to_tree(&objects, onto, &files, opts.apply, opts.three_way) {
                Ok(t) => t,
                Err(ApplyError::Patch(f)) => {
                    results.push(failed_result(label, &info.subject, f));
                    failed = true;
                    break;
                }
                Err(ApplyError::Git(failure)) => return Err(failure.at(repo_path)),
            };
            let new_tree = match from_base {
                None => new_tree,
                Some(before) => {
                    from_base = Some(new_tree);
                    match merge_onto(repo, before, tree, new_tree) {
                        Ok(Ok(merged)) => merged,
                        Ok(Err(f)) => {
                            results.push(failed_result(label, &info.subject, f));
                            failed = true;
                            break;
                        }
                        Err(failure) => return Err(failure.at(repo_path)),
                    }
                }
            };
            let (seconds, offset) = info.date.unwrap_or(committer.time);
            let commit = gix::objs::Commit {
                tree: new_tree,
                parents: [tip].into_iter().collect(),
                author: gix::actor::Signature {
                    name: BString::from(info.author_name.as_str()),
                    email: BString::from(info.author_email.as_str()),
                    time: gix::date::Time::new(seconds, offset),
                },
                committer: gix::actor::Signature {
                    name: BString::from(committer.name.as_str()),
                    email: BString::from(committer.email.as_str()),
                    time: gix::date::Time::new(committer.time.0, committer.time.1),
                },
                encoding: None,
                message: BString::from(info.message.as_str()),
                extra_headers: Vec::new(),
            };
            let id = objects.put_object(&commit).map_err(|f| f.at(repo_path))?;
            tip = id;
            tree = new_tree;
            results.push(PatchResult {
                file: label.clone(),
                subject: info.subject,
                ok: true,
                commit: Some(id.to_string()),
                tree: Some(new_tree.to_string()),
                error: None,
                trailers,
            });
            on_patch(results.len());
            // Superseded objects go to the encoder now and then (`--3way`
            // looks the blob an index line names up in the repository, not
            // among the series' objects, so it loses nothing by this).
            if results.len() % HAND_OVER_EVERY == 0
                || series.in_memory.get() >= series.kept.get() + HAND_OVER_BYTES
            {
                let keep: Vec<ObjectId> = [Some(tree), from_base].into_iter().flatten().collect();
                hand_over(repo, &keep, &series, &encoder).map_err(|f| f.at(repo_path))?;
            }
        }
        Ok(())
    })?;
    let applied = results.iter().filter(|r| r.ok).count();
    let complete = !failed && tip != old_tip;
    // A failed series drops the encoder (which stops) and the objects in
    // memory: nothing is written.
    if complete {
        hand_over(repo, &[], &series, &encoder).map_err(|f| f.at(repo_path))?;
        let objects_dir = repo.git_dir().join("objects");
        match encoder
            .finish()
            .map_err(|e| Error::git(repo_path, "encode the pack", e))?
        {
            pack::Finished::Pack(entries) => pack::write(&objects_dir.join("pack"), entries)
                .map(|_| ())
                .map_err(|e| Error::git(repo_path, "write the pack", e)),
            pack::Finished::Few(objects) => write_loose_objects(&objects_dir, &objects)
                .map_err(|e| Error::git(repo_path, "write the loose objects", e)),
        }?;
    }
    Ok(SeriesResult {
        branch: branch.to_owned(),
        old_tip: old_tip.to_string(),
        new_tip: complete.then(|| tip.to_string()),
        applied: if failed { 0 } else { applied },
        patches: results,
    })
}

/// Where a series' new objects go: into gix's object memory, where the
/// later patches of the series read them (see [`hand_over`] for how they
/// leave it). Ids are computed once, here, and nothing asks the object
/// database whether an object exists already (a `stat` per object for
/// loose files, for objects that are new nearly always): an object the
/// repository has is merely stored twice, which git allows.
struct NewObjects<'r> {
    repo: &'r gix::Repository,
    series: &'r SeriesObjects,
}

/// What a series made so far: the ids, and for patched blobs not handed to
/// the encoder yet, their delta against the blob they were patched from
/// (when that one is new too, so it will be in the same pack).
#[derive(Default)]
struct SeriesObjects {
    made: RefCell<HashSet<ObjectId>>,
    deltas: RefCell<HashMap<ObjectId, pack::Delta>>,
    /// Bytes of the objects in memory now, and of those the last hand-over
    /// kept (the current tree's).
    in_memory: Cell<usize>,
    kept: Cell<usize>,
}

impl NewObjects<'_> {
    fn put(&self, kind: gix::objs::Kind, data: Vec<u8>) -> Result<ObjectId, GitFailure> {
        self.put_with_delta(kind, data, None)
    }

    /// Puts an object in memory (again, when an earlier one moved to the
    /// encoder already: a revert reads it). `delta` is kept for the first
    /// making only.
    fn put_with_delta(
        &self,
        kind: gix::objs::Kind,
        data: Vec<u8>,
        delta: Option<pack::Delta>,
    ) -> Result<ObjectId, GitFailure> {
        use gix::objs::Write;
        let id = gix::objs::compute_hash(self.repo.object_hash(), kind, &data)
            .map_err(|e| GitFailure::new("hash a new object", e))?;
        if self.series.made.borrow_mut().insert(id)
            && let Some(delta) = delta
            && delta.base != id
        {
            self.series.deltas.borrow_mut().insert(id, delta);
        }
        self.series
            .in_memory
            .set(self.series.in_memory.get() + data.len());
        self.repo
            .objects
            .write_buf_with_known_id(kind, &data, id)
            .map_err(|e| GitFailure::new("keep a new object in memory", e))?;
        Ok(id)
    }

    /// Whether `id` was made by this series (and so will be in its pack).
    fn made(&self, id: &ObjectId) -> bool {
        self.series.made.borrow().contains(id)
    }

    fn put_object(&self, object: &impl gix::objs::WriteTo) -> Result<ObjectId, GitFailure> {
        let mut data = Vec::with_capacity(object.size() as usize);
        object
            .write_to(&mut data)
            .map_err(|e| GitFailure::new("serialize a new object", e))?;
        self.put(object.kind(), data)
    }
}

/// Bytes of decoded objects and of delta bases the repository handle keeps.
const OBJECT_CACHE: usize = 8 << 20;
const PACK_CACHE: usize = 8 << 20;

/// Patches between two hand-overs of superseded objects to the encoder,
/// at most; sooner once this many bytes were made since the last one
/// (patches of large files: memory stays the size of what a few patches
/// touch).
const HAND_OVER_EVERY: usize = 16;
const HAND_OVER_BYTES: usize = 4 << 20;

/// Moves objects from gix's object memory to the pack encoder (moves: no
/// copy is made): all of them when `keep` is `None`, else those the rest
/// of the series cannot reach any more — everything but the tree `keep`
/// and the trees and blobs it reaches through objects still in memory.
/// Later patches only read the current tree and what it holds, so the
/// memory stays the size of what one patch touches, and the encoder
/// deflates and writes on another core meanwhile.
fn hand_over(
    repo: &mut gix::Repository,
    keep: &[ObjectId],
    series: &SeriesObjects,
    encoder: &pack::Encoder,
) -> Result<(), GitFailure> {
    let Some(mut memory) = repo.objects.take_object_memory() else {
        return Ok(());
    };
    let mut live = gix::odb::memory::Storage::default();
    let mut kept = 0;
    let mut reach: Vec<ObjectId> = keep.to_vec();
    while let Some(id) = reach.pop() {
        let Some((kind, data)) = memory.remove(&id) else {
            continue;
        };
        if kind == gix::objs::Kind::Tree {
            for entry in gix::objs::TreeRefIter::from_bytes(&data, repo.object_hash()) {
                let entry = entry.map_err(|e| GitFailure::new("decode a new tree", e))?;
                if memory.contains_key(entry.oid) {
                    reach.push(entry.oid.to_owned());
                }
            }
        }
        kept += data.len();
        live.insert(id, (kind, data));
    }
    series.in_memory.set(kept);
    series.kept.set(kept);
    let mut deltas = series.deltas.borrow_mut();
    for (id, (kind, data)) in memory.drain() {
        let delta = deltas.remove(&id);
        encoder.add(pack::Object {
            id,
            kind,
            data,
            delta,
        });
    }
    repo.objects.set_object_memory(live);
    Ok(())
}

/// From this many new objects on, a series is written as one pack (as git
/// keeps a fetched pack from `transfer.unpackLimit` = 100 objects on):
/// creating thousands of small files is what a large series spends its time
/// on, and many tiny packs would slow every later read.
const PACK_THRESHOLD: usize = 100;

/// Writes objects as loose files, one zlib stream reused for all (gix
/// sets a new one up per object, which dominates for small objects), then
/// makes them durable with one `syncfs`.
fn write_loose_objects(objects_dir: &Path, objects: &[pack::Object]) -> std::io::Result<()> {
    use flate2::{Compress, Compression, FlushCompress};
    use std::io::Write;
    let mut compress = Compress::new(Compression::fast(), true);
    let mut out = Vec::new();
    let mut wrote = false;
    for pack::Object { id, kind, data, .. } in objects {
        let hex = id.to_string();
        let dir = objects_dir.join(&hex[..2]);
        let path = dir.join(&hex[2..]);
        if path.exists() {
            continue;
        }
        let mut input = format!("{} {}\0", kind, data.len()).into_bytes();
        input.extend_from_slice(data);
        compress.reset();
        out.clear();
        out.reserve(input.len() / 2 + 64);
        loop {
            let consumed = compress.total_in() as usize;
            let status = compress
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(4096));
        }
        std::fs::create_dir_all(&dir)?;
        // A kill leaves at most this temporary name (removed by the next
        // apply stage); the data is on disk before the object's name
        // exists, so a crash never leaves a visible half-written object
        // that a later `path.exists()` would trust.
        let tmp = dir.join(format!("{}{}", pack::temp_prefix("obj"), &hex[2..]));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        wrote = true;
    }
    if wrote {
        let dir = std::fs::File::open(objects_dir)?;
        if rustix::fs::syncfs(&dir).is_err() {
            dir.sync_all()?;
        }
    }
    Ok(())
}

fn failed_result(label: &str, subject: &str, failure: PatchFailure) -> PatchResult {
    PatchResult {
        file: label.to_owned(),
        subject: subject.to_owned(),
        ok: false,
        commit: None,
        tree: None,
        error: Some(failure),
        trailers: Vec::new(),
    }
}

enum ApplyError {
    Patch(PatchFailure),
    Git(GitFailure),
}

impl From<GitFailure> for ApplyError {
    fn from(failure: GitFailure) -> Self {
        ApplyError::Git(failure)
    }
}

/// Why `--3way` could not rescue a file whose hunks did not apply (the
/// report shows it after the hunk failure).
#[derive(Debug, thiserror::Error)]
enum ThreeWayFailure {
    #[error("the patch has no index line")]
    NoIndexLine,
    #[error("bad index line {line:?}: {source}")]
    BadIndexLine {
        line: String,
        #[source]
        source: gix::Error,
    },
    #[error("blob {0} is ambiguous")]
    Ambiguous(gix::hash::Prefix),
    #[error("the repository lacks blob {0} the patch was made against")]
    Missing(gix::hash::Prefix),
    #[error("cannot look up blob {prefix}: {source}")]
    Lookup {
        prefix: gix::hash::Prefix,
        #[source]
        source: GitError,
    },
    #[error("cannot read blob {id}: {source}")]
    Read {
        id: ObjectId,
        #[source]
        source: GitError,
    },
    #[error("does not apply to its own preimage either: {0}")]
    Preimage(HunkFailure),
    #[error("merging {0} leaves conflicts")]
    Conflicts(String),
}

/// One patch's change (`ancestor` -> `theirs`, both trees of the patched
/// base) merged onto the branch's tree `ours`; a conflict names its files.
fn merge_onto(
    repo: &gix::Repository,
    ancestor: ObjectId,
    ours: ObjectId,
    theirs: ObjectId,
) -> Result<Result<ObjectId, PatchFailure>, GitFailure> {
    use gix::merge::blob::builtin_driver::text::Labels;
    use gix::merge::tree::TreatAsUnresolved;
    let options = repo
        .tree_merge_options()
        .map_err(|e| GitFailure::new("read the tree merge options", e))?;
    let labels = Labels {
        ancestor: None,
        current: None,
        other: None,
    };
    let mut outcome = repo
        .merge_trees(ancestor, ours, theirs, labels, options)
        .map_err(|e| GitFailure::new("merge a patch onto the branch", e))?;
    if outcome.has_unresolved_conflicts(TreatAsUnresolved::git()) {
        let files = unresolved_files(&outcome);
        let mut failure = PatchFailure::general(format!(
            "applies to its base commit, but its change conflicts with the branch in {}",
            files.join(", ")
        ));
        failure.path = files.first().cloned();
        return Ok(Err(failure));
    }
    let id = outcome
        .tree
        .write()
        .map_err(|e| GitFailure::new("write a merged tree", e))?;
    Ok(Ok(id.detach()))
}

/// The files a tree merge left in conflict (git's idea of unresolved),
/// sorted, each once: what a refusal names.
pub(crate) fn unresolved_files(outcome: &gix::merge::tree::Outcome<'_>) -> Vec<String> {
    let how = gix::merge::tree::TreatAsUnresolved::git();
    let mut files: Vec<String> = outcome
        .conflicts
        .iter()
        .filter(|c| c.is_unresolved(how))
        .map(|c| c.ours.location().to_string())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// `git am --3way` for one file: apply the hunks to the blob the patch was
/// made against (named by its `index` line) and merge that result with the
/// current content.
fn merge_three_way(
    repo: &gix::Repository,
    file: &FilePatch<'_>,
    current: &[u8],
    opts: ApplyOptions,
) -> Result<Vec<u8>, ThreeWayFailure> {
    use gix::merge::blob::builtin_driver::text::{Conflict, Labels, Options};
    use gix::merge::blob::{Resolution, builtin_driver};
    let line = file.old_id.as_deref().ok_or(ThreeWayFailure::NoIndexLine)?;
    let prefix =
        gix::hash::Prefix::from_hex(line).map_err(|source| ThreeWayFailure::BadIndexLine {
            line: line.to_owned(),
            source,
        })?;
    let base_id = match repo.objects.lookup_prefix(prefix, None) {
        Ok(Some(Ok(id))) => id,
        Ok(Some(Err(()))) => return Err(ThreeWayFailure::Ambiguous(prefix)),
        Ok(None) => return Err(ThreeWayFailure::Missing(prefix)),
        Err(e) => {
            return Err(ThreeWayFailure::Lookup {
                prefix,
                source: e.into(),
            });
        }
    };
    let base = repo
        .find_blob(base_id)
        .map(|mut b| b.take_data())
        .map_err(|e| ThreeWayFailure::Read {
            id: base_id,
            source: e.into(),
        })?;
    let theirs = apply_hunks(&base, &file.hunks, opts).map_err(ThreeWayFailure::Preimage)?;
    let mut out = Vec::new();
    let mut input = gix_imara_diff::InternedInput::default();
    let resolution = builtin_driver::text(
        &mut out,
        &mut input,
        Labels {
            ancestor: None,
            current: None,
            other: None,
        },
        current,
        &base,
        &theirs,
        Options {
            conflict: Conflict::default(),
            ..Options::default()
        },
    );
    match resolution {
        Resolution::Complete => Ok(out),
        _ => Err(ThreeWayFailure::Conflicts(file.display_path().to_owned())),
    }
}

fn kind_of(mode: u32) -> Option<EntryKind> {
    match mode {
        0o100644 | 0o100664 => Some(EntryKind::Blob),
        0o100755 => Some(EntryKind::BlobExecutable),
        0o120000 => Some(EntryKind::Link),
        0o160000 => Some(EntryKind::Commit),
        _ => None,
    }
}

/// The commit a gitlink's patched text names: `Subproject commit <id>`
/// and a newline, as git apply reads it.
fn gitlink_id(text: &[u8], hash: gix::hash::Kind) -> Option<ObjectId> {
    let text = std::str::from_utf8(text).ok()?;
    let hex = text
        .strip_prefix("Subproject commit ")?
        .trim_end_matches('\n');
    (hex.len() == hash.len_in_hex())
        .then(|| ObjectId::from_hex(hex.as_bytes()).ok())
        .flatten()
}

/// What a path holds while a patch is applied: `None` once deleted.
type Entry = Option<(EntryKind, ObjectId)>;

/// Applies one mail's file patches to `base` and writes the new tree.
fn apply_to_tree(
    objects: &NewObjects<'_>,
    base: ObjectId,
    files: &[FilePatch<'_>],
    opts: ApplyOptions,
    three_way: bool,
) -> Result<ObjectId, ApplyError> {
    let repo = objects.repo;
    let base_tree = repo
        .find_tree(base)
        .map_err(|e| GitFailure::new("read the tree to patch", e))?;
    // Paths changed by earlier files of this patch, seen by later ones.
    let mut changed: HashMap<String, Entry> = HashMap::new();
    let lookup = |changed: &HashMap<String, Entry>, path: &str| -> Result<Entry, ApplyError> {
        if let Some(entry) = changed.get(path) {
            return Ok(*entry);
        }
        let entry = base_tree
            .lookup_entry_by_path(path)
            .map_err(|e| GitFailure::new("look a path up in the tree to patch", e))?;
        Ok(entry.map(|e| (e.mode().kind(), e.object_id())))
    };
    let read_blob = |id: ObjectId| -> Result<Vec<u8>, ApplyError> {
        repo.find_blob(id)
            .map(|mut b| b.take_data())
            .map_err(|e| GitFailure::new("read a blob to patch", e).into())
    };
    for file in files {
        let path = file.display_path().to_owned();
        let fail = |message: String| ApplyError::Patch(PatchFailure::file(&path, message));
        if file.binary_without_data {
            return Err(fail(format!(
                "cannot apply binary patch to '{path}' without full index line"
            )));
        }
        let source_path = file.old_path.as_deref();
        let old: Entry = match (file.status, source_path) {
            (Status::Added, _) | (_, None) => None,
            (_, Some(p)) => {
                let entry = lookup(&changed, p)?;
                if entry.is_none() {
                    return Err(ApplyError::Patch(PatchFailure::file(
                        p,
                        format!("{p}: does not exist in index"),
                    )));
                }
                entry
            }
        };
        if file.status == Status::Added
            && let Some(new) = &file.new_path
            && lookup(&changed, new)?.is_some()
        {
            return Err(fail(format!("{new}: already exists in index")));
        }
        if matches!(file.status, Status::Renamed { .. } | Status::Copied { .. })
            && let Some(new) = &file.new_path
            && lookup(&changed, new)?.is_some()
        {
            return Err(fail(format!("{new}: already exists in index")));
        }
        // A gitlink's "contents" in a diff are the line git apply makes of
        // it; the hunks apply to that line, and the result names the commit.
        let old_content = match old {
            Some((EntryKind::Commit, id)) => format!("Subproject commit {id}\n").into_bytes(),
            Some((_, id)) => read_blob(id)?,
            None => Vec::new(),
        };
        if let (Some(expected), Some((_, id))) = (&file.old_id, old)
            && file.binary.is_some()
            && !id.to_string().starts_with(expected.as_str())
        {
            return Err(fail(format!(
                "the patch applies to '{path}' ({expected}), which does not match the current contents"
            )));
        }
        let mut delta = None;
        let new_content = match &file.binary {
            Some(bin) => match &bin.forward {
                BinaryData::Literal(bytes) => bytes.clone(),
                BinaryData::Delta(delta) => apply_delta(&old_content, delta)
                    .map_err(|e| fail(format!("binary patch does not apply to '{path}': {e}")))?,
            },
            None if file.hunks.is_empty() => old_content.clone(),
            None => match apply_hunks_lines(&old_content, &file.hunks, opts) {
                Ok(lines) => {
                    if let Some((_, base)) = old
                        && objects.made(&base)
                    {
                        delta = Some(pack::Delta {
                            base,
                            data: pack::delta(&old_content, &lines),
                        });
                    }
                    lines.concat()
                }
                Err(f) if three_way && old.is_some() => {
                    merge_three_way(repo, file, &old_content, opts).map_err(|why| {
                        let mut failure = PatchFailure::hunk(&path, f);
                        failure.message = format!("{} (3-way: {why})", failure.message);
                        ApplyError::Patch(failure)
                    })?
                }
                Err(f) => return Err(ApplyError::Patch(PatchFailure::hunk(&path, f))),
            },
        };
        if file.status == Status::Deleted {
            if !new_content.is_empty() && file.binary.is_none() {
                return Err(fail(format!("removal patch leaves file contents: {path}")));
            }
            if let Some(p) = source_path {
                changed.insert(p.to_owned(), None);
            }
            continue;
        }
        let kind = match file.new_mode.or(file.old_mode) {
            Some(mode) => kind_of(mode)
                .ok_or_else(|| fail(format!("{path}: unsupported file mode {mode:o}")))?,
            None => old.map_or(EntryKind::Blob, |(k, _)| k),
        };
        // A pure mode change or rename keeps the blob as it is.
        let unchanged = old.filter(|_| file.binary.is_none() && file.hunks.is_empty());
        let id = if let Some((_, id)) = unchanged {
            id
        } else if kind == EntryKind::Commit {
            gitlink_id(&new_content, repo.object_hash()).ok_or_else(|| {
                fail(format!(
                    "{path}: a submodule (mode 160000) must read \"Subproject commit <id>\", not {:?}",
                    String::from_utf8_lossy(&new_content[..new_content.len().min(80)])
                ))
            })?
        } else {
            objects.put_with_delta(gix::objs::Kind::Blob, new_content, delta)?
        };
        if let Status::Renamed { .. } = file.status
            && let Some(p) = source_path
        {
            changed.insert(p.to_owned(), None);
        }
        if let Some(new) = &file.new_path {
            changed.insert(new.clone(), Some((kind, id)));
        }
    }
    // git apply refuses to write through a symbolic link or to put a file
    // under a file; a tree editor would silently replace either with a
    // directory, so every leading directory of a path written is checked.
    for (path, entry) in &changed {
        if entry.is_none() {
            continue;
        }
        let mut prefix_end = 0;
        while let Some(slash) = path[prefix_end..].find('/') {
            prefix_end += slash;
            let prefix = &path[..prefix_end];
            match lookup(&changed, prefix)? {
                Some((EntryKind::Link, _)) => {
                    return Err(ApplyError::Patch(PatchFailure::file(
                        path,
                        format!("affected file '{path}' is beyond a symbolic link ('{prefix}')"),
                    )));
                }
                Some((EntryKind::Tree, _)) | None => {}
                Some(_) => {
                    return Err(ApplyError::Patch(PatchFailure::file(
                        path,
                        format!(
                            "'{path}' appears as both a file and as a directory ('{prefix}' is a file)"
                        ),
                    )));
                }
            }
            prefix_end += 1;
        }
    }
    let root = base_tree
        .decode()
        .map_err(|e| GitFailure::new("decode the tree to patch", e))?
        .into();
    let mut editor = gix::objs::tree::Editor::new(root, &repo.objects, repo.object_hash());
    let mut paths: Vec<(&String, &Entry)> = changed.iter().collect();
    paths.sort();
    for (path, entry) in paths {
        match entry {
            Some((kind, id)) => {
                editor
                    .upsert(path.split('/'), *kind, *id)
                    .map_err(|e| GitFailure::new("add a path to the new tree", e))?;
            }
            None => {
                editor
                    .remove(path.split('/'))
                    .map_err(|e| GitFailure::new("remove a path from the new tree", e))?;
            }
        }
    }
    Ok(editor.write(|tree| objects.put_object(tree))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::git;
    use std::error::Error as _;

    #[test]
    fn opening_a_non_repository_keeps_gix_error_as_source() {
        let dir = tempfile::tempdir().unwrap();
        let e = branch_tip(dir.path(), "master").unwrap_err();
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot open repository {}: ",
                dir.path().display()
            )),
            "{text}"
        );
        let source = e.source().expect("the gix error is kept");
        assert!(text.ends_with(&source.to_string()), "{text}");
    }

    #[test]
    fn a_branch_at_a_blob_names_the_operation_and_keeps_the_source() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--bare"]);
        let blob = crate::testkit::git_with(
            dir.path(),
            &["hash-object", "-w", "--stdin"],
            Some(b"not a commit\n"),
        );
        assert!(blob.ok, "{}", blob.stderr);
        let blob = String::from_utf8(blob.stdout).unwrap();
        let blob = blob.trim();
        // git refuses to put a blob on a branch; a damaged repository may.
        std::fs::write(dir.path().join("refs/heads/master"), format!("{blob}\n")).unwrap();
        let committer = Identity {
            name: "T".into(),
            email: "t@x".into(),
            time: (0, 0),
        };
        let e = prepare_series(
            dir.path(),
            "master",
            None,
            std::iter::empty::<MailInput>(),
            &committer,
            AmOptions::default(),
            &|_| {},
        )
        .unwrap_err();
        let Error::Git { path, what, .. } = &e else {
            panic!("not a git error: {e:?}");
        };
        assert_eq!(path, dir.path());
        assert!(what.contains(blob) && what.contains("master"), "{what}");
        let text = e.to_string();
        assert!(text.contains("cannot read the tip commit"), "{text}");
        assert!(e.source().is_some(), "{e:?}");
    }

    #[test]
    fn each_commit_made_is_told_with_how_many_are() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "--quiet", "-b", "master"]);
        for (n, text) in ["one\n", "two\n", "three\n"].iter().enumerate() {
            std::fs::write(work.join("f"), text).unwrap();
            git(&work, &["add", "f"]);
            git(&work, &["commit", "--quiet", "-m", &format!("change {n}")]);
        }
        let mails: Vec<MailInput> =
            String::from_utf8(git(&work, &["format-patch", "--stdout", "HEAD~2"]))
                .unwrap()
                .split_inclusive("\nFrom ")
                .enumerate()
                .map(|(i, m)| {
                    let m = if i == 0 {
                        m.to_owned()
                    } else {
                        format!("From {m}")
                    };
                    let m = m.strip_suffix("From ").unwrap_or(&m).to_owned();
                    Ok((format!("{i}"), m.into_bytes()))
                })
                .collect();
        assert_eq!(mails.len(), 2);
        git(&work, &["reset", "--quiet", "--hard", "HEAD~2"]);
        let committer = Identity {
            name: "T".into(),
            email: "t@x".into(),
            time: (0, 0),
        };
        let told = RefCell::new(Vec::new());
        let result = prepare_series(
            &work,
            "master",
            None,
            mails,
            &committer,
            AmOptions::default(),
            &|n| told.borrow_mut().push(n),
        )
        .unwrap();
        assert!(result.new_tip.is_some(), "{result:?}");
        assert_eq!(told.into_inner(), [1, 2]);
    }

    #[test]
    fn a_bad_object_id_is_named_with_its_source() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--bare"]);
        let e = update_branch(dir.path(), "master", "not-hex", "also-not", "test").unwrap_err();
        let Error::BadObjectId { id, .. } = &e else {
            panic!("not a bad id: {e:?}");
        };
        assert_eq!(id, "not-hex");
        assert!(e.source().is_some(), "{e:?}");
    }
}
