//! The status page's HTML: pure functions from the API's view types to
//! markup (maud, which escapes every interpolated value). Subjects, names,
//! Message-IDs and trailers come from mail and are hostile: they are only
//! ever text, never markup or a URL. Links are built from ids and fixed
//! words, or are URLs the configuration made (published repositories) or
//! the API checked (a Jenkins build URL). No script, no external resource.

use super::SeriesResults;
use crate::server::api::{RunSummary, RunView, SeriesDetail, SeriesSummary, StageView};
use crate::store::{SeriesFilter, SeriesState};
use maud::{DOCTYPE, Markup, PreEscaped, html};

const CSS: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff;text-decoration:none}header b{font-size:1.1em}
header form{margin-left:auto}
main{padding:1em 1.4em;max-width:1200px}
h1{font-size:1.45em;margin:.3em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #d8dde3}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d8dde3;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;background:#fff;padding:.6em;border:1px solid #d8dde3}
dt{font-weight:600}dd{margin:0}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{white-space:pre-wrap;margin:0;max-height:20em;overflow:auto}
.state{display:inline-block;padding:0 .5em;border-radius:.8em;background:#dde3ea;font-weight:600}
.ok,.applied,.passed{background:#cdeccf;color:#14521a}
.failed,.timeout,.error,.interrupted,.expired{background:#f7d0cd;color:#7a1610}
.running,.queued,.applying,.started{background:#d3e4fb;color:#123d7a}
.skipped,.pending,.superseded,.incomplete{background:#e7e7e7;color:#555}
.complete{background:#fdf0c4;color:#6a4d00}
.muted{color:#667}.login{max-width:28em;margin:3em auto;background:#fff;padding:1.5em;border:1px solid #d8dde3}
.login input[type=password]{width:100%;padding:.4em;margin:.4em 0 .8em;box-sizing:border-box}
.message{background:#f7d0cd;color:#7a1610;padding:.5em;margin-bottom:.8em}
"#;

/// Unix seconds as UTC, to the second.
fn when(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| at.to_string())
}

fn when_opt(at: Option<i64>) -> String {
    at.map(when).unwrap_or_else(|| "—".into())
}

fn duration(from: Option<i64>, to: Option<i64>) -> String {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => format!("{}s", b - a),
        _ => "—".into(),
    }
}

/// A state word as a badge (its class is the word: the words are fixed).
fn badge(state: &str) -> Markup {
    html! { span class=(format!("state {state}")) { (state) } }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A URL that may be a link: one the configuration or the API made
/// (http, https, or a path of this server).
fn linkable(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/')
}

fn layout(title: &str, logged_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — patchline" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    b { a href="/ui/" { "patchline" } }
                    @if logged_in {
                        a href="/ui/" { "Runs" }
                        a href="/ui/series" { "Series" }
                        a href="/repos/" { "Repositories" }
                        form method="post" action="/ui/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn runs_table(runs: &[RunSummary]) -> Markup {
    html! {
        table.runs {
            tr { th { "Run" } th { "State" } th { "Trigger" } th { "Cause" } th { "Repositories" } th { "Created" } th { "Finished" } }
            @for r in runs {
                tr {
                    td { a href=(format!("/ui/runs/{}", r.id)) { "run " (r.id) } }
                    td { (badge(&r.state)) @if r.dry_run { " " span.muted { "dry run" } } }
                    td { (r.trigger) }
                    td { (r.cause.as_deref().unwrap_or("")) }
                    td { (r.repos.join(", ")) }
                    td { (when(r.created_at)) }
                    td { (when_opt(r.finished_at)) }
                }
            }
        }
        @if runs.is_empty() { p.muted { "No runs yet." } }
    }
}

fn series_table(series: &[SeriesSummary]) -> Markup {
    html! {
        table.series {
            tr { th { "Series" } th { "Title" } th { "Version" } th { "State" } th { "Repository" } th { "Patches" } th { "Author" } th { "Received" } }
            @for s in series {
                tr {
                    td { a href=(format!("/ui/series/{}", s.id)) { "series " (s.id) } }
                    td { a href=(format!("/ui/series/{}", s.id)) { (s.title) } }
                    td { "v" (s.version) }
                    td { (badge(&s.state)) }
                    td { (s.repo.as_deref().unwrap_or("—")) "/" (s.branch.as_deref().unwrap_or("—")) }
                    td { (s.total) @if !s.missing.is_empty() { " (missing " (join(&s.missing)) ")" } }
                    td { (s.author) }
                    td { (when(s.first_received)) }
                }
            }
        }
        @if series.is_empty() { p.muted { "No series." } }
    }
}

fn join(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/ui/`: the recent runs and series.
pub fn index(runs: &[RunSummary], series: &[SeriesSummary]) -> Markup {
    layout(
        "Status",
        true,
        html! {
            h1 { "Status" }
            h2 { "Recent runs" }
            (runs_table(runs))
            h2 { "Recent series" }
            (series_table(series))
            p { a href="/ui/series" { "All series, by state and repository" } }
        },
    )
}

/// The scalar fields of a stage summary (counts, flags, short words);
/// lists by their length. What a table cell can hold.
fn summary_counts(summary: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = summary.as_object() else {
        return Vec::new();
    };
    map.iter()
        // The run is the page's.
        .filter(|(k, _)| k.as_str() != "run")
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::String(s) if s.chars().count() <= 80 => s.clone(),
                serde_json::Value::Array(a) => format!("{} item(s)", a.len()),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect()
}

fn stage_row(s: &StageView) -> Markup {
    let log = format!("/ui/runs/{}/stages/{}/log", s.run, s.stage);
    html! {
        tr id=(format!("stage-{}", s.stage)) {
            td { (s.stage) }
            td {
                (badge(&s.state))
                // Said only where it is news: a failed stage the next may follow.
                @if s.continues && s.state == "failed" { " " span.muted { "continues" } }
            }
            td { (when_opt(s.started_at)) }
            td { (duration(s.started_at, s.finished_at)) }
            td {
                @if let Some(summary) = &s.summary {
                    @for (k, v) in summary_counts(summary) {
                        div { code { (k) } ": " (v) }
                    }
                }
            }
            td { @if let Some(e) = &s.error { pre { (e) } } }
            td {
                @if s.log_size > 0 {
                    a href=(log) { "log" } " " span.muted { "(" (s.log_size) " bytes)" }
                } @else { span.muted { "no log" } }
            }
        }
    }
}

/// `/ui/runs/{id}`: one run, its stages and the series it applied.
pub fn run(view: &RunView, series: &[SeriesSummary]) -> Markup {
    let r = &view.run;
    layout(
        &format!("Run {}", r.id),
        true,
        html! {
            h1 { "Run " (r.id) " " (badge(&r.state)) }
            dl {
                dt { "Trigger" } dd { (r.trigger) }
                dt { "Cause" } dd { (r.cause.as_deref().unwrap_or("—")) }
                dt { "Started by" } dd { (r.started_by.as_deref().unwrap_or("—")) }
                dt { "Jenkins" } dd {
                    @match &r.jenkins_url {
                        Some(u) if linkable(u) => a href=(u) { (u) },
                        _ => "—",
                    }
                }
                dt { "Repositories" } dd { (r.repos.join(", ")) }
                dt { "Dry run" } dd { (if r.dry_run { "yes" } else { "no" }) }
                dt { "Created" } dd { (when(r.created_at)) }
                dt { "Finished" } dd { (when_opt(r.finished_at)) }
            }
            h2 { "Stages" }
            table.stages {
                tr { th { "Stage" } th { "State" } th { "Started" } th { "Took" } th { "Summary" } th { "Error" } th { "Log" } }
                @for s in &view.stages { (stage_row(s)) }
            }
            h2 { "Series applied in this run" }
            (series_table(series))
        },
    )
}

/// `/ui/series`: a page of series, filtered by state and repository.
pub fn series_list(
    series: &[SeriesSummary],
    filter: &SeriesFilter,
    repos: &[String],
    next: Option<&str>,
) -> Markup {
    layout(
        "Series",
        true,
        html! {
            h1 { "Series" }
            form method="get" action="/ui/series" {
                label { "State " select name="state" {
                    option value="" { "any" }
                    @for st in SeriesState::ALL {
                        option value=(st.as_str()) selected[filter.state == Some(*st)] { (st.as_str()) }
                    }
                } }
                " "
                label { "Repository " select name="repo" {
                    option value="" { "any" }
                    @for r in repos {
                        option value=(r) selected[filter.repo.as_deref() == Some(r.as_str())] { (r) }
                    }
                } }
                " " button type="submit" { "Show" }
            }
            (series_table(series))
            @if let Some(n) = next { p { a href=(n) { "Older series" } } }
        },
    )
}

/// `/ui/series/{id}`: one series, everything known about it.
pub fn series(d: &SeriesDetail, results: Option<&SeriesResults>) -> Markup {
    let s = &d.series;
    let version_link = |key: &str| d.versions.iter().find(|v| v.key == key).map(|v| v.id);
    layout(
        &s.title,
        true,
        html! {
            h1 { (s.title) }
            p { "v" (s.version) " " (badge(&s.state)) " — " (s.repo.as_deref().unwrap_or("no repository"))
                "/" (s.branch.as_deref().unwrap_or("no branch")) " — " (s.author) }
            dl.facts {
                dt { "Series" } dd { (s.id) }
                dt { "Key (Message-ID)" } dd { code { (s.key) } }
                dt { "Version" } dd { "v" (s.version) }
                dt { "State" } dd { (badge(&s.state)) }
                dt { "Patches" } dd { (s.total) @if !s.missing.is_empty() { ", missing " (join(&s.missing)) } }
                dt { "Received" } dd { (when(s.first_received)) }
                @if let Some(by) = &s.superseded_by {
                    dt { "Superseded by" } dd {
                        @if let Some(id) = version_link(by) { a href=(format!("/ui/series/{id}")) { code { (by) } } }
                        @else { code { (by) } }
                    }
                }
                dt { "Applied in" } dd {
                    @if let Some(run) = s.applied_run { a href=(format!("/ui/runs/{run}")) { "run " (run) } }
                    @else { "not yet" }
                }
            }
            @if !d.versions.is_empty() {
                h2 { "Versions" }
                ul.versions {
                    @for v in &d.versions {
                        li { a href=(format!("/ui/series/{}", v.id)) { "v" (v.version) ": " (v.title) } " " (badge(&v.state)) }
                    }
                }
            }
            @if let Some(a) = &d.applied {
                h2 { "Where it was applied" }
                dl.where {
                    dt { "Run" } dd { a href=(format!("/ui/runs/{}", a.run)) { "run " (a.run) } }
                    dt { "Outcome" } dd { (badge(a.state.as_deref().unwrap_or("unknown"))) }
                    dt { "Branch" } dd { (s.repo.as_deref().unwrap_or("—")) "/" (s.branch.as_deref().unwrap_or("—")) }
                    @if let Some(t) = &a.old_tip { dt { "Old tip" } dd { code { (t) } } }
                    @if let Some(t) = &a.new_tip { dt { "New tip" } dd { code.new-tip { (t) } } }
                    @if !a.commits.is_empty() {
                        dt { "Commits" } dd { @for c in &a.commits { code { (short(c)) } " " } }
                    }
                    @if let Some(b) = &a.base_commit { dt { "Base commit" } dd { code { (b) } } }
                    @if let Some(b) = &a.applied_from { dt { "Applied from" } dd { code { (b) } } }
                    @if !a.based_on.is_empty() { dt { "Based on" } dd { @for b in &a.based_on { code { (b) } " " } } }
                    @if let Some(w) = &a.waiting_for { dt { "Waiting for" } dd { code { (w) } } }
                    @if let Some(f) = &a.failed_patch { dt { "Failed patch" } dd { (f) } }
                    @if let Some(e) = &a.error {
                        dt { "Error" } dd { pre { (e.get("message").and_then(|m| m.as_str()).unwrap_or("")) } }
                    }
                }
            }
            h2 { "Patches" }
            table.patches {
                tr { th { "#" } th { "Subject" } th { "From" } th { "Message-ID" } th { "Trailers" } th { "Mail" } }
                @for p in &d.patches {
                    tr {
                        td { (p.index) }
                        td { (p.subject) }
                        td { (p.author.as_deref().unwrap_or("—")) }
                        td { code { (p.message_id) } }
                        td {
                            @for t in &p.trailers { div.trailer { code { (t.trailer) } " " span.muted { "(" (t.source) ")" } } }
                            @for t in &p.late_trailers { div.trailer { code { (t.trailer) } " " span.muted { "(late: not in the commit)" } } }
                        }
                        td { a href=(format!("/ui/series/{}/mails/{}", s.id, p.index)) { "raw mail" } }
                    }
                }
            }
            @if let Some(r) = results { (results_section(s, r)) }
            @else if s.applied_run.is_some() {
                h2 { "Builds and tests" }
                p.muted { "Nothing was built with this series: it did not apply." }
            }
            h2 { "Thread" }
            @if d.replies.is_empty() { p.muted { "No replies." } }
            @else {
                table.replies {
                    tr { th { "From" } th { "Subject" } th { "Date" } th { "Message-ID" } }
                    @for r in &d.replies {
                        tr {
                            td { (r.from.as_deref().unwrap_or("—")) }
                            td { (r.subject) }
                            td { (when_opt(r.date)) }
                            td { code { (r.message_id) } }
                        }
                    }
                }
            }
        },
    )
}

fn results_section(s: &SeriesSummary, r: &SeriesResults) -> Markup {
    let logs = |stage: &str| format!("/ui/runs/{}/stages/{stage}/log", r.run);
    html! {
        h2 { "Builds per target" }
        @if r.builds.is_empty() { p.muted { "No build recorded in run " (r.run) " for this branch." } }
        @else {
            table.builds {
                tr { th { "Target" } th { "State" } th { "Commit" } th { "NVR" } th { "RPMs" } th { "Took" } th { "Error" } }
                @for b in &r.builds {
                    tr {
                        td { (b.target) }
                        td { (badge(b.state.as_str())) }
                        td { code { (short(&b.commit)) } }
                        td { (b.nvr.as_deref().unwrap_or("—")) }
                        td { @for rpm in &b.rpms { div { code { (rpm.rsplit('/').next().unwrap_or(rpm)) } } } }
                        td { (format!("{:.1}s", b.duration_ms as f64 / 1000.0)) }
                        td { @if let Some(e) = &b.error { pre { (e) } } }
                    }
                }
            }
            p { a href=(logs("build")) { "Build stage log" } }
        }
        h2 { "Tests" }
        @if r.tests.is_empty() { p.muted { "No tests ran for " (s.repo.as_deref().unwrap_or("")) " in run " (r.run) "." } }
        @else {
            table.tests {
                tr { th { "Test" } th { "Target" } th { "State" } th { "Exit" } th { "Took" } th { "Message" } }
                @for t in &r.tests {
                    tr {
                        td { (t.name) }
                        td { (t.target) }
                        td { (badge(t.state.as_str())) }
                        td { (t.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                        td { (format!("{:.1}s", t.duration_ms as f64 / 1000.0)) }
                        td { (t.message.as_deref().unwrap_or("")) }
                    }
                }
            }
            p { a href=(logs("test")) { "Test stage log" } }
        }
        h2 { "Published repositories" }
        @if r.published.is_empty() { p.muted { "Nothing published in run " (r.run) " for this branch." } }
        @else {
            ul.published {
                @for p in &r.published {
                    li {
                        (p.target) ": "
                        @if linkable(&p.url) { a href=(p.url) { (p.url) } } @else { code { (p.url) } }
                        @if linkable(&p.repo_file_url) { " (" a href=(p.repo_file_url) { ".repo file" } ")" }
                        " " span.muted { (p.packages.len()) " package(s)" }
                    }
                }
            }
        }
    }
}

/// `/ui/login`: the token form, with what went wrong last time.
pub fn login(message: Option<&str>, next: &str) -> Markup {
    layout(
        "Log in",
        false,
        html! {
            form.login method="post" action="/ui/login" {
                h1 { "Log in" }
                @if let Some(m) = message { div.message role="alert" { (m) } }
                label for="token" { "Token (the API token or the read-only token)" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Log in" }
            }
        },
    )
}

/// An error as a page.
pub fn error(status: u16, message: &str) -> Markup {
    layout(
        "Error",
        true,
        html! {
            h1 { "Error " (status) }
            p { (message) }
            p { a href="/ui/" { "Back to the status page" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_page_escapes_its_message_and_next() {
        let page = login(Some("<b>no</b>"), "/ui/\"><script>").into_string();
        assert!(page.contains("&lt;b&gt;no&lt;/b&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("Log out"));
    }

    #[test]
    fn summaries_become_counts() {
        let counts = summary_counts(&serde_json::json!({
            "run": 4, "patches_applied": 2, "dry_run": false, "note": "x", "series": [1, 2, 3], "deep": {"a": 1}
        }));
        let keys: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "dry_run=false",
                "note=x",
                "patches_applied=2",
                "series=3 item(s)"
            ]
        );
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(duration(Some(5), Some(9)), "4s");
        assert!(linkable("https://x") && linkable("/repos/") && !linkable("javascript:alert(1)"));
    }
}
