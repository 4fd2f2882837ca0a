//! Fuzz target `image`: see `gvbuild_fuzz::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gvbuild_fuzz::image(data));
