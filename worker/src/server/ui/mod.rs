//! The status page under `/ui/`: a read-only HTML view of runs and series
//! for the operator, with its login form. Handlers load through the same
//! store views and JSON view types as the API (`api::load_series`,
//! `api::load_run`) and hand them to the templates in [`pages`]; nothing
//! here writes to the store or starts anything.
//!
//! A login takes the API token or the read-only token and gives a session
//! cookie (HttpOnly, SameSite=Strict, path `/ui`) holding a random id, never
//! the token. Paths are parsed into ids and a `Stage` first, as in the API;
//! an archived mail is found by series id and patch index and read through
//! the archive's checked relative path.

pub mod pages;

use super::api::{self, SeriesDetail, SeriesQuery, SeriesSummary};
use super::error::ApiError;
use super::{ServerState, stage_log};
use crate::checks::TestResult;
use crate::mail::archive::Archive;
use crate::stage::build::TargetBuild;
use crate::stage::publish::PublishSummary;
use crate::stage::test::TestSummary;
use crate::store::{SeriesFilter, SeriesState, Stage, Store};
use crate::yum::PublishedRepo;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;

/// The status page's root.
pub const ROOT: &str = "/ui";
/// The login form: the one `/ui/` path that needs no token or session.
pub const LOGIN: &str = "/ui/login";
const COOKIE: &str = "patchline_session";
/// The end of a stage log the page shows; the API serves all of it.
const LOG_TAIL: u64 = 1024 * 1024;
const RECENT: u32 = 20;
const SERIES_PAGE: u32 = 50;

/// No script, nothing from elsewhere: what a hostile subject could inject
/// into a page would not run even if escaping failed.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An error as a page (the API's errors are JSON).
#[derive(Debug)]
pub struct UiError(ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError(e)
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }
    fn error_response(&self) -> HttpResponse {
        html(
            self.0.status,
            pages::error(self.0.status.as_u16(), &self.0.message),
        )
    }
}

fn html(status: StatusCode, page: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.into_string())
}

fn plain_text(bytes: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(bytes)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The session cookie's value, if the request has one.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// Whether `path` (as requested, not decoded) is a status page path, where
/// a session is enough. Dot segments and percent escapes are not: the
/// router would decode them and might land elsewhere (`/ui/../api/...`),
/// so such a path is held to the API's rules.
pub fn is_ui_path(path: &str) -> bool {
    (path == ROOT || path.starts_with("/ui/")) && !path.contains("..") && !path.contains('%')
}

/// Whether the request carries a live login session.
pub fn has_session(req: &HttpRequest, state: &ServerState) -> bool {
    session_cookie(req).is_some_and(|c| state.sessions.valid(&c, crate::store::now()))
}

/// Where a login may send the browser afterwards: a status page path, or
/// the status page itself. Anything else (another site, `//host`, a
/// backslash, control characters) is the status page.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with(LOGIN)
                && !n.contains("//")
                && !n.contains("..")
                && !n.contains('\\')
                && n.len() <= 2000
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/ui/",
    }
}

/// The answer to a status page request without a token or session: the
/// login form, which comes back to the page asked for (a `GET`).
pub fn login_redirect(req: &HttpRequest) -> HttpResponse {
    let asked = match req.query_string() {
        "" => req.path().to_owned(),
        q => format!("{}?{q}", req.path()),
    };
    let next = safe_next(Some(&asked));
    if req.method() != actix_web::http::Method::GET || next == "/ui/" {
        return see_other(LOGIN);
    }
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    see_other(&format!("{LOGIN}?{query}"))
}

