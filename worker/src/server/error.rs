//! The API's error responses: one JSON shape for every refusal, with the
//! status a client can act on and a message a person can.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, repeated for clients that only keep the body.
    pub status: u16,
    /// A short machine-readable kind: `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `invalid`, `bad_request`, `too_large`,
    /// `unsupported_media_type`, `method_not_allowed`, `internal`.
    pub error: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// For a conflict with another run: that run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub run: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            run: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>, run: Option<i64>) -> Self {
        ApiError {
            run,
            ..Self::new(StatusCode::CONFLICT, message)
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "too_large",
            415 => "unsupported_media_type",
            422 => "invalid",
            _ => "internal",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::NoSuchRun(id) => {
                ApiError::not_found(format!("run {id} does not exist"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"patchline\""));
        }
        response.json(ErrorBody {
            status: self.status.as_u16(),
            error: self.kind().to_owned(),
            message: self.message.clone(),
            run: self.run,
        })
    }
}
