//! The HTTP API under `/api/v1`: request parsing and validation, and the
//! JSON views. Handlers only validate and shape; state changes go through
//! `jobs`, reads through a pooled read-only `Store` on a blocking thread.
//!
//! Path parameters are parsed into a run or series id (a positive
//! integer) and a `Stage` before anything else happens, so no request text
//! ever reaches a file name or a query; the filters of `/series` are
//! checked words, numbers and times, and a repository name that reaches
//! SQL only as a bound parameter.

use super::error::{ApiError, ErrorBody};
use super::jobs;
use super::{ServerState, junit, metrics, stage_log};
use crate::stage;
use crate::store::{
    NewRun, RunOptions, RunRow, SeriesFilter, SeriesRow, SeriesState, Stage, StageRow, Store,
    TrailerState,
};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Largest log chunk one request returns.
pub const LOG_CHUNK: usize = 256 * 1024;
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// How the run was started.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Timer,
    Manual,
    Api,
}

impl From<Trigger> for crate::store::Trigger {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Timer => crate::store::Trigger::Timer,
            Trigger::Manual => crate::store::Trigger::Manual,
            Trigger::Api => crate::store::Trigger::Api,
        }
    }
}

/// `POST /runs` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub trigger: Trigger,
    /// Why the run was started (e.g. "Started by user ada", "timer"),
    /// at most 200 characters.
    pub cause: String,
    /// Who started it (a Jenkins user id), at most 100 characters.
    pub started_by: Option<String>,
    /// The Jenkins build URL (http or https), shown in reports.
    pub jenkins_url: Option<String>,
    /// Repositories the run is for (default: every configured one); no
    /// other run may be unfinished for any of them.
    pub repos: Option<Vec<String>>,
    /// Run everything but publish (which is recorded as skipped).
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub id: i64,
    /// The run's URL.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    pub id: i64,
    /// `timer`, `manual` or `api`.
    pub trigger: String,
    pub cause: Option<String>,
    pub started_by: Option<String>,
    pub jenkins_url: Option<String>,
    /// `running` (not finished), `ok` or `failed`.
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Repositories of the run (empty for runs not made through the API).
    pub repos: Vec<String>,
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageView {
    pub run: i64,
    pub stage: String,
    /// `pending` (not started), `queued`, `running`, `ok`, `failed`,
    /// `skipped` or `interrupted` (the worker stopped while it ran; start
    /// it again to resume).
    pub state: String,
    /// Whether the stage ran to its end, so the next stage may start: true
    /// for `ok` and `skipped`, and for a `failed` stage that finished with
    /// problems in what it did (a series that did not apply, a target that
    /// did not build); false for one stopped by an error.
    pub continues: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The stage's summary and counts (as `patchline status --json`).
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Bytes in the stage log so far.
    pub log_size: u64,
    pub log_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub run: RunSummary,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageView>,
    pub junit_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// The next (older) page, when there is one.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Runs per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// Only runs with an id below this one (the `next` link sets it).
    pub before: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to read from (the previous `X-Next-Offset`; default 0).
    pub offset: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// A series as a list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesSummary {
    pub id: i64,
    /// The series' key: the Message-ID of its cover letter or first patch.
    pub key: String,
    pub title: String,
    pub version: u32,
    /// The sender's address.
    pub author: String,
    pub repo: Option<String>,
    pub branch: Option<String>,
    /// `incomplete`, `complete`, `expired`, `superseded`, `applying`,
    /// `applied` or `failed`.
    pub state: String,
    /// Patches in the series (cover letter not counted).
    pub total: u32,
    /// Indexes of the patches not received.
    pub missing: Vec<u32>,
    /// When its first mail was received (unix seconds).
    pub first_received: i64,
    /// The run whose apply stage last recorded an outcome for it.
    pub applied_run: Option<i64>,
    /// The key of the series (a later version) that superseded it.
    pub superseded_by: Option<String>,
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPage {
    /// Newest first.
    pub series: Vec<SeriesSummary>,
    /// The next (older) page with the same filters, when there is one.
    pub next: Option<String>,
}

/// A trailer recorded for a patch.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailerView {
    /// `Token: value`.
    pub trailer: String,
    /// `reply` (a reply in the thread), `link` or `sign-off` (the
    /// repository's configured ones).
    pub source: String,
    /// The Message-ID of the reply it came from.
    pub reply: Option<String>,
}

