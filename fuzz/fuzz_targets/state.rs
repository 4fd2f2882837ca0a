//! Fuzz target `state`: see `gvbuild_fuzz::state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gvbuild_fuzz::state(data));
