//! Fetching from remote git repositories with gitoxide: mirroring a
//! repository's branches into a local bare repository (a public-inbox
//! epoch, a project's repository), and fetching one named ref (the branch
//! a `[GIT PULL]` mail asks to pull) under a local ref of the caller's
//! choosing.
//!
//! Knows nothing of the store or the configuration: it takes a URL and
//! paths. It never runs a shell or the `git` program, and every URL it
//! names in an error or a log line has its password removed.

use gix::bstr::ByteSlice;
use gix::refs::transaction::{Change, PreviousValue, RefEdit, RefLog};
use gix::remote::Direction;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The refspec of a mirror: every branch, forced (a rewritten history is
/// taken as the remote has it).
pub const MIRROR_REFSPEC: &str = "+refs/heads/*:refs/heads/*";

/// A transfer that moves less than this many bytes per second for
/// `LOW_SPEED_SECS` is abandoned (`http.lowSpeedLimit`/`http.lowSpeedTime`,
/// used unless the repository's git configuration sets them): a stalled
/// server must not hang a collect forever.
const LOW_SPEED_LIMIT: &str = "1";
const LOW_SPEED_SECS: &str = "60";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url:?} is not a git URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{name:?} is not a valid {what}: {reason}")]
    BadRef {
        name: String,
        what: &'static str,
        reason: String,
    },
    #[error("cannot create the repository {}: {source}", path.display())]
    Init {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("cannot open the repository {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// The remote could not be reached or refused the fetch: the network
    /// or the server, not the input.
    #[error("fetching {refspec} from {url} failed: {reason}")]
    Fetch {
        url: String,
        refspec: String,
        /// gix's message and its causes ("Transport handshake failed: ...:
        /// Received HTTP status 404"), the URL's password masked.
        reason: String,
        #[source]
        source: gix::Error,
    },
    #[error("{url} has no ref {reference:?}")]
    NoSuchRef { url: String, reference: String },
    #[error("{}: cannot update {reference} after fetching from {url}: {source}", repo.display())]
    UpdateRef {
        repo: PathBuf,
        reference: String,
        url: String,
        #[source]
        source: gix::Error,
    },
}

impl Error {
    /// True when the remote side failed (unreachable, refused, broke off);
    /// false for a bad argument or a local repository that cannot be used.
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Fetch { .. } | Error::NoSuchRef { .. })
    }
}

/// What a mirror fetch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorOutcome {
    /// Local branches created or moved.
    pub updated: Vec<String>,
    /// Local branches deleted because the remote no longer has them.
    pub pruned: Vec<String>,
}

/// The ref a [`fetch_ref`] brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRef {
    /// The remote ref that matched, in full (`refs/heads/for-linus`).
    pub remote_ref: String,
    /// What the local ref now points to (for an annotated tag: the tag).
    pub id: gix::ObjectId,
    /// That object peeled to its commit: the tip to check against the one
    /// a pull request names.
    pub commit: gix::ObjectId,
}

/// `url` with its password removed, for errors and logs.
pub fn redacted(url: &str) -> String {
    match gix::url::parse(url.as_bytes().as_bstr()) {
        Ok(mut parsed) if parsed.password().is_some() => {
            parsed.set_password(None);
            parsed.to_bstring().to_string()
        }
        Ok(_) => url.to_owned(),
        // Unparsable: it is only shown up to any `user:password@`.
        Err(_) => match url.rsplit_once('@') {
            Some((_, rest)) => format!("…@{rest}"),
            None => url.to_owned(),
        },
    }
}

/// `error` and its causes on one line, with the password of `url` (if
/// any) masked wherever a message repeats it.
fn explain(error: &gix::Error, url: &str) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = e.source();
    }
    let line = parts.join(": ");
    match gix::url::parse(url.as_bytes().as_bstr())
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(password) if !password.is_empty() => line.replace(&password, "***"),
        _ => line,
    }
}

