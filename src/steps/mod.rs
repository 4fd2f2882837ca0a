//! Built-in step kinds, one module each: `run` (a shell command), and the Gevulot kinds `fetch`,
//! `stage`, `manifest`, `image` and `task` (boot an image on a task). A kind's module owns the
//! YAML it reads (its `Raw*` types), its validation (`validate`, reporting through
//! [`crate::yaml::Validator`]), its spec and its execution; [`Step`] is the one place that
//! matches on the kind, and the runner asks it.

pub mod elf;
pub mod fetch;
pub mod image;
pub mod manifest;
pub mod run;
pub mod stage;
pub mod task;

use serde::{Deserialize, Serialize};

/// What a target does: one variant per step kind, each holding its module's spec. Everything
/// kind-specific is asked of the kind through the methods below, one `match` each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Step {
    Run(run::RunStep),
    Fetch(fetch::FetchStep),
    Manifest(manifest::ManifestStep),
    Stage(stage::StageSpec),
    Image(image::ImageSpec),
    Task(task::TaskSpec),
}
