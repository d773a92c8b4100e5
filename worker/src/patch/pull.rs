//! A pull request's commits onto a branch, with the same ids: a
//! fast-forward when the branch is an ancestor of the requested tip, else
//! (when allowed) a merge commit whose message is the request's summary.
//!
//! The caller fetched the requested ref first; this checks the fetched tip
//! is the commit the mail names ("up to"), so a moved branch is refused
//! without changing anything. The branch moves by one compare-and-swap.

use super::apply::{Error, Identity, update_branch};
use gix::ObjectId;
use gix::bstr::BString;
use std::path::Path;

/// How a pull request may land (`[[repos]] pull = "merge" | "ff-only"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullMode {
    #[default]
    Merge,
    FfOnly,
}

/// How it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    FastForward,
    /// The merge commit made.
    Merge(String),
    /// The branch holds the requested tip already: nothing moved.
    AlreadyThere,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    pub old_tip: String,
    pub new_tip: String,
    pub landed: Landed,
    /// The requested commits the branch did not have, newest first.
    pub commits: Vec<String>,
}

/// Why a pull request was not taken; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the requested ref is at {fetched}, not at {up_to} as the request says: it moved since the request was sent (send a new request)"
    )]
    Moved { up_to: String, fetched: String },
    #[error(
        "{branch:?} has commits the request does not have, and this repository takes pull requests by fast-forward only (`pull = \"ff-only\"`): rebase the request on {tip}"
    )]
    NotFastForward { branch: String, tip: String },
    #[error("merging it into {branch:?} conflicts in {}", files.join(", "))]
    Conflicts { branch: String, files: Vec<String> },
}

