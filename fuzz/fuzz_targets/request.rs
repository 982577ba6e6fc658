//! Any text as an API frame (and as an HTTP `Range` header of a recording download): never a
//! panic; a refused frame gets one of the client-error codes, never an internal error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::errors::ErrorCode;
use sluice_control::recordings::{ByteRange, parse_range};
use sluice_control::request::{Frame, parse_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_frame(text) {
        Ok(Frame::Request { request, .. }) => {
            request.may_wait();
        }
        Ok(Frame::Ignore) => {}
        Err(e) => {
            let client_error = matches!(
                e.error.code,
                ErrorCode::SyntaxError
                    | ErrorCode::InvalidParameters
                    | ErrorCode::MissingField
                    | ErrorCode::UnknownCommand
            );
            assert!(client_error, "{:?}", e.error);
            e.error.to_data().to_string();
        }
    }
    for size in [0, 1, 100, u64::MAX] {
        match parse_range(Some(text), size) {
            ByteRange::Part(first, last) => assert!(first <= last && last < size),
            ByteRange::Full | ByteRange::Unsatisfiable => {}
        }
    }
});
