//! Pull requests in the apply stage: each kept `[GIT PULL]`/`[PULL]`
//! request mail of the run's repositories is routed like a patch, its
//! `git request-pull` text read, its URL checked against the repository's
//! allow-list (`pull_urls`; none by default, since anyone can post to a
//! list), the named ref fetched with gitoxide into
//! `refs/patchline/pulls/<mail id>`, and the requested commits brought
//! onto the branch with their ids: fast-forward, or a merge commit with
//! the request's summary (`pull = "merge"`, the default; `"ff-only"`
//! refuses instead). A fetched tip other than the "up to" commit the mail
//! names is refused, changing nothing.
//!
//! Each request ends `landed` or `refused`, both final. A run killed
//! anywhere resumes: the fetch is repeated, and a branch that already has
//! the commits makes it `landed` ("already there"), never twice.

use crate::config::{Config, PullLanding};
use crate::gitfetch;
use crate::mail::pull::parse_request_pull;
use crate::patch::apply::Identity;
use crate::patch::pull::{Landed, PullMode, land_pull, merge_message};
use crate::store::{PendingPull, PullState, Store};
use serde::{Deserialize, Serialize};

/// One request's outcome, as the report and `status --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PullOutcome {
    pub message_id: String,
    pub subject: String,
    pub from: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub url: Option<String>,
    pub reference: Option<String>,
    /// The commit the mail says the request goes up to.
    pub up_to: Option<String>,
    pub state: PullState,
    /// `fast-forward`, `merge`, `already there`, or `as a series` (a
    /// `[PULL 00/N]` cover without a URL, whose patches were applied as a
    /// series).
    pub landed: Option<String>,
    pub merge_commit: Option<String>,
    pub old_tip: Option<String>,
    pub new_tip: Option<String>,
    /// The requested commits the branch did not have, newest first.
    pub commits: Vec<String>,
    /// Why it was refused, for the sender.
    pub error: Option<String>,
}

/// `PullOutcome::landed` of a `[PULL 00/N]` cover whose patches were a
/// series.
pub const AS_SERIES: &str = "as a series";

/// Whether `url` is under one of `prefixes`: a prefix ends at a `/` (or
/// the URL ends with it), so `https://git.example.org` does not admit
/// `https://git.example.org.evil.test/`.
pub fn allowed(url: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        url.strip_prefix(p.as_str())
            .is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    })
}