fn parse_url(url: &str) -> Result<gix::Url, Error> {
    if url.starts_with('-') {
        return Err(Error::BadUrl {
            url: redacted(url),
            reason: "it starts with '-'".into(),
        });
    }
    gix::url::parse(url.as_bytes().as_bstr()).map_err(|e| Error::BadUrl {
        url: redacted(url),
        reason: e.to_string(),
    })
}

/// Opens the bare repository at `path`, creating it when absent.
fn open_or_init_bare(path: &Path) -> Result<gix::Repository, Error> {
    if path.join("HEAD").exists() || path.join(".git").exists() {
        return gix::open(path).map_err(|e| Error::Open {
            path: path.to_owned(),
            source: e,
        });
    }
    std::fs::create_dir_all(path).map_err(|e| Error::Init {
        path: path.to_owned(),
        source: gix::Error::from_error(e),
    })?;
    gix::init_bare(path).map_err(|e| Error::Init {
        path: path.to_owned(),
        source: e,
    })
}

/// Stall limits for HTTP transfers, unless the repository configures them.
fn with_stall_limits(mut repo: gix::Repository) -> gix::Repository {
    use gix::config::tree::{Http, Key};
    let configured = {
        let config = repo.config_snapshot();
        config
            .integer(Http::LOW_SPEED_TIME.logical_name().as_str())
            .is_some()
            || config
                .integer(Http::LOW_SPEED_LIMIT.logical_name().as_str())
                .is_some()
    };
    if !configured {
        let mut config = repo.config_snapshot_mut();
        // Both keys are known to gix and the values valid integers, so
        // these cannot fail; if they ever did, the fetch would merely go
        // without a stall limit.
        let _ = config.set_value(&Http::LOW_SPEED_LIMIT, LOW_SPEED_LIMIT);
        let _ = config.set_value(&Http::LOW_SPEED_TIME, LOW_SPEED_SECS);
    }
    repo
}

/// One fetch with `refspec` from `url` into `repo`, tags not followed.
/// Returns the outcome of gix's fetch (refs already updated, in one
/// transaction whose every edit expects the value the ref had when the
/// fetch began).
fn fetch(
    repo: &gix::Repository,
    url: &str,
    refspec: &str,
    require_match: Option<&str>,
) -> Result<gix::remote::fetch::Outcome, Error> {
    let shown = redacted(url);
    let fail = |source: gix::Error| Error::Fetch {
        url: shown.clone(),
        refspec: refspec.to_owned(),
        reason: explain(&source, url),
        source,
    };
    let remote = repo
        .remote_at(parse_url(url)?)
        .map_err(fail)?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs([refspec], Direction::Fetch)
        .map_err(fail)?;
    let connection = remote.connect(Direction::Fetch).map_err(fail)?;
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(fail)?;
    if let Some(reference) = require_match
        && prepare.ref_map().mappings.is_empty()
    {
        return Err(Error::NoSuchRef {
            url: shown.clone(),
            reference: reference.to_owned(),
        });
    }
    let never = AtomicBool::new(false);
    prepare
        .with_reflog_message(gix::remote::fetch::RefLogMessage::Override {
            message: format!("patchline: fetch {shown}").into(),
        })
        .receive(gix::progress::Discard, &never)
        .map_err(fail)
}

