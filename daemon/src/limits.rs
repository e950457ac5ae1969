//! Message size limits.
//!
//! spored decodes requests up to [`spore_api::MAX_MESSAGE_BYTES`] (the limit the API documents
//! and its client uses); every field that can grow has its own, smaller limit, checked by the
//! handlers, which answer INVALID_ARGUMENT naming the field. A request over the whole-message
//! limit never reaches a handler: tonic refuses it while decoding with OUT_OF_RANGE and a
//! terse message. [`OversizeLayer`] turns that refusal into INVALID_ARGUMENT naming the request
//! and the limit, so callers see one convention for "you sent too much".

use tonic::Status;
use tonic::codegen::http;
use tower::util::MapResponseLayer;

/// The prefix of tonic's decode-limit error (tonic `codec/decode.rs`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The layer applied to every service of the server.
#[derive(Debug, Clone, Copy)]
pub struct OversizeLayer;

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = <MapResponseLayer<fn(Response) -> Response> as tower::Layer<S>>::Service;

    fn layer(&self, inner: S) -> Self::Service {
        MapResponseLayer::new(remap as fn(Response) -> Response).layer(inner)
    }
}

type Response = http::Response<tonic::body::Body>;

/// Rewrites a decode-limit refusal; every other response passes untouched.
fn remap(mut response: Response) -> Response {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let Some(replacement) = oversize_status(&status) else {
        return response;
    };
    // Replacing the two headers keeps the trailers-only shape tonic gave the response.
    if replacement.add_header(response.headers_mut()).is_err() {
        tracing::warn!("cannot rewrite an oversize-request status; passing tonic's through");
    }
    response
}

/// INVALID_ARGUMENT for tonic's "message too large" OUT_OF_RANGE, None for anything else.
pub fn oversize_status(status: &Status) -> Option<Status> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let found = rest.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Status::invalid_argument(format!(
        "request: the message is {found} bytes, over spored's limit of {} bytes \
         (spore_api::MAX_MESSAGE_BYTES); send less (large inputs belong in a file the daemon reads)",
        spore_api::MAX_MESSAGE_BYTES
    )))
}

/// Refuses a reply that would exceed the message limit with a status that says how to ask
/// for less, instead of letting the encoder fail with an opaque error.
pub fn check_reply<M: prost::Message>(reply: &M, narrow: &str) -> Result<(), Status> {
    let len = reply.encoded_len();
    if len > spore_api::MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the reply would be {len} bytes, over the {}-byte message limit: {narrow}",
            spore_api::MAX_MESSAGE_BYTES
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_decode_refusal_becomes_invalid_argument_naming_the_request() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 5242895 bytes, the limit is: 4194304 bytes",
        );
        let status = oversize_status(&tonic).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with(
                "request: the message is 5242895 bytes, over spored's limit of 4194304 bytes"
            ),
            "{}",
            status.message()
        );
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for status in [
            Status::out_of_range("index 7 is out of range"),
            Status::invalid_argument("Error, decoded message length too large: found 1 bytes"),
            Status::out_of_range("Error, decoded message length too large: found lots"),
            Status::ok(""),
        ] {
            assert!(oversize_status(&status).is_none(), "{status:?}");
        }
    }

    #[test]
    fn remap_rewrites_headers_only_for_the_decode_refusal() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 9000000 bytes, the limit is: 4194304 bytes",
        );
        let response = remap(tonic.into_http());
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("9000000 bytes"));
        let other = remap(Status::not_found("zone x not found").into_http());
        let status = Status::from_header_map(other.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[test]
    fn oversized_reply_is_refused_with_advice() {
        let big = spore_api::v1::ListZonesResponse {
            zones: vec![
                spore_api::v1::Zone {
                    name: "x".repeat(1 << 20),
                    ..Default::default()
                };
                5
            ],
            ..Default::default()
        };
        let err = check_reply(&big, "filter by state or name").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().ends_with("filter by state or name"));
        check_reply(&spore_api::v1::ListZonesResponse::default(), "").unwrap();
    }
}
