//! `patchline serve`: the HTTP worker Jenkins (or curl) drives. It owns
//! routing, authentication, request limits and the stage jobs; what may
//! start and how a run ends is the state machine's (`crate::stage`), which
//! the jobs call (`stage::admit_queued`, `stage::execute`) and never
//! second-guess.
//!
//! It never runs without a token, never logs one, and never turns request
//! text into a path, a query string or a command.

pub mod api;
pub mod auth;
pub mod error;
pub mod jobs;
pub mod junit;
pub mod metrics;
pub mod stage_log;
pub mod ui;

use crate::config::Config;
use crate::store::Store;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, ResponseError, web};
use error::ApiError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest request body accepted (the only bodies are small JSON objects).
pub const MAX_BODY: usize = 16 * 1024;
/// Read connections kept for reuse.
const READER_POOL: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Token(#[from] auth::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server stopped: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot create the publish directory {path}: {source}")]
    PublishDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Usage for what the admin must fix in config or token, unreachable
    /// when the address cannot be bound (taken by another process).
    pub fn exit(&self) -> crate::stage::Exit {
        use crate::stage::Exit;
        match self {
            Error::Bind { .. } | Error::Serve(_) => Exit::Unreachable,
            Error::Store(_) => Exit::StageFailed,
            _ => Exit::Usage,
        }
    }
}

/// Shared by every request handler.
pub struct ServerState {
    pub jobs: Arc<jobs::JobContext>,
    tokens: auth::Tokens,
    /// The status page's login sessions.
    sessions: auth::Sessions,
    /// The one connection that admits runs and stages (serialises them).
    writer: Mutex<Store>,
    readers: Mutex<Vec<Store>>,
    /// Names of the configured repositories.
    repos: Vec<String>,
}

impl ServerState {
    fn reader(&self) -> Result<Store, ApiError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(store) => Ok(store),
            None => Ok(Store::open_reader(&self.jobs.db)?),
        }
    }

    fn give_back(&self, store: Store) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READER_POOL {
            pool.push(store);
        }
    }
}

/// Where stage logs go: `logs/` next to the state database.
pub fn logs_dir(config: &Config) -> PathBuf {
    config
        .state
        .db
        .parent()
        .map_or_else(|| PathBuf::from("logs"), |d| d.join("logs"))
}

/// Opens the database, marks jobs of a previous process interrupted, and
/// builds the handlers' shared state.
pub fn prepare(config: Config, tokens: auth::Tokens) -> Result<ServerState, Error> {
    let writer = Store::open(&config.state.db)?;
    let mut writer = writer;
    let interrupted = jobs::prepare(&mut writer)?;
    if interrupted > 0 {
        tracing::warn!(
            "{interrupted} stage job(s) of a previous worker were cut short: marked interrupted"
        );
    }
    let repos = config.repos.iter().map(|r| r.name.clone()).collect();
    let config = Arc::new(config);
    Ok(ServerState {
        jobs: Arc::new(jobs::JobContext {
            db: config.state.db.clone(),
            logs: logs_dir(&config),
            config,
            running: Default::default(),
        }),
        tokens,
        sessions: auth::Sessions::default(),
        writer: Mutex::new(writer),
        readers: Mutex::new(Vec::new()),
        repos,
    })
}

/// Every request but `/api/v1/healthz` needs the bearer token: 401 when
/// there is none, 403 when it is wrong. Unknown paths are refused the same
/// way, so the API cannot be mapped without the token. The read-only token
/// reads (`GET`) and never starts anything. The status page (`/ui/`) also
/// takes a login session; without one it sends the browser to its login
/// form, which alone needs nothing.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Health checks, and the published yum repositories: dnf sends no
    // token, and what is published is public by intent.
    if req.path() == "/api/v1/healthz"
        || req.path() == REPOS
        || req.path().starts_with("/repos/")
        || req.path() == ui::LOGIN
    {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let refusal = match req.app_data::<web::Data<ServerState>>() {
        None => Some(ApiError::internal("server state missing")),
        Some(state) => {
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or(""));
            let is_ui = ui::is_ui_path(req.path());
            let session = is_ui && ui::has_session(req.request(), state);
            let read = matches!(req.method().as_str(), "GET" | "HEAD");
            match auth::verdict(&state.tokens, is_ui, read, header, session) {
                auth::Verdict::Allow => None,
                auth::Verdict::Refuse(status, why) => Some(ApiError::new(status, why)),
                auth::Verdict::Login => {
                    let to = ui::login_redirect(req.request());
                    return Ok(req.into_response(to).map_into_right_body());
                }
            }
        }
    };
    match refusal {
        Some(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match &err {
        J::OverflowKnownLength { length, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes is larger than the limit of {limit} bytes"),
        ),
        J::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        ),
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
        ),
        J::Deserialize(e) if e.is_data() => ApiError::invalid(format!("invalid request: {e}")),
        J::Deserialize(e) => ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {other}"),
        ),
    };
    actix_web::error::InternalError::from_response(err, e.error_response()).into()
}

fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let e = ApiError::invalid(format!("invalid query string: {err}"));
    actix_web::error::InternalError::from_response(err, e.error_response()).into()
}

/// Where `serve` serves the publish directory (static files, directory
/// listings, no token): point `[publish] base_url` at `http://HOST:PORT/repos`.
pub const REPOS: &str = "/repos";

/// The application: routes, limits, authentication.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use api::*;
    let wrong = || web::to(wrong_method);
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY)
            .error_handler(json_error),
    )
    .app_data(web::PayloadConfig::new(MAX_BODY))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .service(
        web::scope("/api/v1")
            .service(
                web::resource("/healthz")
                    .get(healthz)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/metrics")
                    .get(metrics)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/openapi.json")
                    .get(openapi)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/runs")
                    .get(list_runs)
                    .post(create_run)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/runs/{run}")
                    .get(get_run)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/runs/{run}/junit.xml")
                    .get(junit_xml)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/runs/{run}/stages/{stage}")
                    .get(get_stage)
                    .post(start_stage)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/runs/{run}/stages/{stage}/log")
                    .get(stage_log)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/series")
                    .get(list_series)
                    .default_service(wrong()),
            )
            .service(
                web::resource("/series/{series}")
                    .get(get_series)
                    .default_service(wrong()),
            ),
    )
    .configure(ui::configure)
    .default_service(web::to(no_route));
}

/// Whether `relative` (a request path under `/repos/`) resolves, symlinks
/// followed, to something inside the publish directory `root` (itself
/// canonical). What does not exist is not inside: a 404 either way.
fn inside(root: &Path, relative: &Path) -> bool {
    std::fs::canonicalize(root.join(relative)).is_ok_and(|real| real.starts_with(root))
}

/// `patchline serve`: loads the config and token, binds, serves until
/// stopped (SIGINT/SIGTERM). Prints `listening on http://ADDR` on stderr
/// once bound (tests and scripts wait for that line).
pub fn serve(
    config_file: &Path,
    bind: Option<&str>,
    token_file: Option<&Path>,
) -> Result<(), Error> {
    let mut config = Config::load(config_file)?;
    if let Some(bind) = bind {
        config.server.bind = bind.to_owned();
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let token = auth::Token::load(token_file, &config.server, &env)?;
    let readonly = auth::Token::load_readonly(&config.server, &env, &token)?;
    let tokens = auth::Tokens {
        full: token,
        readonly,
    };
    let bind = config.server.bind.clone();
    let publish_dir = config.publish_dir();
    std::fs::create_dir_all(&publish_dir).map_err(|source| Error::PublishDir {
        path: publish_dir.clone(),
        source,
    })?;
    // Symlinks in the publish directory (the targets' switch to their
    // snapshot) are followed only when they resolve inside it: a link to
    // /etc or to the state database is not served.
    let root = std::fs::canonicalize(&publish_dir).map_err(|source| Error::PublishDir {
        path: publish_dir.clone(),
        source,
    })?;
    let state = web::Data::new(prepare(config, tokens)?);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(require_token))
                // Method and path only: a query string is never logged, so
                // a token someone put there (it is not accepted there) never
                // reaches a log.
                .wrap(
                    actix_web::middleware::Logger::new("%a \"%{request}xi\" %s %b %T")
                        .custom_request_replace("request", |req| {
                            format!("{} {}", req.method(), req.path())
                        }),
                )
                .service({
                    let root = root.clone();
                    actix_files::Files::new(REPOS, &publish_dir)
                        .show_files_listing()
                        .redirect_to_slash_directory()
                        .path_filter(move |path, _| inside(&root, path))
                })
                .configure(configure)
        })
        .bind(&bind)
        .map_err(|source| Error::Bind {
            bind: bind.clone(),
            source,
        })?;
        for addr in server.addrs() {
            eprintln!("patchline serve: listening on http://{addr}");
        }
        server.run().await.map_err(Error::Serve)
    })
}
