//! The HTTP API under `/api/v1`: request parsing and validation, and the
//! JSON views. Handlers only validate and shape; state changes go through
//! `jobs`, reads through a pooled read-only `Store` on a blocking thread.
//!
//! Path parameters are parsed into a run id (a positive integer) and a
//! `Stage` before anything else happens, so no request text ever reaches
//! a file name or a query.

use super::error::{ApiError, ErrorBody};
use super::jobs::{self, NewRun, RunOptions};
use super::{ServerState, junit, metrics, stage_log};
use crate::stage::Stage;
use crate::store::{RunRow, StageRow, Store};
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

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Timer => "timer",
            Trigger::Manual => "manual",
            Trigger::Api => "api",
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
async fn read<T, F>(state: &web::Data<ServerState>, f: F) -> Result<T, ApiError>
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

fn summary_of(row: RunRow, options: Option<RunOptions>) -> RunSummary {
    let options = options.unwrap_or(RunOptions {
        repos: Vec::new(),
        dry_run: false,
    });
    RunSummary {
        id: row.id,
        trigger: row.trigger,
        cause: row.cause,
        started_by: row.started_by,
        jenkins_url: row.jenkins_url,
        state: row.state,
        created_at: row.created_at,
        finished_at: row.finished_at,
        repos: options.repos,
        dry_run: options.dry_run,
    }
}

fn stage_view(state: &ServerState, run: i64, stage: Stage, row: Option<StageRow>) -> StageView {
    let log_size = stage_log::size(&stage_log::path(&state.jobs.logs, run, stage));
    let log_url = format!("{}/log", url_of_stage(run, stage));
    match row {
        Some(r) => StageView {
            run,
            stage: r.stage,
            state: r.state,
            started_at: r.started_at,
            finished_at: r.finished_at,
            summary: r.summary,
            error: r.error,
            log_size,
            log_url,
        },
        None => StageView {
            run,
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

fn load_stage(
    store: &Store,
    state: &ServerState,
    run: i64,
    stage: Stage,
) -> Result<StageView, ApiError> {
    store.run(run)?;
    let row = store
        .stages(run)?
        .into_iter()
        .find(|s| s.stage == stage.as_str());
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
                trigger: body.trigger.as_str(),
                cause: &body.cause,
                started_by: body.started_by.as_deref(),
                jenkins_url: body.jenkins_url.as_deref(),
                options,
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
        // One more than a page tells whether there is a next page.
        let ids = store.run_ids_before(before, limit + 1)?;
        let more = ids.len() > limit as usize;
        let mut runs = Vec::new();
        for id in ids.into_iter().take(limit as usize) {
            runs.push(summary_of(store.run(id)?, jobs::options(store, id)?));
        }
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
    let view = read(&state, move |store, st| {
        let row = store.run(run)?;
        let options = jobs::options(store, run)?;
        let mut rows = store.stages(run)?;
        let stages = Stage::ALL
            .iter()
            .map(|stage| {
                let row = rows
                    .iter()
                    .position(|r| r.stage == stage.as_str())
                    .map(|i| rows.swap_remove(i));
                stage_view(st, run, *stage, row)
            })
            .collect();
        Ok(RunView {
            run: summary_of(row, options),
            stages,
            junit_url: format!("{}/junit.xml", url_of_run(run)),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// JUnit XML: a test case per patch applied and per build target.
#[utoipa::path(get, path = "/api/v1/runs/{run}/junit.xml",
    params(("run" = i64, Path, description = "run id")),
    responses((status = 200, description = "JUnit XML", content_type = "application/xml"),
        (status = 404, body = ErrorBody)))]
pub async fn junit_xml(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run(&path)?;
    let xml = read(&state, move |store, _| {
        store.run(run)?;
        Ok(junit::render(&junit::load(store, run)?))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/xml; charset=utf-8")
        .body(xml))
}

/// Starts a stage as a background job; poll its state and log.
#[utoipa::path(post, path = "/api/v1/runs/{run}/stages/{stage}",
    params(("run" = i64, Path, description = "run id"),
        ("stage" = String, Path, description = "collect, apply, build, publish, test or report")),
    responses((status = 202, description = "queued", body = StageView),
        (status = 404, description = "no such run or stage", body = ErrorBody),
        (status = 409, description = "the run is finished, a stage of it is running, or the stage before has not finished ok", body = ErrorBody)))]
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
    paths(healthz, metrics, openapi, create_run, list_runs, get_run, junit_xml, start_stage, get_stage, stage_log),
    components(schemas(ErrorBody, CreateRun, Trigger, Created, RunSummary, StageView, RunView, RunPage, Health)),
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
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