/// Brings `up_to` (already fetched; `fetched` is what the ref pointed at)
/// onto `branch`. `message` is the merge commit's message if one is made.
pub fn land_pull(
    repo_path: &Path,
    branch: &str,
    up_to: &str,
    fetched: &str,
    message: &str,
    committer: &Identity,
    mode: PullMode,
) -> Result<Result<PullOutcome, Refusal>, Error> {
    if !fetched.eq_ignore_ascii_case(up_to) {
        return Ok(Err(Refusal::Moved {
            up_to: up_to.to_owned(),
            fetched: fetched.to_owned(),
        }));
    }
    let repo = super::apply::open(repo_path)?;
    let id = |hex: &str| {
        ObjectId::from_hex(hex.as_bytes()).map_err(|e| Error::BadObjectId {
            path: repo_path.to_owned(),
            id: hex.to_owned(),
            source: e,
        })
    };
    let theirs = id(up_to)?;
    let old = super::apply::branch_tip(repo_path, branch)?.ok_or_else(|| Error::NoBranch {
        path: repo_path.to_owned(),
        branch: branch.to_owned(),
    })?;
    let ours = id(&old)?;
    let git = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| Error::Git {
        path: repo_path.to_owned(),
        what: what.to_owned().into(),
        source: e,
    };
    let commits: Vec<String> = repo
        .rev_walk([theirs])
        .with_hidden([ours])
        .all()
        .map_err(|e| git("walk the requested commits", e.into()))?
        .map(|info| info.map(|i| i.id.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| git("walk the requested commits", e.into()))?;
    let outcome = |new_tip: String, landed| PullOutcome {
        old_tip: old.clone(),
        new_tip,
        landed,
        commits: commits.clone(),
    };
    if commits.is_empty() {
        return Ok(Ok(outcome(old.clone(), Landed::AlreadyThere)));
    }
    let options = repo
        .tree_merge_options()
        .map_err(|e| git("read the tree merge options", e.into()))?;
    let labels = gix::merge::blob::builtin_driver::text::Labels {
        ancestor: None,
        current: None,
        other: None,
    };
    let mut merge = repo
        .merge_commits(ours, theirs, labels, options.into())
        .map_err(|e| git("merge the requested commits", e.into()))?;
    let fast_forward = merge
        .merge_bases
        .as_ref()
        .is_some_and(|bases| bases.iter().any(|b| *b == ours));
    let reflog = format!("pull: {}", message.lines().next().unwrap_or_default());
    if fast_forward {
        update_branch(repo_path, branch, &old, up_to, &reflog)?;
        return Ok(Ok(outcome(up_to.to_owned(), Landed::FastForward)));
    }
    if mode == PullMode::FfOnly {
        return Ok(Err(Refusal::NotFastForward {
            branch: branch.to_owned(),
            tip: old.clone(),
        }));
    }
    if merge
        .tree_merge
        .has_unresolved_conflicts(gix::merge::tree::TreatAsUnresolved::git())
    {
        return Ok(Err(Refusal::Conflicts {
            branch: branch.to_owned(),
            files: super::apply::unresolved_files(&merge.tree_merge),
        }));
    }
    let tree = merge
        .tree_merge
        .tree
        .write()
        .map_err(|e| git("write the merged tree", e.into()))?
        .detach();
    let signature = gix::actor::Signature {
        name: BString::from(committer.name.as_str()),
        email: BString::from(committer.email.as_str()),
        time: gix::date::Time::new(committer.time.0, committer.time.1),
    };
    let commit = gix::objs::Commit {
        tree,
        parents: [ours, theirs].into_iter().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: BString::from(message),
        extra_headers: Vec::new(),
    };
    let made = repo
        .write_object(&commit)
        .map_err(|e| git("write the merge commit", e.into()))?
        .detach()
        .to_string();
    update_branch(repo_path, branch, &old, &made, &reflog)?;
    Ok(Ok(outcome(made.clone(), Landed::Merge(made))))
}

/// The merge commit's message, as `git pull` writes it for a request
/// (`Merge tag 'x' of URL`), with the request's summary as its body.
pub fn merge_message(url: &str, reference: Option<&str>, summary: &str) -> String {
    let what = match reference {
        Some(r) => match r.strip_prefix("tags/").or(r.strip_prefix("refs/tags/")) {
            Some(tag) => format!("tag '{tag}'"),
            None => format!("branch '{}'", r.strip_prefix("refs/heads/").unwrap_or(r)),
        },
        None => "HEAD".to_owned(),
    };
    let mut message = format!("Merge {what} of {url}\n");
    if !summary.trim().is_empty() {
        message.push('\n');
        message.push_str(summary.trim_end());
        message.push('\n');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::git;

    fn text(dir: &Path, args: &[&str]) -> String {
        String::from_utf8(git(dir, args)).unwrap().trim().to_owned()
    }

    fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
        std::fs::write(dir.join(file), content).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", message]);
        text(dir, &["rev-parse", "HEAD"])
    }

    fn committer() -> Identity {
        Identity {
            name: "Patchline".into(),
            email: "patchline@example.org".into(),
            time: (1_700_000_000, 0),
        }
    }

    /// Fast-forward, merge (tree as `git merge` makes it), fast-forward
    /// only, a moved tip, a conflict, and a request already merged.
    #[test]
    fn a_pull_lands_as_git_would_or_is_refused_changing_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().join("w");
        std::fs::create_dir(&w).unwrap();
        git(&w, &["init", "-q", "-b", "master"]);
        let lines: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let base = commit(&w, "f", &lines, "base");
        git(&w, &["checkout", "-q", "-b", "topic"]);
        commit(&w, "f", &lines.replace("3\n", "three\n"), "three");
        let up_to = commit(&w, "g", "g\n", "add g");
        let bare = |name: &str| {
            let p = tmp.path().join(name);
            git(
                tmp.path(),
                &[
                    "clone",
                    "-q",
                    "--bare",
                    w.to_str().unwrap(),
                    p.to_str().unwrap(),
                ],
            );
            p
        };
        let land = |repo: &Path, mode| {
            land_pull(
                repo,
                "master",
                &up_to,
                &up_to,
                "Merge it\n",
                &committer(),
                mode,
            )
            .unwrap()
        };

        // The branch has not moved: a fast-forward, same ids.
        let ff = bare("ff.git");
        let out = land(&ff, PullMode::FfOnly).unwrap();
        assert_eq!(out.landed, Landed::FastForward);
        assert_eq!(out.commits.len(), 2);
        assert_eq!(text(&ff, &["rev-parse", "master"]), up_to);
        // Again: already there.
        assert_eq!(
            land(&ff, PullMode::Merge).unwrap().landed,
            Landed::AlreadyThere
        );

        // The branch moved on: a merge commit, or a refusal with ff-only.
        git(&w, &["checkout", "-q", "master"]);
        let moved = commit(&w, "f", &lines.replace("18\n", "eighteen\n"), "eighteen");
        let merged = bare("merge.git");
        let refused = land(&merged, PullMode::FfOnly).unwrap_err();
        assert!(
            matches!(refused, Refusal::NotFastForward { .. }),
            "{refused}"
        );
        assert_eq!(text(&merged, &["rev-parse", "master"]), moved);
        let out = land(&merged, PullMode::Merge).unwrap();
        let Landed::Merge(made) = &out.landed else {
            panic!("{out:?}")
        };
        assert_eq!(text(&merged, &["rev-parse", "master"]), *made);
        assert_eq!(text(&merged, &["rev-parse", "master^1"]), moved);
        assert_eq!(text(&merged, &["rev-parse", "master^2"]), up_to);
        assert_eq!(
            text(&merged, &["log", "-1", "--format=%B", "master"]),
            "Merge it"
        );
        git(&w, &["merge", "-q", "--no-edit", "topic"]);
        assert_eq!(
            text(&merged, &["rev-parse", "master^{tree}"]),
            text(&w, &["rev-parse", "HEAD^{tree}"]),
            "the tree git merge makes"
        );
        git(&merged, &["fsck", "--strict"]);

        // The fetched ref is not the commit the mail names.
        let stale = bare("stale.git");
        let before = text(&stale, &["rev-parse", "master"]);
        let refused = land_pull(
            &stale,
            "master",
            &base,
            &up_to,
            "m",
            &committer(),
            PullMode::Merge,
        )
        .unwrap()
        .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("moved since the request was sent"),
            "{refused}"
        );
        assert_eq!(text(&stale, &["rev-parse", "master"]), before);

        // Both sides changed the same line.
        git(&w, &["reset", "-q", "--hard", &moved]);
        let clash = commit(
            &w,
            "f",
            &lines.replace("3\n", "drei\n").replace("18\n", "eighteen\n"),
            "drei",
        );
        let conflict = bare("conflict.git");
        let refused = land(&conflict, PullMode::Merge).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Conflicts {
                branch: "master".into(),
                files: vec!["f".into()]
            }
        );
        assert_eq!(text(&conflict, &["rev-parse", "master"]), clash);
    }

    #[test]
    fn merge_messages_as_git_pull_writes_them() {
        assert_eq!(
            merge_message("git://h/r.git", Some("tags/fixes-1"), "Fixes.\n\n- one\n"),
            "Merge tag 'fixes-1' of git://h/r.git\n\nFixes.\n\n- one\n"
        );
        assert_eq!(
            merge_message("https://h/r.git", Some("for-next"), ""),
            "Merge branch 'for-next' of https://h/r.git\n"
        );
        assert_eq!(
            merge_message("https://h/r.git", None, ""),
            "Merge HEAD of https://h/r.git\n"
        );
    }
}