/// One mail of a series: the cover letter (index 0) or a patch.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPatchView {
    pub index: u32,
    pub message_id: String,
    pub subject: String,
    /// `Name <address>` of the sender.
    pub author: Option<String>,
    /// The filed `.patch`, relative to the archive directory.
    pub archive_path: String,
    /// Trailers its commit got.
    pub trailers: Vec<TrailerView>,
    /// Trailers of replies that arrived after the series was applied:
    /// reported, not in the commit.
    pub late_trailers: Vec<TrailerView>,
}

/// A reply in a series' thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyView {
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// `Name <address>` of the sender.
    pub from: Option<String>,
    pub subject: String,
    /// Its `Date:` (unix seconds).
    pub date: Option<i64>,
}

/// What the apply stage of `run` did with the series (its recorded
/// outcome, as in the apply stage's summary).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyView {
    pub run: i64,
    pub run_url: String,
    /// The series' state after that run's apply stage.
    pub state: Option<String>,
    pub old_tip: Option<String>,
    pub new_tip: Option<String>,
    pub commits: Vec<String>,
    /// The patch that failed.
    pub failed_patch: Option<String>,
    /// Why it failed: `message`, and for a patch that did not apply its
    /// `path`, `hunk`, `expected` and `found` lines.
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    /// The `base-commit:` the series states.
    pub base_commit: Option<String>,
    /// Message-IDs of the series it says it is based on (`Based-on:`).
    pub based_on: Vec<String>,
    /// The commit it was applied from when it did not apply on the tip.
    pub applied_from: Option<String>,
    /// The key of the series it waits for.
    pub waiting_for: Option<String>,
}

/// A series with its mails, linked versions, replies and apply outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesDetail {
    #[serde(flatten)]
    pub series: SeriesSummary,
    /// By index, the cover letter (0) first.
    pub patches: Vec<SeriesPatchView>,
    /// The other versions collect linked to it (`superseded_by`, both
    /// ways), oldest version first.
    pub versions: Vec<SeriesSummary>,
    /// Every reply in its thread (replies to replies too), in arrival order.
    pub replies: Vec<ReplyView>,
    /// Absent until an apply stage recorded an outcome.
    pub applied: Option<ApplyView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Only series in this state: `incomplete`, `complete`, `expired`,
    /// `superseded`, `applying`, `applied` or `failed`.
    pub state: Option<String>,
    /// Only series of this repository.
    pub repo: Option<String>,
    /// Only series first received at or after this time: unix seconds or
    /// an RFC 3339 date (`2026-11-24`, `2026-11-24T09:00:00Z`).
    pub since: Option<String>,
    /// Series per page, 1 to 1000 (default 100).
    // Read as text so that a bad value is refused with its name.
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
    /// Only series with an id below this one (the `next` link sets it).
    #[param(value_type = Option<i64>)]
    pub before: Option<String>,
}

pub fn url_of_run(run: i64) -> String {
    format!("/api/v1/runs/{run}")
}

fn url_of_stage(run: i64, stage: Stage) -> String {
    format!("/api/v1/runs/{run}/stages/{stage}")
}

/// Request text quoted for a message: bounded, printable.
fn quoted(raw: &str) -> String {
    let short: String = raw.chars().take(64).collect();
    format!("{short:?}")
}

pub fn parse_run(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::not_found(format!(
            "no run {}: run ids are positive integers",
            quoted(raw)
        ))
    })
}

pub fn parse_stage(raw: &str) -> Result<Stage, ApiError> {
    Stage::parse(raw).ok_or_else(|| {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::not_found(format!(
            "no stage {}: stages are {}",
            quoted(raw),
            names.join(", ")
        ))
    })
}

/// Runs `f` with a pooled read-only connection on a blocking thread.
pub(crate) async fn read<T, F>(state: &web::Data<ServerState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store, &ServerState) -> Result<T, ApiError> + Send + 'static,
{
    let state: Arc<ServerState> = state.clone().into_inner();
    web::block(move || {
        let store = state.reader()?;
        let result = f(&store, &state);
        state.give_back(store);
        result
    })
    .await
    .map_err(|_| ApiError::internal("a worker thread stopped"))?
}

