//! Built-in step kinds, one file each. Today: `run` (a shell command). The Gevulot kinds (fetch,
//! stage, manifest, image) join here as siblings.

pub mod elf;
pub mod fetch;
pub mod image;
pub mod manifest;
pub mod run;
pub mod stage;
