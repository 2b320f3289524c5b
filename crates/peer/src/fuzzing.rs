//! Entry points for the fuzz target in `fuzz/`: untrusted bytes into each decoder, with a
//! round-trip check of what decodes. Not a stable API.

use bytes::Bytes;

use crate::frame::{self, FrameType};
use crate::handshake::{Challenge, Hello, Welcome};
use crate::message::{Event, Request, decode_fatal, decode_response, encode_response};

/// Decodes `data` as selected by `which`: 0 a whole frame (and its payload as its type says),
/// 1 a request, 2 an answer, 3 an event, 4 a handshake message.
pub fn decode(which: u8, data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    match which % 5 {
        0 => {
            if let Ok(f) = frame::decode(data) {
                let again = frame::encode(&f, false).map(|b| frame::decode(&b));
                assert_eq!(again.ok().and_then(Result::ok).as_ref(), Some(&f));
                message(f.kind, f.payload);
            }
        }
        1 => message(FrameType::Request, payload),
        2 => message(FrameType::Response, payload),
        3 => message(FrameType::Event, payload),
        _ => {
            message(FrameType::Hello, payload.clone());
            message(FrameType::Welcome, payload.clone());
            message(FrameType::Challenge, payload);
        }
    }
}

fn message(kind: FrameType, payload: Bytes) {
    match kind {
        FrameType::Request => {
            if let Ok(Some(req)) = Request::decode(payload) {
                assert_eq!(Request::decode(req.encode()), Ok(Some(req)));
            }
        }
        FrameType::Response => {
            if let Ok(Ok(reply)) = decode_response(payload) {
                let again = decode_response(encode_response(&Ok(reply.clone())));
                assert_eq!(again.ok().and_then(Result::ok), Some(reply));
            }
        }
        FrameType::Event => {
            if let Ok(ev) = Event::decode(payload) {
                let bytes = ev.encode();
                let again = Event::decode(bytes.clone()).map(|e| e.encode());
                assert_eq!(again.ok(), Some(bytes));
            }
        }
        FrameType::Hello => {
            if let Ok(h) = Hello::decode(payload) {
                assert_eq!(Hello::decode(h.encode()), Ok(h));
            }
        }
        FrameType::Welcome => {
            if let Ok(w) = Welcome::decode(payload) {
                assert_eq!(Welcome::decode(w.encode()), Ok(w));
            }
        }
        FrameType::Challenge => {
            if let Ok(c) = Challenge::decode(payload) {
                assert_eq!(Challenge::decode(c.encode()), Ok(c));
            }
        }
        FrameType::Error => {
            let _ = decode_fatal(payload);
        }
        _ => {}
    }
}