/// Runs `f` with the single writing connection (admission is serialised).
async fn write<T, F>(state: &web::Data<ServerState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
{
    let state: Arc<ServerState> = state.clone().into_inner();
    web::block(move || {
        let mut store = state.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut store)
    })
    .await
    .map_err(|_| ApiError::internal("a worker thread stopped"))?
}

pub(crate) fn summary_of(row: RunRow) -> RunSummary {
    RunSummary {
        id: row.id,
        trigger: row.trigger.to_string(),
        cause: row.cause,
        started_by: row.started_by,
        jenkins_url: row.jenkins_url,
        state: row.state.to_string(),
        created_at: row.created_at,
        finished_at: row.finished_at,
        repos: row.options.repos,
        dry_run: row.options.dry_run,
    }
}

fn stage_view(state: &ServerState, run: i64, stage: Stage, row: Option<StageRow>) -> StageView {
    let log_size = stage_log::size(&stage_log::path(&state.jobs.logs, run, stage));
    let log_url = format!("{}/log", url_of_stage(run, stage));
    match row {
        Some(r) => StageView {
            run,
            continues: stage::lets_through(&r),
            stage: r.stage.to_string(),
            state: r.state.to_string(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            summary: r.summary,
            error: r.error,
            log_size,
            log_url,
        },
        None => StageView {
            run,
            continues: false,
            stage: stage.as_str().to_owned(),
            state: "pending".into(),
            started_at: None,
            finished_at: None,
            summary: None,
            error: None,
            log_size,
            log_url,
        },
    }
}

/// Run `run` with every stage, in pipeline order.
pub(crate) fn load_run(store: &Store, state: &ServerState, run: i64) -> Result<RunView, ApiError> {
    let row = store.run(run)?;
    let mut rows = store.stages(run)?;
    let stages = Stage::ALL
        .iter()
        .map(|stage| {
            let row = rows
                .iter()
                .position(|r| r.stage == *stage)
                .map(|i| rows.swap_remove(i));
            stage_view(state, run, *stage, row)
        })
        .collect();
    Ok(RunView {
        run: summary_of(row),
        stages,
        junit_url: format!("{}/junit.xml", url_of_run(run)),
    })
}

fn load_stage(
    store: &Store,
    state: &ServerState,
    run: i64,
    stage: Stage,
) -> Result<StageView, ApiError> {
    store.run(run)?;
    let row = store.stages(run)?.into_iter().find(|s| s.stage == stage);
    Ok(stage_view(state, run, stage, row))
}

fn validate(body: &CreateRun, configured: &[String]) -> Result<RunOptions, ApiError> {
    let text = |name: &str, value: &str, max: usize| {
        if value.chars().count() > max {
            return Err(ApiError::invalid(format!(
                "{name} is longer than {max} characters"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "{name} contains control characters"
            )));
        }
        Ok(())
    };
    if body.cause.trim().is_empty() {
        return Err(ApiError::invalid("cause must not be empty"));
    }
    text("cause", &body.cause, 200)?;
    if let Some(by) = &body.started_by {
        text("started_by", by, 100)?;
    }
    if let Some(url) = &body.jenkins_url {
        text("jenkins_url", url, 2048)?;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            return Err(ApiError::invalid(format!(
                "jenkins_url {} is not an http(s) URL",
                quoted(url)
            )));
        }
    }
    let repos = match &body.repos {
        None => configured.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(ApiError::invalid(
                "repos must name at least one repository (or be left out for all)",
            ));
        }
        Some(list) => {
            let mut repos = Vec::new();
            for name in list {
                if !configured.contains(name) {
                    return Err(ApiError::invalid(format!(
                        "repos: {} is not a configured repository (configured: {})",
                        quoted(name),
                        configured.join(", ")
                    )));
                }
                if !repos.contains(name) {
                    repos.push(name.clone());
                }
            }
            repos
        }
    };
    Ok(RunOptions {
        repos,
        dry_run: body.dry_run,
    })
}

const DEFAULT_SERIES_PAGE: u32 = 100;
const MAX_SERIES_PAGE: u32 = 1000;

pub fn url_of_series(id: i64) -> String {
    format!("/api/v1/series/{id}")
}

