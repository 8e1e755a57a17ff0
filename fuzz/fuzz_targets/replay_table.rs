#![no_main]

// Each target uses part of the shared harness.
#[path = "../../tests/crash_model/mod.rs"]
mod crash_model;
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::replay_table(data);
});
