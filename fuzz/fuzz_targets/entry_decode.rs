#![no_main]

// Each target uses part of the shared harness.
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::entry_decode(data);
});