fn cookie(req: &HttpRequest, value: &str, max_age: i64) -> String {
    // Secure whenever the browser came over https (directly or through a
    // proxy that says so); plain http on a LAN must still be able to log in.
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path={ROOT}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub async fn login_form(query: web::Query<NextQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    html(StatusCode::OK, pages::login(None, next))
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<ServerState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, UiError> {
    let next = safe_next(form.next.as_deref()).to_owned();
    if state.tokens.access(form.token.trim()).is_none() {
        tracing::warn!("status page login with a wrong token");
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            pages::login(
                Some("That is not this worker's token: give the API token or the read-only token."),
                &next,
            ),
        ));
    }
    let session = state
        .sessions
        .open(crate::store::now())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .insert_header((
            header::SET_COOKIE,
            cookie(&req, &session, super::auth::SESSION_SECS),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

pub async fn logout(req: HttpRequest, state: web::Data<ServerState>) -> HttpResponse {
    if let Some(c) = session_cookie(&req) {
        state.sessions.close(&c);
    }
    let mut to = see_other(LOGIN);
    if let Ok(v) = header::HeaderValue::from_str(&cookie(&req, "", 0)) {
        to.headers_mut().insert(header::SET_COOKIE, v);
    }
    to
}

pub async fn to_root() -> HttpResponse {
    see_other("/ui/")
}

pub async fn index(state: web::Data<ServerState>) -> Result<HttpResponse, UiError> {
    let (runs, series) = api::read(&state, |store, _| {
        store.snapshot(|s| {
            let runs: Vec<_> = s
                .runs_before(i64::MAX, RECENT)?
                .into_iter()
                .map(api::summary_of)
                .collect();
            let series: Vec<SeriesSummary> = s
                .series_page(&SeriesFilter::default(), RECENT)?
                .into_iter()
                .map(api::series_summary)
                .collect();
            Ok::<_, ApiError>((runs, series))
        })
    })
    .await?;
    Ok(html(StatusCode::OK, pages::index(&runs, &series)))
}

pub async fn run_page(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let run = api::parse_run(&path)?;
    let (view, series) = api::read(&state, move |store, st| {
        store.snapshot(|s| {
            let view = api::load_run(s, st, run)?;
            let series: Vec<SeriesSummary> = s
                .series_applied_in(run)?
                .into_iter()
                .map(api::series_summary)
                .collect();
            Ok::<_, ApiError>((view, series))
        })
    })
    .await?;
    Ok(html(StatusCode::OK, pages::run(&view, &series)))
}

pub async fn stage_log_page(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, UiError> {
    let run = api::parse_run(&path.0)?;
    let stage = api::parse_stage(&path.1)?;
    let text = api::read(&state, move |store, st| {
        store.run(run)?;
        let file = stage_log::path(&st.jobs.logs, run, stage);
        let size = stage_log::size(&file);
        let from = size.saturating_sub(LOG_TAIL);
        let chunk = stage_log::read_chunk(&file, from, LOG_TAIL as usize)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut text = Vec::new();
        if from > 0 {
            text.extend_from_slice(
                format!(
                    "[the first {from} bytes are left out; GET /api/v1/runs/{run}/stages/{stage}/log serves the whole log]\n"
                )
                .as_bytes(),
            );
        }
        text.extend_from_slice(&chunk.bytes);
        Ok(text)
    })
    .await?;
    Ok(plain_text(text))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    repo: Option<String>,
    before: Option<String>,
}

pub async fn series_list(
    state: web::Data<ServerState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, UiError> {
    // The form sends empty fields for "any".
    let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (filter, _) = api::series_filter(&SeriesQuery {
        state: some(&query.state),
        repo: some(&query.repo),
        since: None,
        limit: None,
        before: some(&query.before),
    })?;
    let repos = state.repos.clone();
    let shown = filter.clone();
    let (series, next) = api::read(&state, move |store, _| {
        let rows = store.series_page(&filter, SERIES_PAGE + 1)?;
        let more = rows.len() > SERIES_PAGE as usize;
        let series: Vec<SeriesSummary> = rows
            .into_iter()
            .take(SERIES_PAGE as usize)
            .map(api::series_summary)
            .collect();
        let next = match (more, series.last()) {
            (true, Some(last)) => Some(api::next_series_page(
                "/ui/series",
                &SeriesFilter {
                    before: None,
                    ..filter
                },
                SERIES_PAGE,
                last.id,
            )),
            _ => None,
        };
        Ok((series, next))
    })
    .await?;
    Ok(html(
        StatusCode::OK,
        pages::series_list(&series, &shown, &repos, next.as_deref()),
    ))
}

/// What the run that applied a series did with its branch afterwards:
/// the builds per target, their tests and the repositories published.
#[derive(Debug, Default)]
pub struct SeriesResults {
    pub run: i64,
    pub builds: Vec<TargetBuild>,
    pub tests: Vec<TestResult>,
    pub published: Vec<PublishedRepo>,
}

fn series_results(store: &Store, detail: &SeriesDetail) -> Result<Option<SeriesResults>, ApiError> {
    let s = &detail.series;
    let applied = detail
        .applied
        .as_ref()
        .is_some_and(|a| a.state.as_deref() == Some(SeriesState::Applied.as_str()));
    let (Some(run), Some(repo), Some(branch), true) = (
        s.applied_run,
        s.repo.as_deref(),
        s.branch.as_deref(),
        applied,
    ) else {
        return Ok(None);
    };
    let on_branch = |r: &str, b: &str| r == repo && b == branch;
    let builds: Vec<TargetBuild> = store
        .builds_of_run::<TargetBuild>(run)?
        .into_iter()
        .filter(|b| on_branch(&b.repo, &b.branch))
        .collect();
    let stages = store.stages(run)?;
    let summary_of = |stage: Stage| {
        stages
            .iter()
            .find(|r| r.stage == stage)
            .and_then(|r| r.summary.clone())
    };
    let tests = summary_of(Stage::Test)
        .and_then(|v| serde_json::from_value::<TestSummary>(v).ok())
        .map(|t| t.results)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| on_branch(&t.repo, &t.branch))
        .collect();
    let published = summary_of(Stage::Publish)
        .and_then(|v| serde_json::from_value::<PublishSummary>(v).ok())
        .map(|p| p.repos)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.repo == repo && p.branch.as_deref().is_none_or(|b| b == branch))
        .collect();
    Ok(Some(SeriesResults {
        run,
        builds,
        tests,
        published,
    }))
}

pub async fn series_page(
    state: web::Data<ServerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = api::parse_series(&path)?;
    let (detail, results) = api::read(&state, move |store, _| {
        store.snapshot(|s| {
            let detail = api::load_series(s, id)?;
            let results = series_results(s, &detail)?;
            Ok::<_, ApiError>((detail, results))
        })
    })
    .await?;
    Ok(html(
        StatusCode::OK,
        pages::series(&detail, results.as_ref()),
    ))
}

/// An archived mail of a series, as received (plain text, never rendered).
pub async fn archived_mail(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, UiError> {
    let id = api::parse_series(&path.0)?;
    let index: u32 = path.1.parse().map_err(|_| {
        ApiError::not_found(
            "no such mail: mails are numbered by patch index (0 is the cover letter)",
        )
    })?;
    let bytes = api::read(&state, move |store, st| {
        let patch = store
            .series_patches(id)?
            .into_iter()
            .find(|p| p.idx == index)
            .ok_or_else(|| ApiError::not_found(format!("series {id} has no mail {index}")))?;
        Archive::new(st.jobs.config.intake.archive_dir.clone())
            .read_raw(&patch.archive_path)
            .map_err(|e| {
                ApiError::not_found(format!(
                    "the archived mail {index} of series {id} cannot be read: {e}"
                ))
            })
    })
    .await?;
    Ok(plain_text(bytes))
}

/// The status page's routes (the token middleware guards all but the login).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let wrong = || web::to(api::wrong_method);
    cfg.service(web::resource(ROOT).get(to_root).default_service(wrong()))
        .service(
            web::scope(ROOT)
                .service(web::resource("/").get(index).default_service(wrong()))
                .service(
                    web::resource("/login")
                        .get(login_form)
                        .post(login)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/logout")
                        .post(logout)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/runs/{run}")
                        .get(run_page)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/runs/{run}/stages/{stage}/log")
                        .get(stage_log_page)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/series")
                        .get(series_list)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/series/{series}")
                        .get(series_page)
                        .default_service(wrong()),
                )
                .service(
                    web::resource("/series/{series}/mails/{index}")
                        .get(archived_mail)
                        .default_service(wrong()),
                ),
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_only_sends_the_browser_back_to_the_status_page() {
        assert_eq!(safe_next(Some("/ui/runs/3")), "/ui/runs/3");
        assert_eq!(
            safe_next(Some("/ui/series?state=applied&repo=hello")),
            "/ui/series?state=applied&repo=hello"
        );
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example/ui/"),
            Some("/ui//evil.example"),
            Some("/ui/\\evil"),
            Some("/ui/a b"),
            Some("/ui/login"),
            Some("/api/v1/runs"),
            Some("/ui/x\n"),
            Some("/ui/../api/v1/runs"),
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad:?}");
        }
        assert!(is_ui_path("/ui") && is_ui_path("/ui/series/1"));
        for not in [
            "/uix",
            "/ui/../api/v1/runs",
            "/ui/%2e%2e/api",
            "/api/v1/ui/",
        ] {
            assert!(!is_ui_path(not), "{not}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, "a=1; patchline_session=abc ; b=2"))
            .to_http_request();
        assert_eq!(session_cookie(&req).as_deref(), Some("abc"));
        let req = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(session_cookie(&req), None);
        let c = cookie(&req, "v", 60);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"),
            "{c}"
        );
        assert!(!c.contains("Secure"), "plain http: {c}");
    }
}
