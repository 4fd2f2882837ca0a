//! Fuzz target `config`: see `gvbuild_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gvbuild_fuzz::config(data));
