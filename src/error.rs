//! `ApiError`: every failure a client can see, rendered as the contract's
//! JSON shape. The table of error codes and their HTTP statuses is here, in
//! one place, and so is every conversion from a domain error; the internal
//! cause of a failure travels in a response extension and is logged once, by
//! the request's `finished` line (`http::middleware::on_response`).

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::analytics::AnalyticsError;
use crate::cache::keys::ScopeError;
use crate::db::DbError;
use crate::model::{QueryError, QueryErrorCode};
use crate::redis::RedisUnavailable;
use crate::telemetry::ErrorChain;
use crate::tenancy::rate_limit::Decision;
use crate::tenancy::AuthError;

/// Declares [`ErrorCode`]: variant, wire code and status, one row each.
macro_rules! error_codes {
    ($($variant:ident = $code:literal => $status:ident,)*) => {
        /// Every stable machine-readable code a client can receive.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    // 400: the request's shape is wrong.
    MalformedJson = "malformed_json" => BAD_REQUEST,
    InvalidRequest = "invalid_request" => BAD_REQUEST,
    BadRequest = "bad_request" => BAD_REQUEST,
    // 401, 403, 404, 405, 413, 415: who, where, how big, what format.
    Unauthorized = "unauthorized" => UNAUTHORIZED,
    Forbidden = "forbidden" => FORBIDDEN,
    NotFound = "not_found" => NOT_FOUND,
    MethodNotAllowed = "method_not_allowed" => METHOD_NOT_ALLOWED,
    PayloadTooLarge = "payload_too_large" => PAYLOAD_TOO_LARGE,
    UriTooLong = "uri_too_long" => URI_TOO_LONG,
    HeadersTooLarge = "headers_too_large" => REQUEST_HEADER_FIELDS_TOO_LARGE,
    UnsupportedMediaType = "unsupported_media_type" => UNSUPPORTED_MEDIA_TYPE,
    // 422: the request is well-formed but means something we refuse.
    UnknownDataset = "unknown_dataset" => UNPROCESSABLE_ENTITY,
    UnknownMetric = "unknown_metric" => UNPROCESSABLE_ENTITY,
    UnknownDimension = "unknown_dimension" => UNPROCESSABLE_ENTITY,
    UnknownOperator = "unknown_operator" => UNPROCESSABLE_ENTITY,
    InvalidMetrics = "invalid_metrics" => UNPROCESSABLE_ENTITY,
    InvalidDimensions = "invalid_dimensions" => UNPROCESSABLE_ENTITY,
    InvalidFilter = "invalid_filter" => UNPROCESSABLE_ENTITY,
    InvalidFilterValue = "invalid_filter_value" => UNPROCESSABLE_ENTITY,
    InvalidDate = "invalid_date" => UNPROCESSABLE_ENTITY,
    InvalidDateRange = "invalid_date_range" => UNPROCESSABLE_ENTITY,
    InvalidOrderBy = "invalid_order_by" => UNPROCESSABLE_ENTITY,
    InvalidLimit = "invalid_limit" => UNPROCESSABLE_ENTITY,
    InvalidOffset = "invalid_offset" => UNPROCESSABLE_ENTITY,
    InvalidValue = "invalid_value" => UNPROCESSABLE_ENTITY,
    UnknownTenant = "unknown_tenant" => UNPROCESSABLE_ENTITY,
    InvalidTenant = "invalid_tenant" => UNPROCESSABLE_ENTITY,
    InvalidKey = "invalid_key" => UNPROCESSABLE_ENTITY,
    InvalidPrefix = "invalid_prefix" => UNPROCESSABLE_ENTITY,
    TooManyQueries = "too_many_queries" => UNPROCESSABLE_ENTITY,
    // 429: over the tenant's rate limit.
    RateLimited = "rate_limited" => TOO_MANY_REQUESTS,
    // 5xx: our side.
    InternalError = "internal_error" => INTERNAL_SERVER_ERROR,
    ModelError = "model_error" => INTERNAL_SERVER_ERROR,
    DatabaseUnavailable = "database_unavailable" => SERVICE_UNAVAILABLE,
    CacheUnavailable = "cache_unavailable" => SERVICE_UNAVAILABLE,
    Overloaded = "overloaded" => SERVICE_UNAVAILABLE,
    AuthUnavailable = "auth_unavailable" => SERVICE_UNAVAILABLE,
    QueryTimeout = "query_timeout" => GATEWAY_TIMEOUT,
    NotCached = "not_cached" => GATEWAY_TIMEOUT,
    RequestTimeout = "request_timeout" => GATEWAY_TIMEOUT,
}

/// A client-facing error: code (and so status), human message and the
/// request field at fault. The internal cause is logged, never sent.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for the `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// Extra response headers (challenge on 401, rate-limit headers on 429).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What went wrong inside, for the log line of this request.
    pub cause: Option<String>,
}

/// The internal cause of an error response, for the request's log line.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// The body shape of every error: `{"error": {code, message, field}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unknown_metric`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            headers: Vec::new(),
            cause: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// 401 with the `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut error = Self::new(ErrorCode::Unauthorized, message);
        error
            .headers
            .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        error
    }

    /// The admin endpoints answer this while no admin token is configured.
    pub fn admin_disabled() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "admin endpoints are disabled: set ADMIN_TOKEN (or APP__AUTH__ADMIN_TOKEN) to enable them",
        )
    }

    /// A server-side fault: a generic message for the client, the cause
    /// (with its whole `source()` chain) for the log.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Self::new(ErrorCode::InternalError, "internal server error").with_cause(ErrorChain(cause))
    }

    /// 429 with `Retry-After` and the rate-limit headers.
    pub fn rate_limited(decision: &Decision) -> Self {
        let mut error = Self::new(
            ErrorCode::RateLimited,
            format!(
                "rate limit of {} requests per minute exceeded; retry later",
                decision.limit
            ),
        )
        .with_retry_after(decision.retry_after_seconds.max(1));
        error.headers.extend(decision.headers());
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        response
    }
}

