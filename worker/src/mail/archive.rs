//! The dated mail archive: raw mails are stored here before anything else
//! looks at them, then patch mails are filed by series.
//!
//! Layout under `archive_dir`:
//! - `YYYY-MM-DD/raw/<sha256>.eml`: every mail as received (the receipt);
//! - `YYYY-MM-DD/<series-slug>/NNNN-<patch-slug>.patch` and `.eml`: hard
//!   links to the raw mail (`git am` reads a single mail file as it is).
//!
//! Writes go to an unnamed file (`O_TMPFILE`) that is linked into place
//! once complete (or, where the file system has no `O_TMPFILE`, to a
//! temporary file renamed into place), so a reader never sees half a file. Durability is batched: `flush` fsyncs every file
//! and directory written since the last flush, and the caller commits the
//! source cursor only after it, so an acknowledged mail is always on disk.
//! Nothing here ever deletes a raw mail.

use crate::patch::pack::remove_stale_temps_in;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("archive: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("archive: refusing path {path:?}: {reason}")]
    HostilePath { path: String, reason: &'static str },
}

/// Shared by the threads that write a batch (`Archive` is `Sync`).
pub struct Archive {
    root: PathBuf,
    /// The root, opened once it exists: files are made and linked relative
    /// to it, so the kernel walks `<day>/raw/<name>` and not the whole
    /// absolute path for every one of tens of thousands of files.
    root_fd: OnceLock<OwnedFd>,
    pending: Mutex<Pending>,
}

/// Written since the last flush.
#[derive(Default)]
struct Pending {
    files: Vec<PathBuf>,
    /// Directories whose entries changed.
    dirs: BTreeSet<PathBuf>,
    /// Directories known to exist (kept across flushes). Hashed: it is
    /// looked up for every file written, and ordered `Path` comparisons
    /// (component by component) cost more than hashing the bytes.
    existing: HashSet<PathBuf>,
}

/// The archive day of a unix time, `YYYY-MM-DD` in UTC.
pub fn day(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// A file-name-safe slug: lower-case ASCII letters, digits and `-`, at most
/// `max` bytes, never empty, never `.`/`..`, never containing `/`.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c == '.' || c == '_' {
            // git format-patch keeps these; only between word characters.
            if !out.is_empty() && !out.ends_with(['-', '.', '_']) {
                out.push(c);
            }
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches(['-', '.', '_']);
    if trimmed.is_empty() {
        "untitled".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Where [`Archive::file_patch`] files patch `index` of a series (relative
/// to the archive root): known before the filing is made.
pub fn patch_path(series_dir: &str, index: u32, title: &str) -> String {
    if index == 0 {
        format!("{series_dir}/0000-cover-letter.patch")
    } else {
        format!("{series_dir}/{index:04}-{}.patch", slug(title, 52))
    }
}

/// Checks that a path relative to the archive stays inside it.
pub fn check_relative(path: &str) -> Result<&Path, Error> {
    let p = Path::new(path);
    let hostile = |reason| Error::HostilePath {
        path: path.to_owned(),
        reason,
    };
    if p.is_absolute() {
        return Err(hostile("absolute path"));
    }
    for c in p.components() {
        match c {
            Component::Normal(s) if s == ".git" => return Err(hostile("`.git` component")),
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => return Err(hostile("`..` or root component")),
        }
    }
    Ok(p)
}

impl Archive {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            root_fd: OnceLock::new(),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Starts an intake: leaves a mark (`.tmp-<pid>-intake` at the root)
    /// that only [`Archive::end_intake`] removes. When a mark of a process
    /// that is gone is there, that intake was killed: the temporary files it
    /// left are removed ([`Archive::remove_stale_temp_files`]) with its mark.
    /// So the whole archive is walked only after a kill, not on every
    /// collect. Returns how many files were removed.
    pub fn begin_intake(&self) -> Result<usize, Error> {
        let wrap = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(wrap(&self.root))?;
        let killed = std::fs::read_dir(&self.root)
            .map_err(wrap(&self.root))?
            .filter_map(Result::ok)
            .any(|e| {
                let name = e.file_name();
                name.to_string_lossy().ends_with("-intake")
                    && crate::patch::pack::is_stale_temp(&name)
            });
        let removed = if killed {
            // The killed intake's files, and its mark.
            self.remove_stale_temp_files()?
                + remove_stale_temps_in(&self.root).map_err(wrap(&self.root))?
        } else {
            0
        };
        let mark = self.intake_mark();
        std::fs::write(&mark, b"").map_err(wrap(&mark))?;
        Ok(removed)
    }

    /// Ends an intake begun with [`Archive::begin_intake`]: its mark goes.
    pub fn end_intake(&self) -> Result<(), Error> {
        let mark = self.intake_mark();
        match std::fs::remove_file(&mark) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Write {
                path: mark,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn intake_mark(&self) -> PathBuf {
        self.root
            .join(format!(".tmp-{}-intake", std::process::id()))
    }

    /// Removes the temporary files (`<day>/raw/.tmp-*`, `<day>/<series>/.tmp-*`)
    /// a killed collect left: an `O_TMPFILE` write leaves nothing, the
    /// rename fallback leaves its temporary name. Only files of processes
    /// that are gone are removed (`pack::is_stale_temp`). Returns how many.
    pub fn remove_stale_temp_files(&self) -> Result<usize, Error> {
        let wrap = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Write { path, source }
        };
        let days = match std::fs::read_dir(&self.root) {
            Ok(days) => days,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(wrap(&self.root)(e)),
        };
        let mut removed = 0;
        for day in days {
            let day = day.map_err(wrap(&self.root))?.path();
            if !day.is_dir() {
                continue;
            }
            removed += remove_stale_temps_in(&day).map_err(wrap(&day))?;
            for dir in std::fs::read_dir(&day).map_err(wrap(&day))? {
                let dir = dir.map_err(wrap(&day))?.path();
                if dir.is_dir() {
                    removed += remove_stale_temps_in(&dir).map_err(wrap(&dir))?;
                }
            }
        }
        Ok(removed)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A writer that panicked cannot leave the lists inconsistent: they
        // only grow, and a spurious entry costs one extra fsync.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a raw mail received at `received`, named by its content hash.
    /// Returns the path relative to the archive root. Storing the same bytes
    /// twice is a no-op, except that a file damaged by a crash (wrong size)
    /// is rewritten.
    pub fn store_raw(
        &self,
        received: i64,
        content_hash: &str,
        bytes: &[u8],
    ) -> Result<String, Error> {
        let relative = format!("{}/raw/{content_hash}.eml", day(received));
        // The same name means the same bytes: a file already there of the
        // right size is kept, one a crash left short is rewritten.
        self.write_atomically(Path::new(&relative), &[bytes])?;
        Ok(relative)
    }

    /// Stores a raw mail too large to hold in memory: `copy` writes it, it
    /// is hashed on the way to a temporary file, then renamed to
    /// `<sha256>.eml` as `store_raw` names it. Returns the path relative
    /// to the archive root and the sha256 hex.
    pub fn store_raw_streamed(
        &self,
        received: i64,
        copy: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(String, String), Error> {
        use sha2::{Digest, Sha256};
        struct Hashing<W> {
            out: W,
            hash: Sha256,
        }
        impl<W: Write> Write for Hashing<W> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.out.write(buf)?;
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.out.flush()
            }
        }
        let dir = self.root.join(day(received)).join("raw");
        let tmp = dir.join(format!(
            ".tmp-{}-stream-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let wrap = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Write { path, source }
        };
        self.ensure_dir(&dir).map_err(wrap(&dir))?;
        let file = File::create(&tmp).map_err(wrap(&tmp))?;
        let mut out = Hashing {
            out: std::io::BufWriter::new(file),
            hash: Sha256::new(),
        };
        copy(&mut out)
            .and_then(|()| out.flush())
            .map_err(wrap(&tmp))?;
        let hash = hex::encode(out.hash.finalize());
        drop(out.out);
        let relative = format!("{}/raw/{hash}.eml", day(received));
        let path = self.root.join(&relative);
        std::fs::rename(&tmp, &path).map_err(wrap(&path))?;
        let mut pending = self.pending();
        pending.files.push(path);
        pending.dirs.insert(dir);
        Ok((relative, hash))
    }

    /// The bytes of a raw mail stored earlier (`relative` as `store_raw`
    /// returned it).
    pub fn read_raw(&self, relative: &str) -> Result<Vec<u8>, Error> {
        let path = self.root.join(check_relative(relative)?);
        std::fs::read(&path).map_err(|source| Error::Write { path, source })
    }

    /// Files a patch mail of a series as `<series_dir>/<NNNN>-<slug>.patch`
    /// (for `git am`, which reads a single RFC 5322 mail as it is) and
    /// `.eml` (for mail clients): both hard links to the raw receipt, so
    /// filing costs no copy. `series_dir` is relative to the archive root.
    /// Returns the `.patch` path relative to the root.
    pub fn file_patch(
        &self,
        series_dir: &str,
        index: u32,
        title: &str,
        raw_relative: &str,
    ) -> Result<String, Error> {
        check_relative(series_dir)?;
        check_relative(raw_relative)?;
        let patch_rel = patch_path(series_dir, index, title);
        let eml_rel = patch_rel
            .strip_suffix(".patch")
            .map(|stem| format!("{stem}.eml"))
            .unwrap_or_default();
        for rel in [&patch_rel, &eml_rel] {
            let path = self.root.join(rel);
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            let wrap = |source| Error::Write {
                path: path.clone(),
                source,
            };
            self.ensure_dir(&dir).map_err(wrap)?;
            let linked = match self.root_fd() {
                Some(root) => {
                    rustix::fs::linkat(root, raw_relative, root, rel.as_str(), AtFlags::empty())
                        .map_err(std::io::Error::from)
                }
                None => std::fs::hard_link(self.root.join(raw_relative), &path),
            };
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => {
                    // Another file system (or no hard links): copy instead.
                    let raw_path = self.root.join(raw_relative);
                    let bytes = std::fs::read(&raw_path).map_err(|source| Error::Write {
                        path: raw_path,
                        source,
                    })?;
                    self.write_atomically(Path::new(rel), &[&bytes])?;
                }
            }
            self.pending().dirs.insert(dir);
        }
        Ok(patch_rel)
    }

    /// Removes a filing made by `file_patch` (the raw mail stays).
    pub fn unfile_patch(&self, patch_relative: &str) -> Result<(), Error> {
        check_relative(patch_relative)?;
        let patch = self.root.join(patch_relative);
        let eml = patch.with_extension("eml");
        for path in [patch, eml] {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    if let Some(parent) = path.parent() {
                        self.pending().dirs.insert(parent.to_path_buf());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Write { path, source }),
            }
        }
        Ok(())
    }

    /// Creates `dir` (and parents) if needed, remembering new entries.
    fn ensure_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.pending().existing.contains(dir) {
            return Ok(());
        }
        let mut created = BTreeSet::new();
        create_dir_all_synced(dir, &mut created)?;
        let mut pending = self.pending();
        pending.dirs.extend(created);
        pending.existing.insert(dir.to_path_buf());
        Ok(())
    }

    /// The root directory's descriptor, once the root exists.
    fn root_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.root_fd.get().is_none() {
            let fd = rustix::fs::open(
                &self.root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            // Another thread may have been first: its descriptor is kept.
            let _ = self.root_fd.set(fd);
        }
        self.root_fd.get().map(AsFd::as_fd)
    }

    /// Writes `parts` as `relative` (to the root) unless a file of that
    /// name and size is there already (names are content hashes or
    /// filings of them: the same name and size is the same mail; another
    /// size is a file a crash left short, replaced).
    fn write_atomically(&self, relative: &Path, parts: &[&[u8]]) -> Result<(), Error> {
        let path = self.root.join(relative);
        let wrap = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir).map_err(wrap)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let unnamed = match self.root_fd() {
            Some(root) => write_unnamed(root, relative, parts).map_err(wrap)?,
            None => Unnamed::Unsupported,
        };
        let kept = match unnamed {
            Unnamed::Linked => true,
            Unnamed::Exists => std::fs::metadata(&path).is_ok_and(|m| m.len() == len as u64),
            Unnamed::Unsupported => false,
        };
        if !kept {
            write_renamed(&dir, &path, parts).map_err(wrap)?;
        }
        let mut pending = self.pending();
        pending.files.push(path);
        pending.dirs.insert(dir);
        Ok(())
    }

    /// Makes everything written since the last flush durable.
    ///
    /// On Linux one `syncfs` of the archive's file system replaces an fsync
    /// per file and per directory: for a batch of hundreds of mails that is
    /// hundreds of times fewer disk flushes, with the same guarantee.
    ///
    /// Safe to call while other threads keep writing: it makes durable
    /// everything written before the call; later writes stay pending for
    /// the next flush.
    pub fn flush(&self) -> Result<(), Error> {
        let (files, dirs) = {
            let mut pending = self.pending();
            (
                std::mem::take(&mut pending.files),
                std::mem::take(&mut pending.dirs),
            )
        };
        if files.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        let restore = |files: Vec<PathBuf>, dirs: BTreeSet<PathBuf>| {
            // Not durable after all: keep them for the next attempt.
            let mut pending = self.pending();
            pending.files.extend(files);
            pending.dirs.extend(dirs);
        };
        let root = match File::open(&self.root) {
            Ok(root) => root,
            Err(source) => {
                restore(files, dirs);
                return Err(Error::Write {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        if rustix::fs::syncfs(&root).is_ok() {
            return Ok(());
        }
        let synced = files
            .iter()
            .map(|p| (p, false))
            .chain(dirs.iter().map(|p| (p, true)))
            .try_for_each(|(path, is_dir)| {
                File::open(path)
                    .and_then(|f| if is_dir { f.sync_all() } else { f.sync_data() })
                    .map_err(|source| Error::Write {
                        path: path.clone(),
                        source,
                    })
            });
        if synced.is_err() {
            restore(files, dirs);
        }
        synced
    }

    /// Number of files written and not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.pending().files.len()
    }
}

/// What became of an `O_TMPFILE` write.
enum Unnamed {
    /// Written and linked as the path.
    Linked,
    /// Written, but the path exists: nothing was changed.
    Exists,
    /// The file system (or a missing `/proc`) does not allow it.
    Unsupported,
}

/// Whether `linkat(fd, "", AT_EMPTY_PATH)` was refused once (it needs
/// CAP_DAC_READ_SEARCH): the `/proc` link is used from then on.
static EMPTY_PATH_REFUSED: AtomicBool = AtomicBool::new(false);

/// Writes `parts` to an unnamed file in the directory of `relative` (to
/// `root`) and links it as `relative`: one directory entry made, where a
/// temporary file and a rename make one, remove it and make another.
fn write_unnamed(
    root: BorrowedFd<'_>,
    relative: &Path,
    parts: &[&[u8]],
) -> std::io::Result<Unnamed> {
    let dir = match relative.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fd = match rustix::fs::openat(
        root,
        dir,
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    ) {
        Ok(fd) => fd,
        // EOPNOTSUPP, or EISDIR/EINVAL from kernels and file systems
        // without O_TMPFILE; any other failure shows again on the
        // fallback, with its own error.
        Err(_) => return Ok(Unnamed::Unsupported),
    };
    let mut file = File::from(fd);
    for part in parts {
        file.write_all(part)?;
    }
    let mut linked = Err(rustix::io::Errno::PERM);
    if !EMPTY_PATH_REFUSED.load(Ordering::Relaxed) {
        linked = rustix::fs::linkat(&file, "", root, relative, AtFlags::EMPTY_PATH);
        if matches!(
            linked,
            Err(rustix::io::Errno::PERM | rustix::io::Errno::NOENT)
        ) {
            EMPTY_PATH_REFUSED.store(true, Ordering::Relaxed);
        }
    }
    if EMPTY_PATH_REFUSED.load(Ordering::Relaxed) {
        // What open(2) documents for callers without the capability.
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        linked = rustix::fs::linkat(
            CWD,
            proc_path.as_str(),
            root,
            relative,
            AtFlags::SYMLINK_FOLLOW,
        );
    }
    match linked {
        Ok(()) => Ok(Unnamed::Linked),
        Err(rustix::io::Errno::EXIST) => Ok(Unnamed::Exists),
        Err(_) => Ok(Unnamed::Unsupported),
    }
}

/// Writes `parts` to a temporary file in `dir` and renames it to `path`
/// (replacing what is there).
fn write_renamed(dir: &Path, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        name.unwrap_or_default()
    ));
    let mut file = File::create(&tmp)?;
    for part in parts {
        file.write_all(part)?;
    }
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Creates `dir` and its missing parents, remembering every directory
/// whose entries changed so `flush` syncs them. Tries `mkdir` first: in
/// the common case (a new series directory in an existing day) that is
/// the only system call.
fn create_dir_all_synced(dir: &Path, changed: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    use std::io::ErrorKind;
    let made = match std::fs::create_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                create_dir_all_synced(parent, changed)?;
                std::fs::create_dir(dir)
            }
            _ => Err(e),
        },
        other => other,
    };
    match made {
        Ok(()) => {
            if let Some(p) = dir.parent() {
                changed.insert(p.to_path_buf());
            }
            Ok(())
        }
        // Made by another thread (or before this run).
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_and_bounded() {
        let cases = [
            ("Fix the frobnicator", "fix-the-frobnicator"),
            ("../../etc/passwd", "etc-passwd"),
            ("a/b\\c", "a-b-c"),
            ("", "untitled"),
            ("..", "untitled"),
            ("....", "untitled"),
            ("--x--", "x"),
            ("Ünïcödé title", "n-c-d-title"),
            ("v1.2_fix", "v1.2_fix"),
            (".hidden", "hidden"),
        ];
        for (input, want) in cases {
            assert_eq!(slug(input, 52), want, "{input:?}");
        }
        let long = "x".repeat(500);
        assert_eq!(slug(&long, 52).len(), 52);
        for s in ["a/../b", "x/.git/y", "..", "/abs", "../x", "a/../../b"] {
            let out = slug(s, 52);
            assert!(
                !out.contains('/') && out != ".." && !out.starts_with('.'),
                "{s} -> {out}"
            );
        }
    }

    #[test]
    fn hostile_relative_paths_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../b", "a/.git/config"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        assert!(check_relative("2026-01-01/raw/x.eml").is_ok());
    }

    #[test]
    fn raw_store_is_idempotent_and_repairs_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().to_path_buf());
        let t = 1_700_000_000; // 2023-11-14
        let rel = a.store_raw(t, "abc", b"Subject: x\n\nbody\n").unwrap();
        assert_eq!(rel, "2023-11-14/raw/abc.eml");
        a.flush().unwrap();
        assert_eq!(a.unflushed(), 0);
        let rel2 = a.store_raw(t, "abc", b"Subject: x\n\nbody\n").unwrap();
        assert_eq!(rel, rel2);
        // Simulate a crash that left a truncated file behind.
        std::fs::write(dir.path().join(&rel), b"Subj").unwrap();
        a.store_raw(t, "abc", b"Subject: x\n\nbody\n").unwrap();
        a.flush().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(&rel)).unwrap(),
            b"Subject: x\n\nbody\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("2023-11-14/raw"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_killed_collects_temporary_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().to_path_buf());
        let rel = a
            .store_raw(1_700_000_000, "abc", b"Subject: x\n\nbody\n")
            .unwrap();
        let gone_pid = crate::testkit::gone_pid();
        let raw = dir.path().join("2023-11-14/raw");
        let series = dir.path().join("2023-11-14/greet");
        std::fs::create_dir_all(&series).unwrap();
        let stale = [
            raw.join(format!(".tmp-{gone_pid}-stream-ThreadId(2)")),
            series.join(format!(".tmp-{gone_pid}-0001-greet.patch")),
        ];
        let live = raw.join(format!(".tmp-{}-abc.eml", std::process::id()));
        for path in stale.iter().chain([&live]) {
            std::fs::write(path, b"Subj").unwrap();
        }
        assert_eq!(a.remove_stale_temp_files().unwrap(), 2);
        assert!(stale.iter().all(|p| !p.exists()));
        assert!(live.exists(), "this process is still writing it");
        assert!(dir.path().join(rel).exists());
        let empty = Archive::new(dir.path().join("none"));
        assert_eq!(empty.remove_stale_temp_files().unwrap(), 0);
    }

    /// The archive is walked for leftovers only when an intake's mark
    /// says it was killed; an intake that ended leaves no mark.
    #[test]
    fn an_intake_cleans_up_only_after_a_killed_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().to_path_buf());
        let gone_pid = crate::testkit::gone_pid();
        let raw = dir.path().join("2023-11-14/raw");
        std::fs::create_dir_all(&raw).unwrap();
        let leftover = raw.join(format!(".tmp-{gone_pid}-abc.eml"));
        std::fs::write(&leftover, b"Subj").unwrap();
        // No mark of a killed intake: not looked for.
        assert_eq!(a.begin_intake().unwrap(), 0);
        assert!(leftover.exists());
        a.end_intake().unwrap();
        let marks = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with("-intake")
                })
                .count()
        };
        assert_eq!(marks(dir.path()), 0, "an intake that ended leaves no mark");
        // The mark of a killed intake: its leftovers and its mark go.
        std::fs::write(dir.path().join(format!(".tmp-{gone_pid}-intake")), b"").unwrap();
        assert_eq!(a.begin_intake().unwrap(), 2);
        assert!(!leftover.exists());
        assert_eq!(marks(dir.path()), 1, "only this intake's own mark");
        a.end_intake().unwrap();
        assert_eq!(marks(dir.path()), 0);
    }

    #[test]
    fn filed_patch_is_the_raw_mail_linked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().to_path_buf());
        let raw = b"From: A <a@x>\nSubject: [PATCH 1/2] Fix it\n\nFrom the start\n---\n";
        let raw_rel = a.store_raw(0, "h1", raw).unwrap();
        let rel = a
            .file_patch("1970-01-01/fix-it", 1, "Fix it!", &raw_rel)
            .unwrap();
        a.flush().unwrap();
        assert_eq!(rel, "1970-01-01/fix-it/0001-fix-it.patch");
        assert_eq!(std::fs::read(dir.path().join(&rel)).unwrap(), raw);
        let eml = dir.path().join("1970-01-01/fix-it/0001-fix-it.eml");
        assert_eq!(std::fs::read(eml).unwrap(), raw);
        let again = a.file_patch("1970-01-01/fix-it", 1, "Fix it!", &raw_rel);
        assert_eq!(again.unwrap(), rel, "filing twice is a no-op");
        assert!(a.file_patch("../evil", 1, "x", &raw_rel).is_err());
        assert!(a.file_patch("x", 1, "x", "/etc/passwd").is_err());
        a.unfile_patch(&rel).unwrap();
        assert!(!dir.path().join(&rel).exists());
        assert!(
            dir.path().join(&raw_rel).exists(),
            "raw mail is never removed"
        );
    }
}