pub fn parse_series(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::not_found(format!(
            "no series {}: series ids are positive integers",
            quoted(raw)
        ))
    })
}

/// `since` as unix seconds: a count of seconds, an RFC 3339 date-time,
/// or a full date (midnight UTC).
fn parse_since(raw: &str) -> Result<i64, ApiError> {
    if let Ok(seconds) = raw.parse::<i64>() {
        if seconds >= 0 {
            return Ok(seconds);
        }
    } else if let Ok(at) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(at.timestamp());
    } else if let Some(midnight) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(midnight.and_utc().timestamp());
    }
    Err(ApiError::invalid(format!(
        "since: {} is neither unix seconds nor an RFC 3339 date (2026-11-24 or 2026-11-24T09:00:00Z)",
        quoted(raw)
    )))
}

/// The filters and page size of `GET /series`, checked.
pub(crate) fn series_filter(query: &SeriesQuery) -> Result<(SeriesFilter, u32), ApiError> {
    let limit = match &query.limit {
        None => DEFAULT_SERIES_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_SERIES_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit: {} is not a number between 1 and {MAX_SERIES_PAGE}",
                    quoted(raw)
                ))
            })?,
    };
    let before = match &query.before {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::invalid(format!(
                "before: {} is not a series id (a positive integer)",
                quoted(raw)
            ))
        })?),
    };
    let state = match &query.state {
        None => None,
        Some(raw) => Some(SeriesState::parse(raw).ok_or_else(|| {
            let words: Vec<&str> = SeriesState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(format!(
                "state: {} is not a series state (one of {})",
                quoted(raw),
                words.join(", ")
            ))
        })?),
    };
    if let Some(repo) = &query.repo
        && (repo.is_empty() || repo.chars().count() > 200 || repo.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(format!(
            "repo: {} is not a repository name",
            quoted(repo)
        )));
    }
    let since = query.since.as_deref().map(parse_since).transpose()?;
    Ok((
        SeriesFilter {
            state,
            repo: query.repo.clone(),
            since,
            before,
        },
        limit,
    ))
}

/// The link to the page after `last` with the same filters, under `base`
/// (`/api/v1/series`, or the status page's `/ui/series`).
pub(crate) fn next_series_page(base: &str, filter: &SeriesFilter, limit: u32, last: i64) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(state) = filter.state {
        pairs.push(("state", state.to_string()));
    }
    if let Some(repo) = &filter.repo {
        pairs.push(("repo", repo.clone()));
    }
    if let Some(since) = filter.since {
        pairs.push(("since", since.to_string()));
    }
    pairs.push(("limit", limit.to_string()));
    pairs.push(("before", last.to_string()));
    // Encoding strings into a query string cannot fail.
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{base}?{query}")
}

pub(crate) fn series_summary(row: SeriesRow) -> SeriesSummary {
    SeriesSummary {
        url: url_of_series(row.id),
        id: row.id,
        key: row.key,
        title: row.title,
        version: row.version,
        author: row.author,
        repo: row.repo,
        branch: row.branch,
        state: row.state.to_string(),
        total: row.total,
        missing: row.missing,
        first_received: row.first_received,
        applied_run: row.applied_run,
        superseded_by: row.superseded_by,
    }
}

/// `Name <address>`, or whichever of them is known.
fn mailbox(name: Option<String>, email: Option<String>) -> Option<String> {
    match (name.filter(|n| !n.is_empty()), email) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n),
        (None, e) => e,
    }
}

fn apply_view(run: i64, result: Option<&str>) -> ApplyView {
    // An outcome another patchline wrote and this one cannot read still
    // names the run.
    let outcome = result.and_then(|r| serde_json::from_str::<stage::apply::SeriesOutcome>(r).ok());
    let mut view = ApplyView {
        run,
        run_url: url_of_run(run),
        state: None,
        old_tip: None,
        new_tip: None,
        commits: Vec::new(),
        failed_patch: None,
        error: None,
        base_commit: None,
        based_on: Vec::new(),
        applied_from: None,
        waiting_for: None,
    };
    if let Some(o) = outcome {
        view.state = Some(o.state.to_string());
        view.old_tip = o.old_tip;
        view.new_tip = o.new_tip;
        view.commits = o.commits;
        view.failed_patch = o.failed_patch;
        view.error = o.error.and_then(|e| serde_json::to_value(e).ok());
        view.base_commit = o.base_commit;
        view.based_on = o.based_on;
        view.applied_from = o.applied_from;
        view.waiting_for = o.waiting_for;
    }
    view
}

