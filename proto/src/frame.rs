//! Relay frames: a 4-byte big-endian length, then that many bytes of
//! protobuf (spec/08, "Frames").
//!
//! Only the pure parts live here, so that the relay, the client and the
//! fuzz targets share one definition; reading from a stream is theirs.

use alloc::vec::Vec;
use core::fmt;

use prost::Message;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest frame body any Ward peer accepts, whatever it is configured
/// to: 16 MiB. Relays configure a lower limit.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The stream ended inside a frame.
    Truncated,
    /// The body is not a valid protobuf message of the expected type.
    Malformed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is above the limit of {max}")
            }
            Self::Truncated => f.write_str("stream ended inside a frame"),
            Self::Malformed => f.write_str("frame body is not a valid message"),
        }
    }
}

/// Encodes `message` as one frame.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    // A message above u32::MAX bytes cannot be built from the bounded
    // fields of these schemas; saturating keeps the prefix honest enough
    // for the receiver to refuse it.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut out);
    out
}

/// The body length a header announces, if at most `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    let max = max.min(MAX_FRAME_LEN);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge { len, max })
}

/// Decodes one whole frame (header and body, nothing after) of at most
/// `max` body bytes.
pub fn decode<M: Message + Default>(frame: &[u8], max: u32) -> Result<M, FrameError> {
    let (header, body) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(FrameError::Truncated)?;
    let len = body_len(*header, max)?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    if body.len() > len {
        return Err(FrameError::Malformed);
    }
    M::decode(body).map_err(|_| FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay_v1::{Challenge, Request, Response, request, response};

    #[test]
    fn round_trip() {
        let response = Response {
            body: Some(response::Body::Challenge(Challenge {
                nonce: alloc::vec![7; 32],
            })),
        };
        let frame = encode(&response);
        assert_eq!(frame[..HEADER_LEN], [0, 0, 0, 36]);
        assert_eq!(decode::<Response>(&frame, 1024), Ok(response));
    }

    #[test]
    fn refuses_oversized_truncated_and_trailing() {
        let frame = encode(&Request {
            body: Some(request::Body::Challenge(Default::default())),
        });
        assert_eq!(
            decode::<Request>(&frame, 1),
            Err(FrameError::TooLarge { len: 2, max: 1 })
        );
        assert_eq!(
            decode::<Request>(&frame[..frame.len() - 1], 1024),
            Err(FrameError::Truncated)
        );
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(decode::<Request>(&long, 1024), Err(FrameError::Malformed));
        assert_eq!(
            body_len([0xff; 4], u32::MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: MAX_FRAME_LEN
            })
        );
    }
}
