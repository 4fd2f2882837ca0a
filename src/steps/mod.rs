//! Built-in step kinds, one file each: `run` (a shell command), and the Gevulot kinds `fetch`,
//! `stage`, `manifest`, `image` and `task` (boot an image on a task; the first kind whose module
//! owns its spec, validation, key parts, summary and execution, see [`task`]).

pub mod elf;
pub mod fetch;
pub mod image;
pub mod manifest;
pub mod run;
pub mod stage;
pub mod task;