pub(crate) fn load_series(store: &Store, id: i64) -> Result<SeriesDetail, ApiError> {
    let row = store
        .series_by_id(id)?
        .ok_or_else(|| ApiError::not_found(format!("series {id} does not exist")))?;
    let mails = store.series_patches(id)?;
    let message_ids: Vec<String> = mails.iter().map(|m| m.message_id.clone()).collect();
    let replies = store.series_replies(&message_ids)?;
    let reply_of = |mail: Option<i64>| {
        mail.and_then(|m| replies.iter().find(|r| r.mail_id == m))
            .map(|r| r.message_id.clone())
    };
    let mut patches: Vec<SeriesPatchView> = mails
        .into_iter()
        .map(|m| SeriesPatchView {
            index: m.idx,
            message_id: m.message_id,
            subject: m.subject,
            author: mailbox(m.from_name, m.from_email),
            archive_path: m.archive_path,
            trailers: Vec::new(),
            late_trailers: Vec::new(),
        })
        .collect();
    for (state, t) in store.series_trailers(id)? {
        let Some(patch) = patches.iter_mut().find(|p| p.index == t.idx) else {
            continue;
        };
        let view = TrailerView {
            reply: reply_of(t.reply_mail_id),
            trailer: t.trailer,
            source: t.source.to_string(),
        };
        match state {
            TrailerState::Added => patch.trailers.push(view),
            TrailerState::Late => patch.late_trailers.push(view),
        }
    }
    let applied = match row.applied_run {
        Some(run) => Some(apply_view(run, store.series_apply_result(id)?.as_deref())),
        None => None,
    };
    let versions = store
        .series_versions(id)?
        .into_iter()
        .map(series_summary)
        .collect();
    let replies = replies
        .into_iter()
        .map(|r| ReplyView {
            message_id: r.message_id,
            in_reply_to: r.in_reply_to,
            from: mailbox(r.from_name, r.from_email),
            subject: r.subject,
            date: r.date,
        })
        .collect();
    Ok(SeriesDetail {
        series: series_summary(row),
        patches,
        versions,
        replies,
        applied,
    })
}

/// Liveness: no token needed.
#[utoipa::path(get, path = "/api/v1/healthz", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/api/v1/metrics",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<ServerState>) -> Result<HttpResponse, ApiError> {
    let text = read(&state, |store, st| {
        Ok(metrics::render(
            store,
            st.jobs.running.load(std::sync::atomic::Ordering::SeqCst),
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// Creates a run.
#[utoipa::path(post, path = "/api/v1/runs", request_body = CreateRun,
    responses((status = 201, body = Created),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 409, description = "another unfinished run covers one of the repositories (`run` names it)", body = ErrorBody),
        (status = 413, description = "body larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown or invalid", body = ErrorBody)))]
pub async fn create_run(
    state: web::Data<ServerState>,
    body: web::Json<CreateRun>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let options = validate(&body, &state.repos)?;
    let id = write(&state, move |store| {
        jobs::create_run(
            store,
            &NewRun {
                trigger: body.trigger.into(),
                cause: Some(&body.cause),
                started_by: body.started_by.as_deref(),
                jenkins_url: body.jenkins_url.as_deref(),
                first_stage: Stage::Collect,
                options,
                via_api: true,
            },
        )
    })
    .await?;
    tracing::info!(run = id, "run created");
    let url = url_of_run(id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, url.clone()))
        .json(Created { id, url }))
}

/// Recent runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", params(PageQuery),
    responses((status = 200, body = RunPage), (status = 422, body = ErrorBody)))]
