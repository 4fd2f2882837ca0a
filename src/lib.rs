//! gvbuild: declarative, content-hashed, cached builds for Gevulot prover images.
//!
//! # Architecture: the layers, top to bottom
//!
//! Each module uses only those below it; `tests/layers.rs` holds this order and fails on an
//! import that runs back up it, or on a circle between the files of one module.
//!
//! 1. [`cli`]: the command line; each subcommand is a thin function over the modules below.
//! 2. [`worker`] (`gvbuild worker`), beside the build: runs other machines' actions for a REAPI
//!    engine, over the Remote Workers API, with the shared cache's gRPC client; [`jobs`]' reaper
//!    kills what a killed worker left running.
//! 3. [`exec`]: the scheduler feeding a rayon pool, the per-step runner (fingerprint -> fresh? ->
//!    restore (local, then remote)? -> run (here, or on a REAPI engine: `exec::remote_exec`)
//!    -> store (local, then upload)), reporting and `--explain`.
//! 4. [`graph`]: the DAG (petgraph), whole-graph checks (cycles, outputs), the dependencies
//!    inferred from inputs that read other targets' outputs, selection, and the parse cache that
//!    keeps YAML parsing off the no-op path.
//! 5. [`config`]: loading gevulot.yaml, the top level and each target's shape, and the dispatch
//!    of each target's step to its kind.
//! 6. [`steps`]: one module per built-in kind (fetch, stage, manifest, image, task), owning its
//!    YAML, validation, spec, key, summary and execution; [`steps::Step`] is where the runner
//!    asks the kind. `run:` is the general kind: its fields are the target's own, so `config`
//!    validates them, `steps::run` holds its spec and process handling, and the runner keys and
//!    runs it (here, or remotely). The native image builder
//!    writes [`disk`] images (boot loader, MBR, boot and root partitions) whose filesystems are
//!    [`tfs`] volumes; [`inspect`] reads any of them back.
//! 7. [`sandbox`]: the sandbox a `run:` step runs in (a mount namespace showing the project as
//!    the step's visible set, which `exec::visible` computes once for it and for the remote
//!    input root), what it wrote, and what a failed one touched undeclared.
//! 8. [`vm`]: running an image as a Gevulot node does, below the `task` step and `gvbuild run`,
//!    which both use it.
//! 9. [`cache`]: the content-addressed store of blobs and action entries, locks, gc, verify; and
//!    behind it the shared cache ([`cache::remote`], one module per protocol).
//! 10. [`fingerprint`]: what goes into a step's key (start reading here: its module docs), file
//!     hashing and the stat cache, the project's state of the last build.
//! 11. [`inspect`], [`disk`], [`tfs`]: reading images, writing partitioned disks, TFS volumes.
//! 12. [`jobs`]: the process groups of steps and VMs, killed however gvbuild ends, and the
//!     `-j` slots that bound how many commands run at once.
//! 13. [`yaml`]: reading gevulot.yaml (YAML events straight into the raw types, every error with
//!     its span, in one pass), vars, the errors validation raises and
//!     the validator every kind reports through.
//! 14. [`paths`]: project paths' rules (normalising, globs, the folders no walk enters);
//!     [`diag`] turns spans into miette labels; [`fsutil`] and [`sys`] are small helpers.

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
pub mod sandbox;
pub mod steps;
mod sys;
pub mod tfs;
pub mod vm;
pub mod worker;
pub mod yaml;

pub use cli::{run, Error};