/// Mirrors the branches of the repository at `url` into the bare
/// repository `dest` (made when absent): every remote branch is created or
/// moved (forced: a rewritten branch is taken as rewritten), every local
/// branch the remote no longer has is deleted. Refs outside `refs/heads/`
/// are never touched. Each ref update (and the pruning) is one
/// transaction that expects each ref's previous value, so a concurrent
/// writer makes it fail rather than be overwritten.
pub fn mirror(url: &str, dest: &Path) -> Result<MirrorOutcome, Error> {
    let repo = with_stall_limits(open_or_init_bare(dest)?);
    tracing::debug!(url = %redacted(url), dest = %dest.display(), "mirror fetch");
    let outcome = fetch(&repo, url, MIRROR_REFSPEC, None)?;
    let update_refs = match &outcome.status {
        gix::remote::fetch::Status::NoPackReceived { update_refs, .. }
        | gix::remote::fetch::Status::Change { update_refs, .. } => update_refs,
    };
    let mut result = MirrorOutcome {
        updated: update_refs
            .edits
            .iter()
            .map(|e| e.name.as_bstr().to_string())
            .collect(),
        pruned: Vec::new(),
    };
    let remote_branches: std::collections::HashSet<String> = outcome
        .ref_map
        .remote_refs
        .iter()
        .map(|r| r.unpack().0.to_string())
        .filter(|name| name.starts_with("refs/heads/"))
        .collect();
    let fail = |source: gix::Error| Error::UpdateRef {
        repo: dest.to_owned(),
        reference: "refs/heads/*".into(),
        url: redacted(url),
        source,
    };
    let mut prune = Vec::new();
    let references = repo.references().map_err(fail)?;
    for reference in references.prefixed("refs/heads/").map_err(fail)? {
        let reference = reference.map_err(fail)?;
        let name = reference.name().as_bstr().to_string();
        if remote_branches.contains(&name) {
            continue;
        }
        if let Some(id) = reference.target().try_id() {
            prune.push(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::MustExistAndMatch(gix::refs::Target::Object(
                        id.to_owned(),
                    )),
                    log: RefLog::AndReference,
                },
                name: reference.name().to_owned(),
                deref: false,
            });
            result.pruned.push(name);
        }
    }
    if !prune.is_empty() {
        repo.edit_references(prune).map_err(fail)?;
    }
    Ok(result)
}