pub async fn list_runs(
    state: web::Data<ServerState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let before = query.before.unwrap_or(i64::MAX);
    let page = read(&state, move |store, _| {
        let rows = store.runs_before(before, limit + 1)?;
        let more = rows.len() > limit as usize;
        let runs: Vec<RunSummary> = rows
            .into_iter()
            .take(limit as usize)
            .map(summary_of)
            .collect();
        let next = match (more, runs.last()) {
            (true, Some(last)) => Some(format!("/api/v1/runs?limit={limit}&before={}", last.id)),
            _ => None,
        };
        Ok(RunPage { runs, next })
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A run with every stage and its counts.
#[utoipa::path(get, path = "/api/v1/runs/{run}",
    params(("run" = i64, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path)?;
    let view = read(&state, move |store, st| load_run(store, st, run)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// JUnit XML: a test case per patch applied, per build target, per test
/// and per series the run handled, with links to the status pages.
#[utoipa::path(get, path = "/api/v1/runs/{run}/junit.xml",
    params(("run" = i64, Path, description = "run id")),
    responses((status = 200, description = "JUnit XML", content_type = "application/xml"),
        (status = 404, body = ErrorBody)))]
pub async fn junit_xml(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path)?;
    let xml = read(&state, move |store, st| {
        store.run(run)?;
        let public_url = st.jobs.config.server.public_url.as_deref();
        Ok(junit::render(&junit::load(store, run, public_url)?))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/xml; charset=utf-8")
        .body(xml))
}

/// Series, newest first, by state, repository and age.
#[utoipa::path(get, path = "/api/v1/series", params(SeriesQuery),
    responses((status = 200, body = SeriesPage),
        (status = 422, description = "a filter, `limit` or `before` is invalid (the message names it)", body = ErrorBody)))]
pub async fn list_series(
    state: web::Data<ServerState>,
    query: web::Query<SeriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, limit) = series_filter(&query)?;
    let page = read(&state, move |store, _| {
        let rows = store.series_page(&filter, limit + 1)?;
        let more = rows.len() > limit as usize;
        let series: Vec<SeriesSummary> = rows
            .into_iter()
            .take(limit as usize)
            .map(series_summary)
            .collect();
        let next = match (more, series.last()) {
            (true, Some(last)) => Some(next_series_page("/api/v1/series", &filter, limit, last.id)),
            _ => None,
        };
        Ok(SeriesPage { series, next })
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A series: its mails with their trailers, the other versions, the
/// replies in its thread and what the apply stage did with it.
#[utoipa::path(get, path = "/api/v1/series/{series}",
    params(("series" = i64, Path, description = "series id")),
    responses((status = 200, body = SeriesDetail), (status = 404, body = ErrorBody)))]
pub async fn get_series(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_series(&path)?;
    let view = read(&state, move |store, _| {
        store.snapshot(|s| load_series(s, id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Starts a stage as a background job; poll its state and log.
#[utoipa::path(post, path = "/api/v1/runs/{run}/stages/{stage}",
    params(("run" = i64, Path, description = "run id"),
        ("stage" = String, Path, description = "collect, apply, build, publish, test or report")),
    responses((status = 202, description = "queued", body = StageView),
        (status = 404, description = "no such run or stage", body = ErrorBody),
        (status = 409, description = "the run is finished, a stage of it is queued or running, or the stage before has not run to its end (see `continues`)", body = ErrorBody)))]
pub async fn start_stage(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path.0)?;
    let stage = parse_stage(&path.1)?;
    write(&state, move |store| jobs::admit_stage(store, run, stage)).await?;
    let ctx = state.jobs.clone();
    // Detached: the job outlives the request and the client's connection.
    drop(actix_web::rt::task::spawn_blocking(move || {
        jobs::run_job(&ctx, run, stage)
    }));
    tracing::info!(run, stage = stage.as_str(), "stage queued");
    let view = read(&state, move |store, st| load_stage(store, st, run, stage)).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, url_of_stage(run, stage)))
        .json(view))
}

/// A stage's state and summary.
#[utoipa::path(get, path = "/api/v1/runs/{run}/stages/{stage}",
    params(("run" = i64, Path, description = "run id"),
        ("stage" = String, Path, description = "stage name")),
    responses((status = 200, body = StageView), (status = 404, body = ErrorBody)))]
