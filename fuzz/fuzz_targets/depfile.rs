//! Fuzz target `depfile`: see `gvbuild_fuzz::depfile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gvbuild_fuzz::depfile(data));