/// Deals with every pending pull request of `repos` (empty: of every
/// repository); a request of another repository waits for a run that
/// covers it.
pub fn apply_pulls(
    store: &mut Store,
    config: &Config,
    run: i64,
    repos: &[String],
    committer: &dyn Fn(&std::path::Path) -> Identity,
) -> Result<Vec<PullOutcome>, crate::store::Error> {
    let rules = config.route_rules().unwrap_or_default();
    let mut outcomes = Vec::new();
    for pending in store.pending_pulls()? {
        let (repo, branch) = config.resolve_route(
            &rules,
            pending.fields.repo.as_deref(),
            pending.fields.branch.as_deref(),
            pending.list_id.as_deref(),
            &pending.fields.tags,
        );
        if !repos.is_empty() && !repo.as_ref().is_some_and(|r| repos.contains(r)) {
            continue;
        }
        let _span = tracing::info_span!("pull", run, mail = %pending.message_id).entered();
        let mut outcome = PullOutcome {
            message_id: pending.message_id.clone(),
            subject: pending.subject.clone(),
            from: pending.from_email.clone(),
            repo,
            branch,
            ..PullOutcome::default()
        };
        let state = match land_one(config, &pending, committer, &mut outcome) {
            Ok(()) if outcome.landed.as_deref() == Some(AS_SERIES) => PullState::AsSeries,
            Ok(()) => PullState::Landed,
            Err(why) => {
                tracing::warn!("pull request {} refused: {why}", pending.message_id);
                outcome.error = Some(why);
                PullState::Refused
            }
        };
        outcome.state = state;
        let moved = match (&outcome.repo, &outcome.branch, &outcome.new_tip) {
            (Some(repo), Some(branch), Some(tip)) if !outcome.commits.is_empty() => {
                Some((repo.as_str(), branch.as_str(), tip.as_str()))
            }
            _ => None,
        };
        store.record_pull(pending.mail_id, run, state, moved, &outcome)?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Lands one request; `Err` is the sentence the report gives the sender.
fn land_one(
    config: &Config,
    pending: &PendingPull,
    committer: &dyn Fn(&std::path::Path) -> Identity,
    outcome: &mut PullOutcome,
) -> Result<(), String> {
    let Some(repo_name) = outcome.repo.clone() else {
        return Err(
            "no repository: the subject names none and no route of the config matches".into(),
        );
    };
    let Some(repo) = config.repos.iter().find(|r| r.name == repo_name) else {
        return Err(format!(
            "repository {repo_name:?} is not in the configuration"
        ));
    };
    let branch = outcome.branch.clone().unwrap_or_else(|| "master".into());
    if !repo.branches.contains(&branch) {
        return Err(format!(
            "branch {branch:?} is unknown: {repo_name}'s branches are {}",
            repo.branches.join(", ")
        ));
    }
    let body = crate::stage::archived_body(config, &pending.raw_path)?;
    let request = match parse_request_pull(&body) {
        Ok(request) => request,
        // A QEMU-style cover of patches that carries no URL: its patches
        // are a series the apply stage took.
        Err(crate::mail::pull::Error::NoRequest)
            if pending.fields.index == Some(0) && pending.fields.total.is_some_and(|t| t > 0) =>
        {
            outcome.landed = Some(AS_SERIES.to_owned());
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    outcome.url = Some(gitfetch::redacted(&request.url));
    outcome.reference = request.reference.clone();
    outcome.up_to = Some(request.up_to.clone());
    if !allowed(&request.url, &repo.pull_urls) {
        return Err(format!(
            "pull requests from {} are not allowed for {repo_name} (its `pull_urls` are {}); nothing was fetched",
            gitfetch::redacted(&request.url),
            match repo.pull_urls.as_slice() {
                [] => "empty".to_owned(),
                urls => urls.join(", "),
            }
        ));
    }
    let repo_path = config.repo_path(repo);
    let reference = request.reference.as_deref().unwrap_or("HEAD");
    let local = format!("refs/patchline/pulls/{}", pending.mail_id);
    let fetched =
        gitfetch::fetch_ref(&repo_path, &request.url, reference, &local).map_err(|e| {
            format!(
                "cannot fetch {reference} from {}: {e}",
                gitfetch::redacted(&request.url)
            )
        })?;
    let message = merge_message(&request.url, request.reference.as_deref(), &request.summary);
    let mode = match repo.pull {
        PullLanding::Merge => PullMode::Merge,
        PullLanding::FfOnly => PullMode::FfOnly,
    };
    let landed = land_pull(
        &repo_path,
        &branch,
        &request.up_to,
        &fetched.commit.to_string(),
        &message,
        &committer(&repo_path),
        mode,
    )
    .map_err(|e| e.to_string())?
    .map_err(|refusal| refusal.to_string())?;
    outcome.old_tip = Some(landed.old_tip);
    outcome.new_tip = Some(landed.new_tip);
    outcome.commits = landed.commits;
    outcome.landed = Some(
        match &landed.landed {
            Landed::FastForward => "fast-forward",
            Landed::Merge(_) => "merge",
            Landed::AlreadyThere => "already there",
        }
        .to_owned(),
    );
    if let Landed::Merge(id) = landed.landed {
        outcome.merge_commit = Some(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_is_by_prefix_ending_at_a_slash() {
        let list = vec![
            "https://git.kernel.org/pub/scm/".to_owned(),
            "git://git.example.org".to_owned(),
        ];
        for (url, ok) in [
            ("https://git.kernel.org/pub/scm/linux/kvm.git", true),
            ("https://git.kernel.org/pub/other.git", false),
            ("git://git.example.org/qemu.git", true),
            ("git://git.example.org", true),
            ("git://git.example.org.evil.test/qemu.git", false),
            ("http://git.kernel.org/pub/scm/linux/kvm.git", false),
        ] {
            assert_eq!(allowed(url, &list), ok, "{url}");
        }
        assert!(!allowed("https://x/y.git", &[]));
    }
}
