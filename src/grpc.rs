//! gRPC status codes, and the one mapping from a [`StoreError`] to the
//! response the layer makes for it (HTTP status or trailers-only gRPC status).
//!
//! Crate-private: the layer answers gRPC requests (`content-type:
//! application/grpc…`) in gRPC's terms, and reads a trailers-only response's
//! `grpc-status` to tell a failed call from a successful one.

use std::fmt;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};

use crate::error::StoreError;

/// A gRPC status code (the number sent in `grpc-status`).
///
/// Codes outside the 17 defined ones are kept as they are: gRPC reserves
/// them, and a peer may send one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Code(u32);

// Every code gRPC defines, named as in its spec, so that no number is spelled
// out anywhere else.
#[allow(dead_code, reason = "gRPC's full table of codes; the layer uses a few")]
impl Code {
    pub(crate) const OK: Self = Self(0);
    pub(crate) const CANCELLED: Self = Self(1);
    pub(crate) const UNKNOWN: Self = Self(2);
    pub(crate) const INVALID_ARGUMENT: Self = Self(3);
    pub(crate) const DEADLINE_EXCEEDED: Self = Self(4);
    pub(crate) const NOT_FOUND: Self = Self(5);
    pub(crate) const ALREADY_EXISTS: Self = Self(6);
    pub(crate) const PERMISSION_DENIED: Self = Self(7);
    pub(crate) const RESOURCE_EXHAUSTED: Self = Self(8);
    pub(crate) const FAILED_PRECONDITION: Self = Self(9);
    pub(crate) const ABORTED: Self = Self(10);
    pub(crate) const OUT_OF_RANGE: Self = Self(11);
    pub(crate) const UNIMPLEMENTED: Self = Self(12);
    pub(crate) const INTERNAL: Self = Self(13);
    pub(crate) const UNAVAILABLE: Self = Self(14);
    pub(crate) const DATA_LOSS: Self = Self(15);
    pub(crate) const UNAUTHENTICATED: Self = Self(16);
}

impl Code {
    /// The code in a `grpc-status` header value (`1*DIGIT`, in decimal);
    /// `None` for anything else (empty, signs, spaces, too large).
    pub(crate) fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        bytes
            .iter()
            .try_fold(0u32, |n, d| {
                n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
            })
            .map(Self)
    }

    /// Whether gRPC's HTTP mapping turns this code into a 5xx: `UNKNOWN`,
    /// `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
    /// `DATA_LOSS`. A call that ends with one of these failed on the server's
    /// side, and the layer persists nothing for it, as for an HTTP 5xx.
    pub(crate) fn is_server_failure(self) -> bool {
        matches!(
            self,
            Self::UNKNOWN
                | Self::DEADLINE_EXCEEDED
                | Self::UNIMPLEMENTED
                | Self::INTERNAL
                | Self::UNAVAILABLE
                | Self::DATA_LOSS
        )
    }

    /// The `grpc-status` header value.
    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from(self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

/// How the layer answers a [`StoreError`]: the one place that maps an error
/// kind to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The status of a plain HTTP response.
    pub(crate) status: StatusCode,
    /// The `grpc-status` of a gRPC response.
    pub(crate) code: Code,
    /// The `grpc-message` of a gRPC response, before percent-encoding.
    pub(crate) message: &'static str,
}

impl Failure {
    /// The response for `err`: its HTTP status ([`StoreError::status`]),
    /// and for gRPC the code gRPC's HTTP mapping gives that status: `503` is
    /// `UNAVAILABLE` (the client may retry), anything else `INTERNAL`.
    pub(crate) fn of(err: &StoreError) -> Self {
        let status = err.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            Self {
                status,
                code: Code::UNAVAILABLE,
                message: "session store unavailable",
            }
        } else {
            Self {
                status,
                code: Code::INTERNAL,
                message: "session store failed",
            }
        }
    }
}

/// Whether `req` is a gRPC call (`content-type: application/grpc…`).
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a gRPC response's headers carry a `grpc-status` that maps to a
/// 5xx (a trailers-only failure). A status sent in trailers after a body
/// comes too late to be seen here.
pub(crate) fn failed(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .and_then(Code::from_header)
        .is_some_and(Code::is_server_failure)
}

