//! gvbuild: declarative, content-hashed, cached builds for Gevulot prover images.
//!
//! # Architecture, in the order a build flows through it
//!
//! 1. [`cli`]: the command line; each subcommand is a thin function over the modules below.
//! 2. [`config`]: gevulot.yaml as serde types with source spans, var expansion, validation.
//! 3. [`graph`]: the DAG (petgraph), whole-graph checks (cycles, outputs), the dependencies
//!    inferred from inputs that read other targets' outputs, selection, and the parse cache that
//!    keeps YAML parsing off the no-op path.
//! 4. [`fingerprint`]: what goes into a step's key (start reading here: its module docs), file
//!    hashing and the stat cache, the project's state of the last build.
//! 5. [`cache`]: the content-addressed store of blobs and action entries, locks, gc, verify; and
//!    behind it the shared cache ([`cache::remote`], one module per protocol).
//! 6. [`exec`]: the scheduler feeding a rayon pool, the per-step runner (fingerprint -> fresh? ->
//!    restore (local, then remote)? -> run (here, or on a REAPI engine: `exec::remote_exec`)
//!    -> store (local, then upload)), reporting and `--explain`.
//! 7. [`steps`]: one module per built-in step kind; `run` executes shell commands. The native
//!    image builder writes [`disk`] images (boot loader, MBR, boot and root partitions) whose
//!    filesystems are [`tfs`] volumes; [`inspect`] reads any of them back.
//!
//! Beside the build: [`worker`] (`gvbuild worker`) runs other machines' actions for a REAPI
//! engine, over the Remote Workers API, with the shared cache's gRPC client and the `run`
//! step's process handling.
//!
//! Running an image as a Gevulot node does is [`vm`], below the `task` step and `gvbuild run`,
//! which both use it. [`jobs`] records the process groups of steps and VMs, and kills them
//! however gvbuild ends.
//!
//! [`diag`] turns spans into miette labels; [`fsutil`] and [`sys`] are small helpers.
//! Data flows one way down this list; no module reaches back up it.

pub mod cache;
pub mod cli;
pub mod config;
pub mod diag;
pub mod disk;
pub mod exec;
pub mod fingerprint;
pub mod fsutil;
pub mod graph;
pub mod inspect;
pub mod jobs;
pub mod paths;
pub mod steps;
mod sys;
pub mod tfs;
pub mod vm;
pub mod worker;

pub use cli::{run, Error};
