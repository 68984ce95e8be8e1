//! Answers the gateway gives itself, and why. Each error knows its status
//! and whether the client may retry.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::classify::TrafficClass;
use crate::quota::Rejection;

/// Why the gateway answered instead of an upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no healthy node serves {0} traffic")]
    NoUpstream(TrafficClass),
    /// No leader is elected (or, in a cluster without election, no
    /// job-capable node is known).
    #[error("no job-engine leader is elected (or no job-capable node is known)")]
    NoLeader,
    #[error("every node tried refused or could not be reached")]
    ConnectFailed,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream failed: {0}")]
    Upstream(String),
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
    #[error("the client sent no body bytes for {0:?}")]
    ClientStalled(std::time::Duration),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// CONNECT (with or without an authority, HTTP/1 or HTTP/2): a Kylin
    /// front door opens no tunnels.
    #[error("the gateway does not tunnel (CONNECT)")]
    Tunnel,
    #[error("the gateway is at its limit of requests in flight")]
    Overloaded,
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// The query's project is over this gateway's share of its quota.
    #[error(transparent)]
    ProjectQuota(Box<Rejection>),
}

impl From<super::body::ClientBodyError> for GatewayError {
    fn from(error: super::body::ClientBodyError) -> GatewayError {
        match error {
            super::body::ClientBodyError::Stalled(after) => GatewayError::ClientStalled(after),
            failed => GatewayError::ClientBody(failed.to_string()),
        }
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoUpstream(_)
            | GatewayError::NoLeader
            | GatewayError::ConnectFailed
            | GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::ClientBody(_) | GatewayError::Malformed(_) => StatusCode::BAD_REQUEST,
            GatewayError::ClientStalled(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Tunnel => StatusCode::NOT_IMPLEMENTED,
            GatewayError::Rejected { status, .. } => *status,
            GatewayError::ProjectQuota(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn client_broke_its_body(&self) -> bool {
        matches!(
            self,
            GatewayError::ClientBody(_) | GatewayError::ClientStalled(_)
        )
    }

    /// Whether the same request may succeed later (then `Retry-After` is set).
    pub fn retryable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// A JSON answer: `{"error": ..., "class": ...}`, or for a project
    /// over its quota, the project, the limit and the shares.
    pub fn into_response(self, class: TrafficClass, retry_after_s: u64) -> Response<ResponseBody> {
        if let GatewayError::ProjectQuota(rejection) = self {
            return quota_response(&rejection);
        }
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string(), "class": class.as_str() });
        let mut response = Response::new(ResponseBody::full(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.retryable() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        if self.client_broke_its_body() {
            // The rest of the body will not be read: the connection cannot
            // carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// 429 with `Retry-After` (for a rate: until the next token) and what
/// was exceeded, so a client (or its operator) can tell a quota from an
/// overload.
fn quota_response(rejection: &Rejection) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "error": "project quota exceeded",
        "project": &*rejection.project,
        "limit": rejection.limit.as_str(),
        "allowed": rejection.allowed,
        "configured": rejection.configured,
        "gateways": rejection.gateways,
    });
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(rejection.retry_after_s.max(1)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let cases = [
            (GatewayError::NoUpstream(TrafficClass::Query), 503, true),
            (GatewayError::NoLeader, 503, true),
            (GatewayError::ConnectFailed, 503, true),
            (GatewayError::Overloaded, 503, true),
            (GatewayError::UpstreamTimeout, 504, false),
            (GatewayError::Upstream("reset".into()), 502, false),
            (GatewayError::ClientBody("eof".into()), 400, false),
            (
                GatewayError::ClientStalled(std::time::Duration::from_secs(60)),
                408,
                false,
            ),
        ];
        for (error, status, retry) in cases {
            let response = error.into_response(TrafficClass::Job, 7);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers().contains_key(header::RETRY_AFTER), retry);
            if retry {
                assert_eq!(response.headers()[header::RETRY_AFTER], "7");
            }
        }
    }

    #[tokio::test]
    async fn a_quota_rejection_is_429_naming_the_project_and_limit() {
        use http_body_util::BodyExt;
        let rejection = Rejection {
            project: "learn_kylin".into(),
            limit: crate::quota::LimitKind::RatePerS,
            allowed: 50,
            configured: 100,
            gateways: 2,
            retry_after_s: 3,
        };
        let error = GatewayError::ProjectQuota(Box::new(rejection));
        assert_eq!(error.status().as_u16(), 429);
        let response = error.into_response(TrafficClass::Query, 7);
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "project quota exceeded", "project": "learn_kylin",
                "limit": "rate_per_s", "allowed": 50, "configured": 100, "gateways": 2})
        );
    }
}