/// The response for a store failure: for a gRPC request a trailers-only gRPC
/// status (`200`, `content-type: application/grpc`, `grpc-status`, a
/// percent-encoded `grpc-message`), otherwise the HTTP status alone. Either
/// way the error goes into the response's extensions.
pub(crate) fn error_response<B: Default>(err: StoreError, grpc: bool) -> Response<B> {
    let failure = Failure::of(&err);
    let mut res = Response::new(B::default());
    if grpc {
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", failure.code.header_value());
        if let Ok(message) = HeaderValue::try_from(percent_encode(failure.message)) {
            h.insert("grpc-message", message);
        }
    } else {
        *res.status_mut() = failure.status;
    }
    res.extensions_mut().insert(err);
    res
}

/// `grpc-message` encoding: every byte but printable ASCII other than `%`
/// and space is sent as `%XX` (space too, as tonic and grpc-go do).
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn codes_parse_from_grpc_status_values() {
        assert_eq!(Code::from_header(&header("0")), Some(Code::OK));
        assert_eq!(Code::from_header(&header("14")), Some(Code::UNAVAILABLE));
        assert_eq!(Code::from_header(&header("014")), Some(Code::UNAVAILABLE));
        assert_eq!(Code::from_header(&header("99")), Some(Code(99)));
        for junk in ["", " 14", "14 ", "+14", "-1", "1a", "0x0e", "99999999999"] {
            assert_eq!(Code::from_header(&header(junk)), None, "{junk:?}");
        }
        assert_eq!(Code::UNAVAILABLE.header_value(), "14");
    }

    #[test]
    fn server_failures_are_the_codes_grpc_maps_to_5xx() {
        let failures: Vec<u32> = (0..=20).filter(|&n| Code(n).is_server_failure()).collect();
        assert_eq!(failures, [2, 4, 12, 13, 14, 15]);
        let mut h = HeaderMap::new();
        assert!(!failed(&h), "no grpc-status: not a trailers-only failure");
        h.insert("grpc-status", header("0"));
        assert!(!failed(&h));
        h.insert("grpc-status", header("5"));
        assert!(
            !failed(&h),
            "NOT_FOUND is the handler's answer, not a failure"
        );
        h.insert("grpc-status", header("13"));
        assert!(failed(&h));
        h.insert("grpc-status", header("junk"));
        assert!(!failed(&h));
    }

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        let req = |ct: &str| {
            Request::builder()
                .header(CONTENT_TYPE, ct)
                .body(())
                .unwrap()
        };
        assert!(is_grpc(&req("application/grpc")));
        assert!(is_grpc(&req("application/grpc+proto")));
        assert!(!is_grpc(&req("application/json")));
        assert!(!is_grpc(&Request::new(())));
    }

    #[test]
    fn each_kind_maps_to_one_status_code_and_message() {
        let cases = [
            (StoreError::unavailable("down"), 503, Code::UNAVAILABLE),
            (
                StoreError::new(crate::StoreErrorKind::Full, "full"),
                503,
                Code::UNAVAILABLE,
            ),
            (StoreError::other("bad"), 500, Code::INTERNAL),
        ];
        for (err, status, code) in cases {
            let f = Failure::of(&err);
            assert_eq!((f.status.as_u16(), f.code), (status, code), "{err:?}");
            assert_eq!(
                err.status(),
                f.status,
                "StoreError::status follows the mapping"
            );
        }
    }

    #[test]
    fn grpc_requests_get_a_grpc_status_on_store_failure() {
        let res: Response<String> = error_response(StoreError::unavailable("down"), true);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(
            res.headers()["grpc-message"],
            "session%20store%20unavailable"
        );
        assert!(res.extensions().get::<StoreError>().is_some());

        let res: Response<String> = error_response(StoreError::other("bad"), true);
        assert_eq!(res.headers()["grpc-status"], "13");
        assert_eq!(res.headers()["grpc-message"], "session%20store%20failed");

        let res: Response<String> = error_response(StoreError::other("bad"), false);
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!res.headers().contains_key("grpc-status"));
        assert!(res.extensions().get::<StoreError>().is_some());
        let res: Response<String> = error_response(StoreError::unavailable("down"), false);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a%20b%25c");
        assert_eq!(percent_encode("ü\n"), "%C3%BC%0A");
        assert_eq!(percent_encode("Store: ok/1"), "Store:%20ok/1");
    }
}