pub async fn get_stage(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path.0)?;
    let stage = parse_stage(&path.1)?;
    let view = read(&state, move |store, st| load_stage(store, st, run, stage)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The stage's log from `offset`: at most 256 KiB of text; `X-Next-Offset`
/// is where to continue, `X-Stage-State` the stage's state when read
/// (stop polling when it is final and the chunk is empty).
#[utoipa::path(get, path = "/api/v1/runs/{run}/stages/{stage}/log",
    params(("run" = i64, Path, description = "run id"),
        ("stage" = String, Path, description = "stage name"), LogQuery),
    responses((status = 200, description = "log text", content_type = "text/plain",
            headers(("X-Next-Offset" = u64, description = "offset of the next chunk"),
                ("X-Stage-State" = String, description = "the stage's state"))),
        (status = 404, body = ErrorBody),
        (status = 422, description = "offset past the end of the log", body = ErrorBody)))]
pub async fn stage_log(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path.0)?;
    let stage = parse_stage(&path.1)?;
    let offset = query.offset.unwrap_or(0);
    let (chunk, stage_state) = read(&state, move |store, st| {
        // The state first: a final state read before the chunk means the
        // chunk holds the whole rest of the log.
        let view = load_stage(store, st, run, stage)?;
        let chunk = stage_log::read_chunk(
            &stage_log::path(&st.jobs.logs, run, stage),
            offset,
            LOG_CHUNK,
        )
        .map_err(|e| match e {
            stage_log::ReadError::PastEnd { .. } => ApiError::invalid(e.to_string()),
            other => ApiError::internal(other.to_string()),
        })?;
        Ok((chunk, view.state))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Next-Offset", chunk.next_offset.to_string()))
        .insert_header(("X-Stage-State", stage_state))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(chunk.bytes))
}

/// Any path the API does not have.
pub async fn no_route(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!(
        "no endpoint {} {}; the API is described at /api/v1/openapi.json",
        req.method(),
        quoted(req.path())
    ))
    .error_response()
}