impl From<QueryErrorCode> for ErrorCode {
    fn from(code: QueryErrorCode) -> Self {
        match code {
            QueryErrorCode::MalformedJson => Self::MalformedJson,
            QueryErrorCode::InvalidRequest => Self::InvalidRequest,
            QueryErrorCode::UnknownDataset => Self::UnknownDataset,
            QueryErrorCode::UnknownMetric => Self::UnknownMetric,
            QueryErrorCode::UnknownDimension => Self::UnknownDimension,
            QueryErrorCode::UnknownOperator => Self::UnknownOperator,
            QueryErrorCode::InvalidMetrics => Self::InvalidMetrics,
            QueryErrorCode::InvalidDimensions => Self::InvalidDimensions,
            QueryErrorCode::InvalidFilter => Self::InvalidFilter,
            QueryErrorCode::InvalidFilterValue => Self::InvalidFilterValue,
            QueryErrorCode::InvalidDate => Self::InvalidDate,
            QueryErrorCode::InvalidDateRange => Self::InvalidDateRange,
            QueryErrorCode::InvalidOrderBy => Self::InvalidOrderBy,
            QueryErrorCode::InvalidLimit => Self::InvalidLimit,
            QueryErrorCode::InvalidOffset => Self::InvalidOffset,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let base = ApiError::new(error.code.into(), error.message);
        match error.field {
            Some(field) => base.with_field(field),
            None => base,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Timeout => ApiError::new(
                ErrorCode::QueryTimeout,
                "the query exceeded the database statement timeout; narrow the date range or filters",
            )
            .with_cause("query exceeded the database statement timeout"),
            DbError::Unavailable(cause) => ApiError::new(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable and the result is not cached; retry shortly",
            )
            .with_retry_after(1)
            .with_cause(format!("database unavailable: {cause}")),
            DbError::Overloaded(cause) => ApiError::new(
                ErrorCode::Overloaded,
                "the database is at its limit of statements and the result is not cached; retry shortly",
            )
            .with_retry_after(1)
            .with_cause(format!("load shed: {cause}")),
            DbError::InvalidValue(cause) => ApiError::new(
                ErrorCode::InvalidValue,
                "the database cannot take a value of this query (a character it cannot store, \
                 or a number out of range); check the filter values",
            )
            .with_cause(cause),
            DbError::Model(ref cause) => ApiError::new(
                ErrorCode::ModelError,
                format!(
                    "the semantic model does not match the database ({}); the operator must fix the model or the schema",
                    cause.split(": the database refuses it").next().unwrap_or("see the server log")
                ),
            )
            .with_cause(&error),
            DbError::Query(_) => ApiError::internal(&error),
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Query(error) => error.into(),
            AnalyticsError::Database(error) => error.into(),
            AnalyticsError::NotCached => ApiError::new(
                ErrorCode::NotCached,
                "`Cache-Control: only-if-cached` was sent and nothing usable is cached for this query",
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unavailable => ApiError::new(ErrorCode::AuthUnavailable, error.to_string()).with_retry_after(1),
            AuthError::Missing | AuthError::Invalid => ApiError::unauthorized(error.to_string()),
        }
    }
}

impl From<ScopeError> for ApiError {
    fn from(error: ScopeError) -> Self {
        let (code, field) = match &error {
            ScopeError::ForeignTenant => (ErrorCode::Forbidden, "tenant"),
            ScopeError::InvalidTenant(_) => (ErrorCode::InvalidTenant, "tenant"),
            ScopeError::InvalidDataset(_) => (ErrorCode::UnknownDataset, "dataset"),
            ScopeError::OutsideNamespace { .. } => (ErrorCode::InvalidKey, "key"),
        };
        ApiError::new(code, error.to_string()).with_field(field)
    }
}

impl From<RedisUnavailable> for ApiError {
    fn from(error: RedisUnavailable) -> Self {
        ApiError::new(
            ErrorCode::CacheUnavailable,
            format!("{error}; this instance's L1 was cleared, Redis entries were not"),
        )
        .with_retry_after(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_code_keeps_its_wire_name_and_class() {
        let cases = [
            (QueryErrorCode::MalformedJson, "malformed_json", 400),
            (QueryErrorCode::InvalidRequest, "invalid_request", 400),
            (QueryErrorCode::UnknownMetric, "unknown_metric", 422),
            (QueryErrorCode::InvalidOffset, "invalid_offset", 422),
        ];
        for (query_code, wire, status) in cases {
            let code = ErrorCode::from(query_code);
            assert_eq!((code.as_str(), code.status().as_u16()), (wire, status));
        }
    }

    #[test]
    fn internal_errors_keep_the_cause_out_of_the_body() {
        let error = ApiError::from(DbError::Query("relation \"secret_table\" does not exist".into()));
        assert_eq!(error.code, ErrorCode::InternalError);
        assert_eq!(error.message, "internal server error");
        assert!(error.cause.as_deref().is_some_and(|c| c.contains("secret_table")));
        let response = error.into_response();
        assert_eq!(response.status(), 500);
        assert!(response.extensions().get::<ErrorCause>().is_some());
    }
}