/// Fetches the ref `remote_ref` (a branch or tag name, or a full ref such
/// as `refs/heads/for-linus`, matched as `git fetch` matches it) from `url`
/// into the existing repository `repo`, stored as `local_ref` (a full ref
/// name, e.g. `refs/patchline/pull/42`; replaced if it exists), and
/// returns what it points to. Tags are not followed and no other ref of
/// `repo` changes.
pub fn fetch_ref(
    repo: &Path,
    url: &str,
    remote_ref: &str,
    local_ref: &str,
) -> Result<FetchedRef, Error> {
    let bad_ref = |name: &str, what, reason: String| Error::BadRef {
        name: name.to_owned(),
        what,
        reason,
    };
    if remote_ref.starts_with('-') || remote_ref.contains(':') {
        return Err(bad_ref(
            remote_ref,
            "remote ref",
            "starts with '-' or holds ':'".into(),
        ));
    }
    let partial: Result<&gix::refs::PartialNameRef, _> = remote_ref.try_into();
    if let Err(e) = partial {
        return Err(bad_ref(remote_ref, "remote ref", e.to_string()));
    }
    let local: gix::refs::FullName =
        local_ref
            .try_into()
            .map_err(|e: gix::validate::reference::name::Error| {
                bad_ref(local_ref, "local ref", e.to_string())
            })?;
    if !local_ref.starts_with("refs/") {
        return Err(bad_ref(
            local_ref,
            "local ref",
            "it must start with refs/".into(),
        ));
    }
    let repository = with_stall_limits(gix::open(repo).map_err(|e| Error::Open {
        path: repo.to_owned(),
        source: e,
    })?);
    let refspec = format!("+{remote_ref}:{local_ref}");
    tracing::debug!(url = %redacted(url), %refspec, repo = %repo.display(), "fetch ref");
    let outcome = fetch(&repository, url, &refspec, Some(remote_ref))?;
    let matched = outcome
        .ref_map
        .mappings
        .iter()
        .find_map(|m| match &m.remote {
            gix::protocol::fetch::refmap::Source::Ref(r) => Some(r.unpack().0.to_string()),
            gix::protocol::fetch::refmap::Source::ObjectId(_) => None,
        })
        .unwrap_or_else(|| remote_ref.to_owned());
    let fail = |source: gix::Error| Error::UpdateRef {
        repo: repo.to_owned(),
        reference: local_ref.to_owned(),
        url: redacted(url),
        source,
    };
    let mut reference = repository.find_reference(local.as_ref()).map_err(fail)?;
    let id = reference
        .target()
        .try_id()
        .map(ToOwned::to_owned)
        .ok_or_else(|| {
            fail(gix::Error::from_error(std::io::Error::other(
                "it is symbolic",
            )))
        })?;
    let commit = reference.peel_to_commit().map_err(fail)?.id;
    Ok(FetchedRef {
        remote_ref: matched,
        id,
        commit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::git;
    use std::process::{Child, Command, Stdio};

    /// `git daemon` serving every repository under `base` on 127.0.0.1 at a
    /// port chosen at run time; stopped when dropped.
    struct GitDaemon {
        child: Child,
        port: u16,
    }

    impl GitDaemon {
        fn start(base: &Path) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // `git-daemon` itself, not `git daemon`: killing the `git`
            // wrapper would leave the daemon running, orphaned.
            let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
            let exec_path = String::from_utf8(exec_path.stdout).unwrap();
            let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
                .arg("--reuseaddr")
                .arg("--export-all")
                .arg("--informative-errors")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon runs");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "git daemon never listened on {port}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Self { child, port }
        }

        fn url(&self, repo: &str) -> String {
            format!("git://127.0.0.1:{}/{repo}", self.port)
        }
    }

    impl Drop for GitDaemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn commit(work: &Path, file: &str, text: &str) -> String {
        std::fs::write(work.join(file), text).unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", text]);
        rev(work, "HEAD")
    }

    fn rev(repo: &Path, what: &str) -> String {
        String::from_utf8(git(repo, &["rev-parse", what]))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `git for-each-ref` of `prefix`: name and id, one a line.
    fn refs(repo: &Path, prefix: &str) -> String {
        String::from_utf8(git(
            repo,
            &["for-each-ref", "--format=%(refname) %(objectname)", prefix],
        ))
        .unwrap()
    }

    /// A repository with branches `master` and `topic` (one commit past
    /// master) and an annotated tag `v1` on topic.
    fn upstream(base: &Path) -> PathBuf {
        let work = base.join("up");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        commit(&work, "a", "one");
        git(&work, &["checkout", "-q", "-b", "topic"]);
        commit(&work, "a", "two");
        git(&work, &["tag", "-a", "-m", "v1", "v1"]);
        git(&work, &["checkout", "-q", "master"]);
        work
    }

    #[test]
    fn a_mirror_follows_the_remote_branches_and_touches_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(dir.path());
        let daemon = GitDaemon::start(dir.path());
        let dest = dir.path().join("mirror/0.git");
        let out = mirror(&daemon.url("up"), &dest).unwrap();
        assert_eq!(refs(&dest, "refs/heads/"), refs(&up, "refs/heads/"));
        assert_eq!(out.updated.len(), 2, "{out:?}");
        assert!(
            refs(&dest, "refs/tags/").is_empty(),
            "tags are not mirrored"
        );
        // Nothing new: nothing moves.
        let again = mirror(&daemon.url("up"), &dest).unwrap();
        assert_eq!(refs(&dest, "refs/heads/"), refs(&up, "refs/heads/"));
        assert!(again.pruned.is_empty(), "{again:?}");
        // master rewritten (force-pushed), topic deleted, a new branch: the
        // mirror follows; a ref outside refs/heads stays.
        git(&dest, &["update-ref", "refs/keep/x", &rev(&up, "topic")]);
        git(&up, &["checkout", "-q", "--orphan", "fresh"]);
        commit(&up, "b", "rewritten");
        git(&up, &["branch", "-q", "-f", "master", "fresh"]);
        git(&up, &["checkout", "-q", "master"]);
        git(&up, &["branch", "-q", "-D", "topic", "fresh"]);
        git(&up, &["branch", "-q", "new"]);
        let out = mirror(&daemon.url("up"), &dest).unwrap();
        assert_eq!(refs(&dest, "refs/heads/"), refs(&up, "refs/heads/"));
        assert_eq!(out.pruned, ["refs/heads/topic"]);
        assert!(!refs(&dest, "refs/keep/").is_empty());
        // The fetched objects are complete: git itself reads the history.
        git(&dest, &["fsck", "--no-dangling"]);
        // A file:// URL mirrors the same.
        let file_dest = dir.path().join("file-mirror.git");
        mirror(&format!("file://{}", up.display()), &file_dest).unwrap();
        assert_eq!(refs(&file_dest, "refs/heads/"), refs(&up, "refs/heads/"));
    }

    #[test]
    fn fetch_ref_brings_one_branch_or_tag_under_the_chosen_ref() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(dir.path());
        let daemon = GitDaemon::start(dir.path());
        let local = dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        git(&local, &["init", "-q"]);
        commit(&local, "c", "local work");
        let before = refs(&local, "refs/");
        let got = fetch_ref(&local, &daemon.url("up"), "topic", "refs/patchline/pull/1").unwrap();
        assert_eq!(got.remote_ref, "refs/heads/topic");
        assert_eq!(got.commit.to_string(), rev(&up, "topic"));
        assert_eq!(got.id, got.commit);
        assert_eq!(rev(&local, "refs/patchline/pull/1"), rev(&up, "topic"));
        // Nothing else changed: no tag followed, no branch moved.
        let after = refs(&local, "refs/");
        assert_eq!(
            after.lines().filter(|l| !before.contains(l)).count(),
            1,
            "{after}"
        );
        // A full ref name, an annotated tag: the id is the tag, the commit
        // what it points to.
        let tag = fetch_ref(
            &local,
            &daemon.url("up"),
            "refs/tags/v1",
            "refs/patchline/pull/2",
        )
        .unwrap();
        assert_eq!(tag.id.to_string(), rev(&up, "v1"));
        assert_eq!(tag.commit.to_string(), rev(&up, "v1^{commit}"));
        // The branch moves upstream: fetching again replaces the local ref.
        git(&up, &["checkout", "-q", "topic"]);
        let tip = commit(&up, "a", "three");
        let got = fetch_ref(&local, &daemon.url("up"), "topic", "refs/patchline/pull/1").unwrap();
        assert_eq!(got.commit.to_string(), tip);
    }

    #[test]
    fn failures_name_the_url_and_the_ref_and_hide_the_password() {
        let dir = tempfile::tempdir().unwrap();
        upstream(dir.path());
        let daemon = GitDaemon::start(dir.path());
        let local = dir.path().join("local.git");
        git(dir.path(), &["init", "-q", "--bare", "local.git"]);
        let e = fetch_ref(&local, &daemon.url("up"), "no-such-branch", "refs/pull/x").unwrap_err();
        assert!(matches!(e, Error::NoSuchRef { .. }), "{e}");
        assert!(
            e.to_string().contains("no-such-branch") && e.to_string().contains(&daemon.url("up")),
            "{e}"
        );
        let e = fetch_ref(&local, &daemon.url("up"), "topic", "not-full").unwrap_err();
        assert!(matches!(e, Error::BadRef { .. }), "{e}");
        let e = fetch_ref(&local, &daemon.url("up"), "--upload-pack=x", "refs/x").unwrap_err();
        assert!(matches!(e, Error::BadRef { .. }), "{e}");
        let e = mirror("-oProxyCommand=x", &dir.path().join("m.git")).unwrap_err();
        assert!(matches!(e, Error::BadUrl { .. }), "{e}");
        // Nobody listens on the port any more.
        let gone = daemon.url("up").replace("git://", "http://user:s3cret@");
        drop(daemon);
        let e = mirror(&gone, &dir.path().join("m.git")).unwrap_err();
        assert!(e.is_remote(), "{e}");
        let text = format!("{e} {e:?}");
        assert!(text.contains("http://user@127.0.0.1:"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        // A stalled transfer is given up (unless git's config says
        // otherwise).
        let repo = with_stall_limits(gix::open(&local).unwrap());
        assert_eq!(
            repo.config_snapshot().integer("http.lowSpeedTime"),
            Some(60)
        );
        assert_eq!(
            repo.config_snapshot().integer("http.lowSpeedLimit"),
            Some(1)
        );
        assert_eq!(
            redacted("https://u:p@example.org/x"),
            "https://u@example.org/x"
        );
        assert_eq!(redacted("https://example.org/x"), "https://example.org/x");
    }
}
