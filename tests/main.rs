//! Integration tests: each file is one feature, run against the real `gvbuild` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

mod support;

mod cache_promises;
mod cli;
mod errors;
mod examples;
mod fetch;
mod fetch_git;
mod full_disk;
mod fuzz_corpus;
mod image_native;
mod image_ops;
mod image_roundtrip;
mod incremental;
mod inferred;
mod key_completeness;
mod keys;
mod layers;
mod manifest;
mod nanos_vectors;
mod readme_servers;
mod remote;
mod remote_exec;
mod roundtrip;
mod sandbox;
mod schema;
mod smoke;
mod stage;
mod state_damage;
mod vm;
mod vm_nanos;
mod worker;
