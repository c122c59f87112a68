//! Arbitrary bytes through decode -> parse (every format, and sniffing) -> clean, plus the
//! timestamp parser on the decoded text. Any panic is a bug: the engine must reject bad input
//! with an error or a parse issue, never crash.

#![no_main]

#[path = "../../crates/alpo-core/tests/support/checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check_bytes(data));
