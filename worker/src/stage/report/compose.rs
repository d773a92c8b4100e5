//! What the maintainers read: the reports of a run, composed from what the
//! stages recorded. Pure: facts in, messages out (snapshot-tested).
//!
//! One run report to the list, specific to the stage that failed; and for
//! each series that did not apply, a reply in that series' thread to its
//! author, naming the patch, the file and the hunk.

use crate::checks::TestState;
use crate::config;
use crate::stage::apply::{ApplySummary, SeriesOutcome};
use crate::stage::build::{BuildState, BuildSummary, TargetBuild};
use crate::stage::collect::CollectSummary;
use crate::stage::publish::PublishSummary;
use crate::stage::test::TestSummary;
use crate::store::{RunRow, SeriesState, StageRow};

use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything a report may say about a run.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub run: Option<RunRow>,
    pub stages: Vec<StageRow>,
    pub collect: Option<CollectSummary>,
    pub apply: Option<ApplySummary>,
    pub build: Option<BuildSummary>,
    pub publish: Option<PublishSummary>,
    pub test: Option<TestSummary>,
    /// Per series key: the thread a reply about it belongs to.
    pub threads: BTreeMap<String, Thread>,
    /// Per `repo/branch/target`: the last lines of a failed build's log and
    /// where the whole log is.
    pub build_logs: BTreeMap<String, LogTail>,
    /// Per configured repository: its branches (advice names them).
    pub branches: BTreeMap<String, Vec<String>>,
    /// Per configured repository: which series get a reply (absent: all).
    pub replies: BTreeMap<String, Vec<crate::config::ReplyKind>>,
    /// Per series key: its other versions, as the store knows them.
    pub versions: BTreeMap<String, crate::store::VersionFacts>,
    /// Reply keys composed in earlier runs (held and superseded replies
    /// go out once).
    pub replied: std::collections::BTreeSet<String>,
    /// `intake.incomplete_deadline_hours`, in seconds.
    pub incomplete_deadline: i64,
}

/// The mail thread of a series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thread {
    /// The cover letter's Message-ID, else the first patch's (no `<>`).
    pub root: String,
    /// The root's own `References`, oldest first.
    pub references: Vec<String>,
    /// `Name <address>` of the series' author.
    pub author: Option<String>,
    /// Subject of the thread's root, for `Re:`.
    pub subject: String,
    /// Per patch index: its cleaned title and sender.
    pub patches: BTreeMap<u32, PatchLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchLine {
    pub title: String,
    pub message_id: String,
    /// The archived `.patch` file (matches `SeriesOutcome::failed_patch`).
    pub archive_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    pub lines: Vec<String>,
    /// URL (or path) of the whole log.
    pub link: String,
}

pub use crate::notify::Report;

/// A titled block of lines; text and HTML are rendered from the same
/// sections so they never say different things.
struct Section {
    title: String,
    lines: Vec<Line>,
}

enum Line {
    Text(String),
    /// Verbatim (log and diff excerpts): indented in text, `<pre>` in HTML.
    Quote(Vec<String>),
}

fn section(title: impl Into<String>) -> Section {
    Section {
        title: title.into(),
        lines: Vec::new(),
    }
}

impl Section {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(Line::Text(s.into()));
    }
    fn quote(&mut self, lines: Vec<String>) {
        if !lines.is_empty() {
            self.lines.push(Line::Quote(lines));
        }
    }
}

fn render_text(intro: &str, sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str(intro);
    out.push('\n');
    for s in sections {
        let _ = write!(out, "\n{}\n", s.title);
        for line in &s.lines {
            match line {
                Line::Text(t) => {
                    let _ = writeln!(out, "  {t}");
                }
                Line::Quote(lines) => {
                    for l in lines {
                        let _ = writeln!(out, "    | {l}");
                    }
                }
            }
        }
    }
    out.push_str("\n-- \npatchline, mailing list to RPM repository\n");
    out
}