/// A known path with a method it does not take.
pub async fn wrong_method(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), quoted(req.path())),
    )
    .error_response()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "patchline worker", description = "Runs patchline's pipeline stages as background jobs for Jenkins or curl. Every endpoint but /api/v1/healthz needs `Authorization: Bearer <token>`."),
    paths(healthz, metrics, openapi, create_run, list_runs, get_run, junit_xml, start_stage, get_stage, stage_log, list_series, get_series),
    components(schemas(ErrorBody, CreateRun, Trigger, Created, RunSummary, StageView, RunView, RunPage, Health,
        SeriesSummary, SeriesPage, SeriesDetail, SeriesPatchView, TrailerView, ReplyView, ApplyView)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_parsed_strictly() {
        assert_eq!(parse_run("12").unwrap(), 12);
        for bad in [
            "0",
            "-1",
            "..",
            "1/../2",
            "1%2F..",
            "",
            "99999999999999999999",
        ] {
            let e = parse_run(bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 404, "{bad}");
        }
        assert_eq!(parse_stage("build").unwrap(), Stage::Build);
        let e = parse_stage("../../etc/passwd").unwrap_err();
        assert!(
            e.message.contains("stages are collect, apply"),
            "{}",
            e.message
        );
    }

    #[test]
    fn run_bodies_are_validated() {
        let repos = vec!["hello".to_owned(), "world".to_owned()];
        let body = |json: serde_json::Value| serde_json::from_value::<CreateRun>(json).unwrap();
        let ok = validate(
            &body(serde_json::json!({"trigger": "timer", "cause": "nightly"})),
            &repos,
        )
        .unwrap();
        assert_eq!(ok.repos, repos);
        let one = validate(
            &body(serde_json::json!({"trigger": "manual", "cause": "c", "repos": ["world", "world"], "dry_run": true})),
            &repos,
        )
        .unwrap();
        assert_eq!(
            one,
            RunOptions {
                repos: vec!["world".into()],
                dry_run: true
            }
        );
        for (json, says) in [
            (
                serde_json::json!({"trigger": "api", "cause": " "}),
                "cause must not be empty",
            ),
            (
                serde_json::json!({"trigger": "api", "cause": "x".repeat(201)}),
                "longer than 200",
            ),
            (
                serde_json::json!({"trigger": "api", "cause": "a\u{1b}[2J"}),
                "control characters",
            ),
            (
                serde_json::json!({"trigger": "api", "cause": "c", "jenkins_url": "file:///etc/passwd"}),
                "not an http(s) URL",
            ),
            (
                serde_json::json!({"trigger": "api", "cause": "c", "repos": []}),
                "at least one",
            ),
            (
                serde_json::json!({"trigger": "api", "cause": "c", "repos": ["../x"]}),
                "not a configured repository",
            ),
        ] {
            let e = validate(&body(json.clone()), &repos).unwrap_err();
            assert_eq!(e.status.as_u16(), 422);
            assert!(e.message.contains(says), "{json}: {}", e.message);
        }
        assert!(
            serde_json::from_value::<CreateRun>(
                serde_json::json!({"trigger": "cron", "cause": "c"})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<CreateRun>(
                serde_json::json!({"trigger": "api", "cause": "c", "x": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn series_filters_are_validated_and_kept_in_the_next_link() {
        let query = |json: serde_json::Value| serde_json::from_value::<SeriesQuery>(json).unwrap();
        let (filter, limit) = series_filter(&query(serde_json::json!({}))).unwrap();
        assert_eq!((filter, limit), (SeriesFilter::default(), 100));
        let (filter, limit) = series_filter(&query(serde_json::json!({
            "state": "applied", "repo": "a b&c", "since": "2026-11-24", "limit": "2", "before": "9"
        })))
        .unwrap();
        assert_eq!(
            filter,
            SeriesFilter {
                state: Some(SeriesState::Applied),
                repo: Some("a b&c".into()),
                since: Some(1_795_478_400),
                before: Some(9),
            }
        );
        assert_eq!(
            next_series_page("/api/v1/series", &filter, limit, 5),
            "/api/v1/series?state=applied&repo=a+b%26c&since=1795478400&limit=2&before=5"
        );
        for (since, at) in [
            ("0", 0),
            ("1795478400", 1_795_478_400),
            ("2026-11-24T09:00:00Z", 1_795_510_800),
            ("2026-11-24T10:00:00+01:00", 1_795_510_800),
        ] {
            assert_eq!(parse_since(since).unwrap(), at, "{since}");
        }
        for (json, names) in [
            (
                serde_json::json!({"state": "done"}),
                "state: \"done\" is not a series state (one of incomplete, complete",
            ),
            (
                serde_json::json!({"since": "yesterday"}),
                "since: \"yesterday\"",
            ),
            (serde_json::json!({"since": "-5"}), "since"),
            (serde_json::json!({"since": "2026-13-01"}), "since"),
            (serde_json::json!({"limit": "0"}), "limit"),
            (serde_json::json!({"limit": "x"}), "limit"),
            (serde_json::json!({"limit": "1001"}), "limit"),
            (serde_json::json!({"before": "0"}), "before"),
            (serde_json::json!({"repo": ""}), "repo"),
            (serde_json::json!({"repo": "a\u{1b}b"}), "repo"),
        ] {
            let e = series_filter(&query(json.clone())).unwrap_err();
            assert_eq!(e.status.as_u16(), 422, "{json}");
            assert!(
                e.message.starts_with(names) || e.message.contains(names),
                "{json}: {}",
                e.message
            );
        }
        assert_eq!(parse_series("3").unwrap(), 3);
        for bad in ["0", "-2", "x", "1.5", ""] {
            assert_eq!(parse_series(bad).unwrap_err().status.as_u16(), 404, "{bad}");
        }
    }

    #[test]
    fn openapi_names_every_endpoint() {
        let doc: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/healthz",
            "/api/v1/metrics",
            "/api/v1/openapi.json",
            "/api/v1/runs",
            "/api/v1/runs/{run}",
            "/api/v1/runs/{run}/junit.xml",
            "/api/v1/runs/{run}/stages/{stage}",
            "/api/v1/runs/{run}/stages/{stage}/log",
            "/api/v1/series",
            "/api/v1/series/{series}",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let params: Vec<(&str, &str)> = doc["paths"]["/api/v1/series"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
            .collect();
        assert_eq!(
            params,
            [
                ("state", "query"),
                ("repo", "query"),
                ("since", "query"),
                ("limit", "query"),
                ("before", "query")
            ]
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["SeriesDetail"]["allOf"][0]["$ref"], "#/components/schemas/SeriesSummary",
            "{}",
            schemas["SeriesDetail"]
        );
        for field in ["patches", "versions", "replies", "applied"] {
            assert!(
                schemas["SeriesDetail"]["allOf"][1]["properties"][field].is_object(),
                "{field}: {}",
                schemas["SeriesDetail"]
            );
        }
    }
}
