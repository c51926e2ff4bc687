//! Relay frames (spec/08, "Frames") on arbitrary bytes: `frame::body_len`,
//! `frame::decode` of `Request`, `Response` and `Push` under several limits,
//! and a delivery-stream reader that walks consecutive `Push` frames.
//!
//! Every byte a relay reads from a request stream, and every byte a client
//! reads from a response or the delivery stream, is controlled by the peer.
//! Nothing here may panic, and:
//!
//! - the limit acts exactly as spec/08 says: an announced length above
//!   `min(limit, MAX_FRAME_LEN)` is `TooLarge` whatever follows, and below it
//!   the result does not depend on the limit;
//! - a frame is refused as `Truncated` exactly when fewer bytes follow the
//!   header than it announces, and as `Malformed` when more follow;
//! - whatever decodes re-encodes to a frame that decodes to the same value,
//!   and re-encoding that value gives the same bytes again.
//!
//! Each input is also taken as a bare body (the fuzzer need not guess a
//! matching length prefix to reach the protobuf parser).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_proto::Message;
use ward_proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use ward_proto::relay_v1::{Push, Request, Response};

/// The relay's default `limits.max_frame_len` (spec/08, "Limits").
const RELAY_DEFAULT_MAX: u32 = 4 * 1024 * 1024;

/// Checks `frame::decode::<M>` on `data` against the oracle of spec/08, and
/// the round trip of anything it accepts.
fn frame_as<M: Message + Default + PartialEq + core::fmt::Debug>(data: &[u8], small: u32) {
    let unbounded = frame::decode::<M>(data, u32::MAX);
    let announced = data
        .first_chunk::<HEADER_LEN>()
        .map(|header| u32::from_be_bytes(*header));
    match (&unbounded, announced) {
        (Err(FrameError::Truncated), None) => {}
        (_, None) => panic!("a frame shorter than its header gave {unbounded:?}"),
        (Err(FrameError::TooLarge { len, max }), Some(n)) => {
            assert_eq!((*len, *max), (n, MAX_FRAME_LEN), "wrong TooLarge");
            assert!(n > MAX_FRAME_LEN, "refused a length within MAX_FRAME_LEN");
        }
        (result, Some(n)) => {
            assert!(n <= MAX_FRAME_LEN, "accepted a length above MAX_FRAME_LEN");
            let body = data.len() - HEADER_LEN;
            let n = n as usize;
            match result {
                Err(FrameError::Truncated) => assert!(body < n, "Truncated with a whole body"),
                Err(FrameError::Malformed) => assert!(
                    body > n || M::decode(&data[HEADER_LEN..]).is_err(),
                    "Malformed, yet the body is exactly one valid message"
                ),
                Ok(message) => {
                    assert_eq!(body, n, "accepted a frame whose body has another length");
                    round_trip(message);
                }
                Err(FrameError::TooLarge { .. }) => unreachable!("handled above"),
            }
        }
    }

    // Lower limits: refused as TooLarge exactly when the announced length is
    // above them, and otherwise the same answer as without a limit.
    for limit in [0, small, RELAY_DEFAULT_MAX, MAX_FRAME_LEN] {
        let bounded = frame::decode::<M>(data, limit);
        match announced {
            Some(n) if n > limit => assert_eq!(
                bounded,
                Err(FrameError::TooLarge { len: n, max: limit }),
                "limit {limit} not applied"
            ),
            _ => assert_eq!(bounded, unbounded, "limit {limit} changed the result"),
        }
    }
}

/// Encodes `message` as a frame, decodes it again and compares.
fn round_trip<M: Message + Default + PartialEq + core::fmt::Debug>(message: &M) {
    let encoded = frame::encode(message);
    let len = message.encoded_len();
    assert_eq!(encoded.len(), HEADER_LEN + len, "frame length is not header + body");
    assert_eq!(
        encoded[..HEADER_LEN],
        u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes(),
        "length prefix does not announce the body"
    );
    let again = frame::decode::<M>(&encoded, MAX_FRAME_LEN)
        .unwrap_or_else(|e| panic!("a re-encoded frame does not decode: {e:?}"));
    assert_eq!(&again, message, "the round trip changed the message");
    assert_eq!(frame::encode(&again), encoded, "encoding is not stable");
}

/// `data` as a protobuf body, framed by us.
fn body_as<M: Message + Default + PartialEq + core::fmt::Debug>(data: &[u8]) {
    let Ok(message) = M::decode(data) else {
        return;
    };
    let Ok(len) = u32::try_from(data.len()) else {
        return;
    };
    let mut framed = Vec::with_capacity(HEADER_LEN + data.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(data);
    assert_eq!(
        frame::decode::<M>(&framed, MAX_FRAME_LEN).as_ref(),
        Ok(&message),
        "a valid body in a correct frame was refused"
    );
    round_trip(&message);
}

/// A client reading the delivery stream: frame after frame until the bytes
/// run out or a frame is refused (after which the stream cannot be
/// resynchronized and the client closes the connection).
fn delivery_stream(mut data: &[u8]) {
    while let Some((header, rest)) = data.split_first_chunk::<HEADER_LEN>() {
        let Ok(len) = frame::body_len(*header, MAX_FRAME_LEN) else {
            return;
        };
        if rest.len() < len {
            return;
        }
        let (whole, next) = data.split_at(HEADER_LEN + len);
        match frame::decode::<Push>(whole, MAX_FRAME_LEN) {
            Ok(push) => round_trip(&push),
            Err(FrameError::Malformed) => return,
            Err(e) => panic!("a frame cut to its announced length gave {e:?}"),
        }
        data = next;
    }
}

fuzz_target!(|data: &[u8]| {
    // body_len alone, for a few limits around the announced length.
    if let Some(header) = data.first_chunk::<HEADER_LEN>() {
        let n = u32::from_be_bytes(*header);
        for max in [0, n.saturating_sub(1), n, n.saturating_add(1), MAX_FRAME_LEN, u32::MAX] {
            let effective = max.min(MAX_FRAME_LEN);
            match frame::body_len(*header, max) {
                Ok(len) => {
                    assert!(n <= effective, "accepted {n} above {effective}");
                    assert_eq!(len, n as usize);
                }
                Err(e) => {
                    assert!(n > effective, "refused {n} within {effective}");
                    assert_eq!(e, FrameError::TooLarge { len: n, max: effective });
                }
            }
        }
    }

    // A small limit the input chooses, so that TooLarge is reached often.
    let small = u32::from(data.get(4).copied().unwrap_or(0));
    frame_as::<Request>(data, small);
    frame_as::<Response>(data, small);
    frame_as::<Push>(data, small);

    body_as::<Request>(data);
    body_as::<Response>(data);
    body_as::<Push>(data);

    delivery_stream(data);
});
