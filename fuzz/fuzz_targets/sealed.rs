//! Fuzz target `sealed`: see `gvbuild_fuzz::sealed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gvbuild_fuzz::sealed(data));