fn render_html(intro: &str, sections: &[Section]) -> String {
    let e = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body style=\"font-family: sans-serif\">\n",
    );
    let _ = writeln!(out, "<p>{}</p>", e(intro));
    for s in sections {
        let _ = writeln!(out, "<h3>{}</h3>\n<ul>", e(&s.title));
        for line in &s.lines {
            match line {
                Line::Text(t) => {
                    let _ = writeln!(out, "<li>{}</li>", e(t));
                }
                Line::Quote(lines) => {
                    let _ = writeln!(out, "<pre>{}</pre>", e(&lines.join("\n")));
                }
            }
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn where_(repo: &Option<String>, branch: &Option<String>) -> String {
    match (repo, branch) {
        (Some(r), Some(b)) => format!("{r}/{b}"),
        (Some(r), None) => r.clone(),
        _ => "no repository".into(),
    }
}

fn series_name(s: &SeriesOutcome) -> String {
    if s.version > 1 {
        format!("\"{}\" v{}", s.title, s.version)
    } else {
        format!("\"{}\"", s.title)
    }
}

fn log_key(b: &TargetBuild) -> String {
    format!("{}/{}/{}", b.repo, b.branch, b.target)
}

/// The stages that failed, in order, with their error.
fn failed_stages(facts: &Facts) -> Vec<&StageRow> {
    facts
        .stages
        .iter()
        .filter(|s| s.state == crate::store::StageState::Failed)
        .collect()
}

/// Composes every report of the run.
pub fn compose(facts: &Facts, cfg: &config::Report) -> Vec<Report> {
    let mut reports = Vec::new();
    if let Some(run) = run_report(facts, cfg) {
        reports.push(run);
    }
    use crate::config::ReplyKind;
    let wants = |repo: &Option<String>, kind: ReplyKind| {
        repo.as_ref()
            .and_then(|r| facts.replies.get(r))
            .is_none_or(|kinds| kinds.contains(&kind))
    };
    if let Some(apply) = &facts.apply {
        for s in apply.series.iter() {
            if s.is(SeriesState::Failed) && wants(&s.repo, ReplyKind::Failed) {
                reports.push(series_failure(facts, cfg, s));
            } else if s.is(SeriesState::Applied) && wants(&s.repo, ReplyKind::Applied) {
                reports.push(series_applied(facts, cfg, s));
            }
        }
    }
    if let Some(collect) = &facts.collect {
        for line in &collect.series {
            let (kind, key) = if line.is(SeriesState::Incomplete) {
                (ReplyKind::Incomplete, format!("held:{}", line.key))
            } else if line.is(SeriesState::Superseded) {
                (ReplyKind::Superseded, format!("superseded:{}", line.key))
            } else {
                continue;
            };
            if wants(&line.repo, kind)
                && !facts.replied.contains(&key)
                && let Some(report) = series_held_or_superseded(facts, cfg, line, key)
            {
                reports.push(report);
            }
        }
    }
    reports
}

/// The next version number a sender should use: the newest seen plus one.
fn next_version(facts: &Facts, key: &str, version: u32) -> u32 {
    facts
        .versions
        .get(key)
        .map_or(version, |v| v.newest.max(version))
        + 1
}

/// A reply in the series' thread, to its author (when `notify_author`)
/// and the configured recipients, the list in copy.
#[allow(clippy::too_many_arguments)]
fn reply_to_series(
    facts: &Facts,
    cfg: &config::Report,
    report_key: String,
    series_key: &str,
    recipients: &[String],
    fallback_subject: String,
    intro: &str,
    sections: &[Section],
) -> Report {
    let thread = facts.threads.get(series_key);
    let mut to = Vec::new();
    if cfg.notify_author
        && let Some(author) = thread.and_then(|t| t.author.clone())
    {
        to.push(author);
    }
    push_unique(&mut to, recipients);
    let mut cc = Vec::new();
    push_unique(&mut cc, &cfg.to);
    push_unique(&mut cc, &cfg.cc);
    cc.retain(|a| !to.iter().any(|t| t.eq_ignore_ascii_case(a)));
    if to.is_empty() {
        to = std::mem::take(&mut cc);
    }
    let (in_reply_to, references) = reply_headers(thread);
    // A mail's subject, so no control character (a header break) passes.
    let subject = match thread.map(|t| t.subject.replace(|c: char| c.is_control(), " ")) {
        Some(subject) if !subject.is_empty() => {
            if subject.to_ascii_lowercase().starts_with("re:") {
                subject
            } else {
                format!("Re: {subject}")
            }
        }
        _ => fallback_subject,
    };
    Report {
        key: report_key,
        to,
        cc,
        subject,
        in_reply_to,
        references,
        text: render_text(intro, sections),
        html: cfg.html.then(|| render_html(intro, sections)),
    }
}

/// The reply to an applied series: where, which commits, which trailers
/// they got, and where its packages are published.
fn series_applied(facts: &Facts, cfg: &config::Report, series: &SeriesOutcome) -> Report {
    let target = where_(&series.repo, &series.branch);
    let thread = facts.threads.get(&series.key);
    let mut s = section("Applied");
    s.line(format!(
        "{target}: {} -> {}",
        series.old_tip.as_deref().map_or("?", short),
        series.new_tip.as_deref().map_or("?", short),
    ));
    if let Some(base) = &series.applied_from {
        s.line(format!(
            "(not on the branch tip: applied from its base commit {} and merged onto the tip)",
            short(base)
        ));
    }
    for (i, commit) in series.commits.iter().enumerate() {
        let index = i as u32 + 1;
        let title = thread
            .and_then(|t| t.patches.get(&index))
            .map_or("", |p| p.title.as_str());
        s.line(format!("  {} {}", short(commit), title));
        for added in series.trailers.iter().filter(|t| t.index == index) {
            for t in &added.trailers {
                s.line(format!("      + {t}"));
            }
        }
    }
    let mut sections = vec![s];
    let published: Vec<String> = facts
        .publish
        .iter()
        .flat_map(|p| p.repos.iter())
        .filter(|r| {
            Some(&r.repo) == series.repo.as_ref()
                && (r.branch.is_none() || r.branch == series.branch)
        })
        .map(|r| format!("{}: {} ({})", r.target, r.url, r.repo_file_url))
        .collect();
    let mut packages = section("Packages");
    if published.is_empty() {
        packages.line(format!(
            "the packages of {target} are built and published by the stages after apply; this run published none for it (see the run's report)"
        ));
    } else {
        packages.line(format!("{target} is published, with this series, at:"));
        for line in published {
            packages.line(format!("  {line}"));
        }
    }
    sections.push(packages);
    let intro = format!(
        "patchline applied the series {} to {target}.",
        series_name(series)
    );
    reply_to_series(
        facts,
        cfg,
        format!("applied:{}", series.key),
        &series.key,
        &cfg.recipients.apply,
        format!(
            "{} {} applied to {target}",
            cfg.subject_prefix,
            series_name(series)
        ),
        &intro,
        &sections,
    )
}

/// The reply to a series held for missing patches (once), or superseded
/// by a newer version (once).
fn series_held_or_superseded(
    facts: &Facts,
    cfg: &config::Report,
    line: &crate::stage::collect::SeriesLine,
    key: String,
) -> Option<Report> {
    // No thread (the series' mails are gone from the state): nothing to
    // reply to.
    facts.threads.get(&line.key)?;
    let name = if line.version > 1 {
        format!("\"{}\" v{}", line.title, line.version)
    } else {
        format!("\"{}\"", line.title)
    };
    let target = where_(&line.repo, &line.branch);
    let mut s = section("Status");
    let intro;
    if line.is(SeriesState::Incomplete) {
        let missing: Vec<String> = line.missing.iter().map(u32::to_string).collect();
        intro = format!("patchline holds the series {name} for {target}: patches are missing.");
        s.line(format!(
            "received {} of {} patches; missing: {}",
            line.received,
            line.total,
            missing.join(", ")
        ));
        if let Some(v) = facts.versions.get(&line.key) {
            let until = v.first_received + facts.incomplete_deadline;
            s.line(format!(
                "it is held until {} UTC; then, if still incomplete, it is given up (expired) and not applied",
                utc(until)
            ));
        }
        s.line(format!(
            "send the missing patches in reply to the cover letter, or the whole series again as v{}",
            next_version(facts, &line.key, line.version)
        ));
    } else {
        intro = format!("patchline will not apply the series {name}: a newer version replaces it.");
        s.line(
            "superseded by a newer version of the same series; only the newest is applied"
                .to_owned(),
        );
    }
    Some(reply_to_series(
        facts,
        cfg,
        key,
        &line.key,
        &cfg.recipients.collect,
        format!("{} {name}: {}", cfg.subject_prefix, line.state),
        &intro,
        &[s],
    ))
}

/// `YYYY-MM-DD HH:MM` of unix seconds, in UTC.
fn utc(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn run_report(facts: &Facts, cfg: &config::Report) -> Option<Report> {
    let run_id = facts.run.as_ref().map_or(0, |r| r.id);
    let failed = failed_stages(facts);
    let collect = facts.collect.clone().unwrap_or_default();
    let apply = facts.apply.clone().unwrap_or_default();
    let build = facts.build.clone().unwrap_or_default();
    let publish = facts.publish.clone().unwrap_or_default();
    let test = facts.test.clone().unwrap_or_default();
    let idle = failed.is_empty()
        && collect.mails == 0
        && apply.series.is_empty()
        && apply.pulls.is_empty()
        && apply.late_trailers.is_empty()
        && build.builds.is_empty();
    if idle && !cfg.send_idle {
        return None;
    }

    let mut sections = Vec::new();
    // The failure first: what a maintainer must act on.
    for stage in &failed {
        let mut s = section(format!("FAILED: {}", stage.stage));
        match stage.stage.as_str() {
            "collect" => {
                s.line(
                    stage
                        .error
                        .clone()
                        .unwrap_or_else(|| "the mail could not be collected".into()),
                );
            }
            "apply" => {
                for series in apply.series.iter().filter(|x| x.is(SeriesState::Failed)) {
                    s.line(format!(
                        "{} for {} did not apply: {}",
                        series_name(series),
                        where_(&series.repo, &series.branch),
                        series
                            .error
                            .as_ref()
                            .map_or("failed", |e| e.message.as_str())
                    ));
                }
                for pull in apply.pulls.iter().filter(|p| p.error.is_some()) {
                    s.line(format!(
                        "pull request \"{}\" from {} for {}: refused: {}",
                        pull.subject,
                        pull.from.as_deref().unwrap_or("unknown sender"),
                        where_(&pull.repo, &pull.branch),
                        pull.error.as_deref().unwrap_or_default()
                    ));
                }
                let series_failed = apply.series.iter().any(|x| x.is(SeriesState::Failed));
                if series_failed {
                    s.line("(details in a reply to each series' thread)");
                } else if apply.pulls.iter().all(|p| p.error.is_none()) {
                    s.line(stage.error.clone().unwrap_or_default());
                }
            }
            "build" => {
                for b in build.builds.iter().filter(|b| b.state != BuildState::Ok) {
                    s.line(format!(
                        "{} ({}/{} at {}) for target {}",
                        b.nvr.as_deref().unwrap_or(&b.repo),
                        b.repo,
                        b.branch,
                        short(&b.commit),
                        b.target
                    ));
                    if let Some(log) = facts.build_logs.get(&log_key(b)) {
                        s.line(format!(
                            "last {} lines of the build log (full log: {}):",
                            log.lines.len(),
                            log.link
                        ));
                        s.quote(log.lines.clone());
                    } else if let Some(e) = &b.error {
                        s.line(e.clone());
                    }
                }
                if build.builds.iter().all(|b| b.state == BuildState::Ok) {
                    s.line(stage.error.clone().unwrap_or_default());
                }
            }
            "test" => {
                for r in test
                    .results
                    .iter()
                    .filter(|r| !matches!(r.state, TestState::Passed | TestState::Skipped))
                {
                    s.line(r.headline());
                    s.line(format!("$ {}", crate::checks::shell_words(&r.command)));
                    let lines: Vec<String> = r.output.lines().map(str::to_owned).collect();
                    let skip = lines.len().saturating_sub(cfg.log_tail_lines);
                    s.quote(lines[skip..].to_vec());
                }
                if test.failed == 0 {
                    s.line(stage.error.clone().unwrap_or_default());
                }
            }
            _ => {
                // publish and anything else: what could not be done.
                s.line(stage.error.clone().unwrap_or_else(|| "failed".into()));
            }
        }
        sections.push(s);
    }

    let mut received = section("Received");
    received.line(format!(
        "{}: {} in {} complete series, {} waiting, {} not patches, {}",
        plural(collect.mails, "mail", "mails"),
        plural(collect.patches, "patch", "patches"),
        collect.series_complete,
        collect.series_incomplete,
        collect.ignored,
        plural(collect.duplicates, "duplicate", "duplicates"),
    ));
    for line in collect
        .series
        .iter()
        .filter(|l| l.is(SeriesState::Incomplete))
    {
        let missing: Vec<String> = line.missing.iter().map(u32::to_string).collect();
        received.line(format!(
            "waiting: \"{}\" v{} ({} of {} patches, missing {})",
            line.title,
            line.version,
            line.received,
            line.total,
            missing.join(", ")
        ));
    }
    for e in &collect.errors {
        received.line(format!(
            "could not use \"{}\" from {} <{}>: {}",
            e.subject,
            e.from.as_deref().unwrap_or("unknown sender"),
            e.message_id,
            e.error
        ));
    }
    sections.push(received);

    let applied: Vec<&SeriesOutcome> = apply
        .series
        .iter()
        .filter(|s| s.is(SeriesState::Applied))
        .collect();
    if !applied.is_empty() {
        let mut s = section("Applied");
        for series in &applied {
            s.line(format!(
                "{} to {}: {} -> {}",
                series_name(series),
                where_(&series.repo, &series.branch),
                series.old_tip.as_deref().map_or("?", short),
                series.new_tip.as_deref().map_or("?", short),
            ));
            if let Some(base) = &series.applied_from {
                s.line(format!(
                    "  (not on the branch tip: applied from its base commit {} and merged onto the tip)",
                    short(base)
                ));
            }
            let patches = facts.threads.get(&series.key).map(|t| &t.patches);
            for (i, commit) in series.commits.iter().enumerate() {
                let title = patches
                    .and_then(|p| p.get(&(i as u32 + 1)))
                    .map_or("", |p| p.title.as_str());
                s.line(format!("  {} {}", short(commit), title));
                let index = i as u32 + 1;
                for added in series.trailers.iter().filter(|t| t.index == index) {
                    for t in &added.trailers {
                        s.line(format!("      + {t}"));
                    }
                }
            }
        }
        sections.push(s);
    }

    let waiting: Vec<&SeriesOutcome> = apply
        .series
        .iter()
        .filter(|s| s.waiting_for.is_some())
        .collect();
    if !waiting.is_empty() {
        let mut s = section("Waiting for the series they are based on");
        for series in waiting {
            s.line(format!(
                "{} for {} waits for series {} (Based-on), not applied yet",
                series_name(series),
                where_(&series.repo, &series.branch),
                series.waiting_for.as_deref().unwrap_or_default()
            ));
        }
        sections.push(s);
    }

    let landed: Vec<&crate::stage::pull::PullOutcome> = apply
        .pulls
        .iter()
        .filter(|p| p.error.is_none() && p.state == crate::store::PullState::Landed)
        .collect();
    if !landed.is_empty() {
        let mut s = section("Pull requests");
        for pull in landed {
            s.line(format!(
                "\"{}\" from {} ({} {}) to {}: {}, {}",
                pull.subject,
                pull.from.as_deref().unwrap_or("unknown sender"),
                pull.url.as_deref().unwrap_or_default(),
                pull.reference.as_deref().unwrap_or("HEAD"),
                where_(&pull.repo, &pull.branch),
                pull.landed.as_deref().unwrap_or_default(),
                plural(pull.commits.len() as u64, "commit", "commits")
            ));
            if let (Some(old), Some(new)) = (&pull.old_tip, &pull.new_tip) {
                s.line(format!("  {} -> {}", short(old), short(new)));
            }
        }
        sections.push(s);
    }

    if !apply.late_trailers.is_empty() {
        let mut s = section("Trailers from late replies (not added: the branch is not rewritten)");
        for late in &apply.late_trailers {
            let patches: Vec<String> = late
                .patches
                .iter()
                .map(|i| format!("{i}/{}", late.total))
                .collect();
            let name = if late.version > 1 {
                format!("\"{}\" v{}", late.title, late.version)
            } else {
                format!("\"{}\"", late.title)
            };
            s.line(format!(
                "{name} ({}) arrived after it was applied: {} on {} {}",
                where_(&late.repo, &late.branch),
                late.trailer,
                if patches.len() == 1 {
                    "patch"
                } else {
                    "patches"
                },
                patches.join(", ")
            ));
        }
        sections.push(s);
    }

    let built: Vec<&TargetBuild> = build
        .builds
        .iter()
        .filter(|b| b.state == BuildState::Ok)
        .collect();
    if !built.is_empty() || !build.not_built.is_empty() {
        let mut s = section("Built");
        for b in built {
            s.line(format!(
                "{} for {}: {}",
                b.nvr.as_deref().unwrap_or(&b.repo),
                b.target,
                plural(b.rpms.len() as u64, "RPM", "RPMs")
            ));
        }
        for n in &build.not_built {
            s.line(format!("not built: {n}"));
        }
        sections.push(s);
    }

    if !test.results.is_empty() {
        let mut s = section("Tests");
        s.line(format!(
            "{} passed, {} failed, {} skipped",
            test.passed, test.failed, test.skipped
        ));
        sections.push(s);
    }

    if !publish.repos.is_empty() {
        let mut s = section("Published");
        if let Some(note) = &publish.layout_note {
            s.line(format!("note: {note}"));
        }
        for r in &publish.repos {
            let branch = r
                .branch
                .as_ref()
                .map(|b| format!(" {b}"))
                .unwrap_or_default();
            s.line(format!("{}{branch} ({}): {}/", r.repo, r.target, r.url));
            s.line(format!(
                "  dnf config-manager --add-repo {}",
                r.repo_file_url
            ));
        }
        for l in &publish.latest {
            s.line(format!("{}: newest packages only: {}", l.repo, l.url));
        }
        sections.push(s);
    }

    let (trigger, cause) = facts.run.as_ref().map_or(("manual", None), |r| {
        (r.trigger.as_str(), r.cause.as_deref())
    });
    let mut intro = format!("patchline run {run_id} ({trigger}");
    if let Some(cause) = cause {
        let _ = write!(intro, ", {cause}");
    }
    if let Some(url) = facts.run.as_ref().and_then(|r| r.jenkins_url.as_deref()) {
        let _ = write!(intro, ", {url}");
    }
    intro.push_str("): ");
    let subject = if let Some(first) = failed.first() {
        intro.push_str(&format!("FAILED in {}.", first.stage));
        let why = match first.stage.as_str() {
            "apply" if apply.series_failed > 0 => {
                format!(
                    "{} did not apply",
                    plural(apply.series_failed, "series", "series")
                )
            }
            "build" if build.failed > 0 => {
                let targets: Vec<String> = build
                    .builds
                    .iter()
                    .filter(|b| b.state != BuildState::Ok)
                    .map(|b| format!("{} for {}", b.repo, b.target))
                    .collect();
                format!("build failed: {}", targets.join(", "))
            }
            "test" if test.failed > 0 => plural(test.failed, "test failed", "tests failed"),
            stage => format!("{stage} failed"),
        };
        format!("{} run {run_id} FAILED: {why}", cfg.subject_prefix)
    } else {
        intro.push_str("ok.");
        format!(
            "{} run {run_id}: {} applied, {} built, {} published",
            cfg.subject_prefix,
            plural(apply.patches_applied, "patch", "patches"),
            plural(build.built, "package", "packages"),
            plural(publish.repos.len() as u64, "repository", "repositories"),
        )
    };

    let mut to = cfg.to.clone();
    for stage in &failed {
        let extra = match stage.stage.as_str() {
            "collect" => &cfg.recipients.collect,
            "apply" => &cfg.recipients.apply,
            "build" => &cfg.recipients.build,
            "publish" => &cfg.recipients.publish,
            "test" => &cfg.recipients.test,
            _ => continue,
        };
        push_unique(&mut to, extra);
    }
    // About one series only: a reply in its thread.
    let thread = match apply.series.as_slice() {
        [only] => facts.threads.get(&only.key),
        _ => None,
    };
    let (in_reply_to, references) = reply_headers(thread);
    Some(Report {
        key: "run".into(),
        to,
        cc: cfg.cc.clone(),
        subject,
        in_reply_to,
        references,
        text: render_text(&intro, &sections),
        html: cfg.html.then(|| render_html(&intro, &sections)),
    })
}

fn push_unique(list: &mut Vec<String>, extra: &[String]) {
    for a in extra {
        if !list.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            list.push(a.clone());
        }
    }
}

fn reply_headers(thread: Option<&Thread>) -> (Option<String>, Vec<String>) {
    match thread {
        // A Message-ID patchline made up for a mail that had none names
        // no message a reader has: nothing to reply to.
        Some(t)
            if !t.root.is_empty()
                && !t
                    .root
                    .ends_with(&format!("@{}", crate::mail::parse::SYNTHETIC_DOMAIN)) =>
        {
            let mut refs = t.references.clone();
            refs.push(t.root.clone());
            (Some(t.root.clone()), refs)
        }
        _ => (None, Vec::new()),
    }
}

fn series_failure(facts: &Facts, cfg: &config::Report, series: &SeriesOutcome) -> Report {
    let thread = facts.threads.get(&series.key);
    let target = where_(&series.repo, &series.branch);
    let failed_patch = thread.and_then(|t| {
        t.patches
            .iter()
            .find(|(_, p)| Some(&p.archive_path) == series.failed_patch.as_ref())
    });
    let mut s = section("What did not apply");
    match failed_patch {
        Some((idx, p)) => s.line(format!("patch {idx}: \"{}\" <{}>", p.title, p.message_id)),
        None => {
            if let Some(file) = &series.failed_patch {
                s.line(format!("patch {file}"));
            }
        }
    }
    if let Some(e) = &series.error {
        match (&e.path, &e.hunk) {
            (Some(path), Some(hunk)) => s.line(format!("file {path}, hunk {hunk}: {}", e.message)),
            (Some(path), None) => s.line(format!("file {path}: {}", e.message)),
            _ => s.line(e.message.clone()),
        }
        if !e.expected.is_empty() {
            s.line("the patch expects:");
            s.quote(e.expected.clone());
        }
        if !e.found.is_empty() {
            s.line(format!("{target} has:"));
            s.quote(e.found.clone());
        }
    }
    let mut hint = section("What to do");
    hint.line(format!(
        "Nothing of this series was applied ({} is unchanged{}).",
        target,
        series
            .old_tip
            .as_deref()
            .map(|t| format!(" at {}", short(t)))
            .unwrap_or_default()
    ));
    // Advice from the state, never a template that can lie.
    let next = next_version(facts, &series.key, series.version);
    let known = series.repo.as_ref().and_then(|r| facts.branches.get(r));
    match (&series.repo, &series.branch, known) {
        (None, _, _) if !facts.branches.is_empty() => hint.line(format!(
            "No repository was named and no route matched: send it again naming one of {} in the subject (`[branch PATCH repo]`).",
            facts.branches.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        (Some(repo), _, None) if !facts.branches.is_empty() => hint.line(format!(
            "The repository \"{repo}\" is unknown to patchline; its repositories are {}.",
            facts.branches.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        (Some(repo), Some(branch), Some(branches)) if !branches.contains(branch) => {
            hint.line(format!(
                "The branch \"{branch}\" is unknown to patchline: {repo}'s branches are {}. Send it again as v{next} naming one of them (`[{} PATCH {repo}]`).",
                branches.join(", "),
                branches.first().map_or("master", String::as_str)
            ))
        }
        _ => match facts
            .versions
            .get(&series.key)
            .and_then(|v| v.applied_earlier.clone())
        {
            Some((version, _, tip)) => hint.line(format!(
                "v{version} of this series is already applied to {target}{}: send what this version changes on top of it, as v{next}.",
                tip.as_deref()
                    .map(|t| format!(" (at {})", short(t)))
                    .unwrap_or_default()
            )),
            None => hint.line(format!(
                "Rebase the series on the current {target} and send it again as v{next}."
            )),
        },
    }
    let intro = format!(
        "patchline could not apply the series {} to {}.",
        series_name(series),
        target
    );
    let sections = [s, hint];
    reply_to_series(
        facts,
        cfg,
        format!("apply-failed:{}", series.key),
        &series.key,
        &cfg.recipients.apply,
        format!(
            "{} {} did not apply to {target}",
            cfg.subject_prefix,
            series_name(series)
        ),
        &intro,
        &sections,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::TestResult;
    use crate::patch::apply::PatchFailure;
    use crate::stage::collect::{MailError, SeriesLine};
    use crate::yum::{LatestLink, PublishedRepo};

    fn cfg() -> config::Report {
        config::Report {
            to: vec!["virt-devel@lists.example.org".into()],
            recipients: config::StageRecipients {
                build: vec!["Release Team <rel@example.org>".into()],
                ..Default::default()
            },
            ..config::Report::default()
        }
    }

    fn stage(name: &str, state: &str, error: Option<&str>) -> StageRow {
        StageRow {
            stage: crate::store::Stage::parse(name).unwrap(),
            state: crate::store::StageState::parse(state).unwrap(),
            started_at: Some(0),
            finished_at: Some(1),
            summary: None,
            error: error.map(str::to_owned),
            completed: true,
            pid: None,
        }
    }

    fn run(id: i64) -> RunRow {
        RunRow {
            id,
            trigger: crate::store::Trigger::Timer,
            cause: Some("nightly".into()),
            started_by: None,
            jenkins_url: Some("https://ci.example.org/job/patchline/41/".into()),
            state: crate::store::RunState::Ok,
            created_at: 0,
            finished_at: None,
            first_stage: crate::store::Stage::Collect,
            options: Default::default(),
            via_api: false,
        }
    }

    fn applied(key: &str, title: &str, commits: &[&str]) -> SeriesOutcome {
        SeriesOutcome {
            key: key.into(),
            title: title.into(),
            version: 2,
            repo: Some("qemu".into()),
            branch: Some("stable-9.1".into()),
            state: crate::store::SeriesState::Applied,
            old_tip: Some("1111111111111111111111111111111111111111".into()),
            new_tip: commits.last().map(|c| c.to_string()),
            commits: commits.iter().map(|c| c.to_string()).collect(),
            failed_patch: None,
            error: None,
            trailers: Vec::new(),
            base_commit: None,
            based_on: Vec::new(),
            applied_from: None,
            waiting_for: None,
        }
    }

    fn thread(root: &str, titles: &[&str]) -> Thread {
        Thread {
            root: root.into(),
            references: vec![],
            author: Some("Ada Lovelace <ada@example.org>".into()),
            subject: format!("[stable-9.1 PATCH v2 0/{} qemu] cover", titles.len()),
            patches: titles
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        i as u32 + 1,
                        PatchLine {
                            title: t.to_string(),
                            message_id: format!("{i}.{root}"),
                            archive_path: format!("2026-11-25/s/000{}-p.patch", i + 1),
                        },
                    )
                })
                .collect(),
        }
    }

    fn build(target: &str, state: BuildState) -> TargetBuild {
        TargetBuild {
            repo: "qemu".into(),
            branch: "stable-9.1".into(),
            commit: "2222222222222222222222222222222222222222".into(),
            target: target.into(),
            state,
            nvr: Some(format!("qemu-9.1.0-1.20261125git2222222.{target}")),
            srpm: None,
            rpms: if state == BuildState::Ok {
                vec!["a.rpm".into(), "b.rpm".into()]
            } else {
                vec![]
            },
            log: Some(format!("/w/{target}/build.log")),
            duration_ms: 1000,
            error: (state != BuildState::Ok).then(|| "rpmbuild failed".into()),
            task_id: None,
            urls: vec![],
        }
    }

    fn success_facts() -> Facts {
        let mut facts = Facts {
            run: Some(run(7)),
            stages: ["collect", "apply", "build", "publish", "test"]
                .iter()
                .map(|s| stage(s, "ok", None))
                .collect(),
            collect: Some(CollectSummary {
                run: 7,
                mails: 6,
                patches: 3,
                series_complete: 1,
                series_incomplete: 1,
                ignored: 2,
                series: vec![SeriesLine {
                    key: "w".into(),
                    title: "net: half done".into(),
                    version: 1,
                    total: 3,
                    received: 1,
                    state: "incomplete".into(),
                    missing: vec![2, 3],
                    repo: Some("qemu".into()),
                    branch: None,
                    archive_dir: String::new(),
                }],
                ..Default::default()
            }),
            apply: Some(ApplySummary {
                run: 7,
                series_applied: 1,
                patches_applied: 2,
                series: vec![applied(
                    "s1",
                    "block: fix two leaks",
                    &[
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                    ],
                )],
                ..Default::default()
            }),
            build: Some(BuildSummary {
                run: 7,
                built: 2,
                builds: vec![build("el9", BuildState::Ok), build("fc41", BuildState::Ok)],
                ..Default::default()
            }),
            publish: Some(PublishSummary {
                run: 7,
                repos: ["el9", "fc41"]
                    .iter()
                    .map(|t| PublishedRepo {
                        repo: "qemu".into(),
                        branch: None,
                        target: t.to_string(),
                        path: String::new(),
                        url: format!("https://repo.example.org/qemu/{t}"),
                        repo_file: String::new(),
                        repo_file_url: format!("https://repo.example.org/qemu-{t}.repo"),
                        packages: vec![],
                    })
                    .collect(),
                latest: vec![LatestLink {
                    repo: "qemu".into(),
                    branch: None,
                    path: String::new(),
                    url: "https://repo.example.org/qemu/latest/".into(),
                }],
                ..Default::default()
            }),
            test: Some(TestSummary {
                run: 7,
                passed: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        facts.threads.insert(
            "s1".into(),
            thread(
                "cover.1@example.org",
                &["block: fix leak in open", "block: fix leak in close"],
            ),
        );
        facts
    }

    #[test]
    fn success_report_counts_commits_packages_and_urls() {
        let reports = compose(&success_facts(), &cfg());
        // The run report, and the reply to the applied series.
        assert_eq!(reports.len(), 2);
        let applied = &reports[1];
        assert!(applied.key.starts_with("applied:"), "{}", applied.key);
        assert_eq!(applied.in_reply_to.as_deref(), Some("cover.1@example.org"));
        assert!(applied.subject.starts_with("Re: "), "{}", applied.subject);
        assert!(
            applied.text.contains("patchline applied the series")
                && applied.text.contains("block: fix leak in open"),
            "{}",
            applied.text
        );
        let r = &reports[0];
        assert_eq!(r.to, ["virt-devel@lists.example.org"]);
        // One series: in its thread.
        assert_eq!(r.in_reply_to.as_deref(), Some("cover.1@example.org"));
        assert_eq!(r.references, ["cover.1@example.org"]);
        insta::assert_snapshot!("success_subject", r.subject);
        insta::assert_snapshot!("success_text", r.text);
    }

    #[test]
    fn trailers_added_and_late_are_listed() {
        use crate::stage::apply::{LateTrailer, PatchTrailers};
        let mut facts = success_facts();
        if let Some(apply) = facts.apply.as_mut() {
            apply.series[0].trailers = vec![
                PatchTrailers {
                    index: 1,
                    trailers: vec!["Reviewed-by: Ada Lovelace <ada@example.org>".into()],
                },
                PatchTrailers {
                    index: 2,
                    trailers: vec![
                        "Acked-by: Bob Builder <bob@example.org>".into(),
                        "Reviewed-by: Ada Lovelace <ada@example.org>".into(),
                    ],
                },
            ];
            let late = |trailer: &str, patches: Vec<u32>| LateTrailer {
                key: "old".into(),
                title: "net: older work".into(),
                version: 1,
                repo: Some("qemu".into()),
                branch: Some("master".into()),
                trailer: trailer.into(),
                patches,
                total: 3,
            };
            apply.late_trailers = vec![
                late("Tested-by: Carol Tester <carol@example.org>", vec![2]),
                late("Acked-by: Dave <dave@example.org>", vec![1, 2, 3]),
            ];
        }
        let reports = compose(&facts, &cfg());
        insta::assert_snapshot!("trailers_text", reports[0].text);
        // Late trailers alone are worth a report.
        let quiet = Facts {
            run: Some(run(9)),
            stages: vec![stage("collect", "ok", None), stage("apply", "ok", None)],
            collect: Some(CollectSummary::default()),
            apply: Some(ApplySummary {
                late_trailers: facts.apply.map(|a| a.late_trailers).unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let reports = compose(&quiet, &cfg());
        assert_eq!(reports.len(), 1);
        assert!(
            reports[0].text.contains(
                "\"net: older work\" (qemu/master) arrived after it was applied: Tested-by: Carol Tester <carol@example.org> on patch 2/3"
            ),
            "{}",
            reports[0].text
        );
    }

    #[test]
    fn nothing_to_say_sends_nothing_unless_asked() {
        let facts = Facts {
            run: Some(run(8)),
            stages: vec![stage("collect", "ok", None)],
            collect: Some(CollectSummary::default()),
            ..Default::default()
        };
        assert!(compose(&facts, &cfg()).is_empty());
        let loud = config::Report {
            send_idle: true,
            ..cfg()
        };
        let reports = compose(&facts, &loud);
        assert_eq!(reports.len(), 1);
        assert!(reports[0].text.contains("0 mails"), "{}", reports[0].text);
    }

    #[test]
    fn apply_failure_replies_to_the_series_thread_with_the_hunk() {
        let mut facts = success_facts();
        let apply = facts.apply.as_mut().unwrap();
        let mut bad = applied("s2", "net: tidy", &[]);
        bad.state = crate::store::SeriesState::Failed;
        bad.version = 1;
        bad.new_tip = None;
        bad.failed_patch = Some("2026-11-25/s/0002-p.patch".into());
        bad.error = Some(PatchFailure {
            path: Some("net/tap.c".into()),
            message: "patch does not apply".into(),
            hunk: Some("@@ -10,3 +10,3 @@ static int tap_open(void)".into()),
            expected: vec![
                "     int fd;".into(),
                "-    fd = open(path, O_RDWR);".into(),
            ],
            found: vec!["     int fd = -1;".into()],
        });
        apply.series.push(bad);
        apply.series_failed = 1;
        facts.stages[1] = stage("apply", "failed", Some("1 series did not apply: net: tidy"));
        let mut t = thread("cover.2@example.org", &["net: one", "net: two"]);
        t.references = vec!["earlier@example.org".into()];
        t.author = Some("Bob <bob@example.org>".into());
        facts.threads.insert("s2".into(), t);
        let reports = compose(&facts, &cfg());
        // The run report, the applied series' reply, the failed one's.
        assert_eq!(reports.len(), 3);
        let run = &reports[0];
        assert!(
            run.subject.ends_with("FAILED: 1 series did not apply"),
            "{}",
            run.subject
        );
        // Two series: the run report starts its own thread.
        assert_eq!(run.in_reply_to, None);
        let reply = reports
            .iter()
            .find(|r| r.key.starts_with("apply-failed:"))
            .unwrap();
        assert_eq!(reply.key, "apply-failed:s2");
        assert_eq!(reply.to, ["Bob <bob@example.org>"]);
        assert_eq!(reply.cc, ["virt-devel@lists.example.org"]);
        assert_eq!(reply.in_reply_to.as_deref(), Some("cover.2@example.org"));
        assert_eq!(
            reply.references,
            ["earlier@example.org", "cover.2@example.org"]
        );
        insta::assert_snapshot!("apply_failure_subject", reply.subject);
        insta::assert_snapshot!("apply_failure_text", reply.text);
        insta::assert_snapshot!("apply_failure_run_text", run.text);
    }

    #[test]
    fn build_failure_carries_the_log_tail_and_link_to_stage_recipients() {
        let mut facts = success_facts();
        let b = facts.build.as_mut().unwrap();
        b.builds[1] = build("fc41", BuildState::Failed);
        b.built = 1;
        b.failed = 1;
        facts.stages[2] = stage(
            "build",
            "failed",
            Some("qemu/stable-9.1 for fc41: rpmbuild failed"),
        );
        facts.build_logs.insert(
            "qemu/stable-9.1/fc41".into(),
            LogTail {
                lines: vec![
                    "gcc -c block.c".into(),
                    "block.c:12: error: 'x' undeclared".into(),
                    "error: Bad exit status from /var/tmp/rpm-tmp.1 (%build)".into(),
                ],
                link: "https://repo.example.org/logs/run-7/qemu-stable-9.1-fc41-build.log".into(),
            },
        );
        let reports = compose(
            &facts,
            &config::Report {
                html: true,
                ..cfg()
            },
        );
        let r = &reports[0];
        assert_eq!(
            r.to,
            [
                "virt-devel@lists.example.org",
                "Release Team <rel@example.org>"
            ]
        );
        insta::assert_snapshot!("build_failure_subject", r.subject);
        insta::assert_snapshot!("build_failure_text", r.text);
        let html = r.html.as_deref().unwrap();
        assert!(
            html.contains("<pre>gcc -c block.c\nblock.c:12: error: &apos;x&apos; undeclared"),
            "{html}"
        );
    }

    #[test]
    fn collect_and_test_failures_name_what_failed() {
        let mut facts = success_facts();
        facts.stages[0] = stage(
            "collect",
            "failed",
            Some("imap.example.org:993: connection refused"),
        );
        facts.collect.as_mut().unwrap().errors.push(MailError {
            message_id: "bad.1@example.org".into(),
            subject: "[PATCH] broken".into(),
            from: Some("Eve <eve@example.org>".into()),
            error: "the mail is not valid MIME: boundary never closed".into(),
        });
        facts.stages[4] = stage("test", "failed", Some("rpmlint failed"));
        let t = facts.test.as_mut().unwrap();
        t.failed = 1;
        t.results.push(TestResult {
            repo: "qemu".into(),
            branch: "stable-9.1".into(),
            target: "el9".into(),
            name: "rpmlint".into(),
            command: vec!["rpmlint".into(), "a b.rpm".into()],
            state: TestState::Failed,
            exit_code: Some(64),
            duration_ms: 5,
            output: "qemu.x86_64: E: no-binary\n1 packages, 1 errors\n".into(),
            log: None,
            message: Some("exit status 64".into()),
        });
        let r = &compose(&facts, &cfg())[0];
        insta::assert_snapshot!("collect_test_failure_text", r.text);
        assert!(
            r.subject.ends_with("FAILED: collect failed"),
            "{}",
            r.subject
        );
    }

    #[test]
    fn a_subject_from_a_mail_cannot_break_the_headers() {
        let mut facts = success_facts();
        let apply = facts.apply.as_mut().unwrap();
        let mut bad = applied("s3", "evil", &[]);
        bad.state = crate::store::SeriesState::Failed;
        apply.series.push(bad);
        let mut t = thread("evil@example.org", &["evil"]);
        t.subject = "[PATCH] evil\r\nBcc: everyone@example.org".into();
        facts.threads.insert("s3".into(), t);
        let reports = compose(&facts, &cfg());
        let reply = reports.iter().find(|r| r.key == "apply-failed:s3").unwrap();
        assert_eq!(reply.subject, "Re: [PATCH] evil  Bcc: everyone@example.org");
    }

    /// The advice comes from the state: an unknown branch is named with
    /// the configured ones; a series whose older version is applied is
    /// told so; the next version is the newest seen plus one. Held and
    /// superseded series get one reply each, in their thread.
    #[test]
    fn replies_to_every_series_give_advice_from_the_state() {
        let mut facts = success_facts();
        facts
            .branches
            .insert("qemu".into(), vec!["master".into(), "stable-9.1".into()]);
        let mut failed = applied("s2", "net: tidy", &[]);
        failed.state = SeriesState::Failed;
        failed.branch = Some("stabel-9.1".into());
        failed.new_tip = None;
        failed.error = Some(PatchFailure::general(
            "branch \"stabel-9.1\" is not one of qemu's branches",
        ));
        let apply = facts.apply.as_mut().unwrap();
        apply.series.push(failed.clone());
        facts
            .threads
            .insert("s2".into(), thread("cover.2@example.org", &["net: tidy"]));
        let reports = compose(&facts, &cfg());
        let reply = reports.iter().find(|r| r.key == "apply-failed:s2").unwrap();
        assert!(
            reply.text.contains("The branch \"stabel-9.1\" is unknown to patchline: qemu's branches are master, stable-9.1")
                && !reply.text.contains("Rebase"),
            "{}",
            reply.text
        );
        // v3 failed on a branch where v2 is applied: said so, next is v4.
        let mut v3 = failed.clone();
        v3.key = "s3".into();
        v3.version = 3;
        v3.branch = Some("stable-9.1".into());
        facts.apply.as_mut().unwrap().series = vec![v3];
        facts
            .threads
            .insert("s3".into(), thread("cover.3@example.org", &["net: tidy"]));
        facts.versions.insert(
            "s3".into(),
            crate::store::VersionFacts {
                newest: 3,
                applied_earlier: Some((
                    2,
                    Some("stable-9.1".into()),
                    Some("2222222222222222".into()),
                )),
                first_received: 0,
            },
        );
        let reports = compose(&facts, &cfg());
        let reply = reports.iter().find(|r| r.key == "apply-failed:s3").unwrap();
        assert!(
            reply.text.contains("v2 of this series is already applied to qemu/stable-9.1 (at 222222222222): send what this version changes on top of it, as v4."),
            "{}",
            reply.text
        );
        // Held and superseded: once each, in their threads.
        let line = |key: &str, state: &str| crate::stage::collect::SeriesLine {
            key: key.into(),
            title: "virtio: more".into(),
            version: 1,
            total: 3,
            received: 2,
            state: state.into(),
            missing: vec![2],
            repo: Some("qemu".into()),
            branch: Some("master".into()),
            archive_dir: String::new(),
        };
        facts.apply = None;
        facts.collect.as_mut().unwrap().series =
            vec![line("h", "incomplete"), line("o", "superseded")];
        facts
            .threads
            .insert("h".into(), thread("cover.h@example.org", &["a"]));
        facts
            .threads
            .insert("o".into(), thread("cover.o@example.org", &["a"]));
        facts.incomplete_deadline = 72 * 3600;
        facts.versions.insert(
            "h".into(),
            crate::store::VersionFacts {
                newest: 1,
                applied_earlier: None,
                first_received: 1_796_000_000,
            },
        );
        let reports = compose(&facts, &cfg());
        let held = reports.iter().find(|r| r.key == "held:h").unwrap();
        assert_eq!(held.in_reply_to.as_deref(), Some("cover.h@example.org"));
        assert!(
            held.text.contains("received 2 of 3 patches; missing: 2")
                && held.text.contains("held until 2026-12-03 00:53 UTC")
                && held.text.contains("whole series again as v2"),
            "{}",
            held.text
        );
        let old = reports.iter().find(|r| r.key == "superseded:o").unwrap();
        assert!(
            old.text.contains("superseded by a newer version"),
            "{}",
            old.text
        );
        // Already replied in an earlier run: not again; a repository that
        // asks for failures only gets none of these.
        facts.replied.insert("held:h".into());
        facts
            .replies
            .insert("qemu".into(), vec![crate::config::ReplyKind::Failed]);
        let reports = compose(&facts, &cfg());
        assert!(
            reports
                .iter()
                .all(|r| !r.key.starts_with("held:") && !r.key.starts_with("superseded:"))
        );
    }
}
