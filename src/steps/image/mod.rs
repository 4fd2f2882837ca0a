//! The `image` step: a bootable Nanos disk image of a stage root, from its manifest.
//!
//! Two builders share one spec. `native` ([`native`]) writes the disk image itself from the Nanos
//! release's kernel and boot loader: offline, and the same inputs give the same bytes. `ops`
//! ([`ops`]) runs `ops build`, which needs ops and, for an uncached Nanos version, the network.

pub mod native;
pub mod ops;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub builder: Builder,
    /// The manifest JSON, project-relative.
    pub manifest: String,
    /// The stage root, project-relative.
    pub root: String,
    pub nanos_version: Option<String>,
    /// Where each field is in the build file, for errors found while building. Not part of
    /// the key (see [`ImageSpec::keyed`]).
    pub at: crate::diag::Positions,
}

impl ImageSpec {
    /// The spec as the step's key holds it: without source positions, so that editing other
    /// lines of gevulot.yaml does not rebuild the image.
    pub fn keyed(&self) -> ImageSpec {
        ImageSpec { at: crate::diag::Positions::default(), ..self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builder {
    Native {
        /// The release folder (kernel.img, boot.img, klibs/), project-relative.
        release: String,
        /// The root filesystem's requested size in bytes.
        size: Option<u64>,
        extras: Vec<Extra>,
    },
    Ops {
        /// The program, project-relative (inside `root`).
        program: String,
        nanos_version: String,
    },
}

/// What ops adds to an image on its own, which the native builder adds only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Extra {
    /// USER, PWD, NANOS_VERSION, NANOS_ARCH and IMAGE_NAME in the environment.
    Env,
    /// /etc/passwd with a root user.
    Passwd,
    /// /etc/resolv.conf naming a public resolver.
    ResolvConf,
    /// /proc/sys/kernel/hostname.
    Hostname,
}

impl Extra {
    pub const NAMES: [&'static str; 4] = ["env", "passwd", "resolv_conf", "hostname"];

    pub fn parse(s: &str) -> Option<Extra> {
        Some(match s {
            "env" => Extra::Env,
            "passwd" => Extra::Passwd,
            "resolv_conf" => Extra::ResolvConf,
            "hostname" => Extra::Hostname,
            _ => return None,
        })
    }
}

/// The image's name (for ops's `-i` and IMAGE_NAME), from the output file name.
pub fn image_name(into: &str) -> String {
    let file =
        std::path::Path::new(into).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    file.strip_suffix(".img").unwrap_or(&file).to_string()
}
