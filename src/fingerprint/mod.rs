//! What goes into a step's key, and what never does.
//!
//! # The key
//!
//! Every step target gets a *key*: blake3 of a versioned [`KeyParts`] struct, written in the
//! byte format [`encode`] defines (length-prefixed fields, maps in sorted order), so the bytes
//! are ours and never change with a library. It holds:
//!
//! - **the step definition after var expansion**: kind, command (for built-in steps, every field
//!   of the spec), declared output paths, depfile;
//! - **each input file**: its project-relative path (absolute for system files such as
//!   `/usr/include/stdio.h`, keyed as written), its content digest, size and executable bit.
//!   Folders stand for every file below them; globs are expanded on every build, so a new file
//!   matching `src/**/*.cu` changes the key. Symlinks inside input folders are followed ([`inputs`]):
//!   what a link leads to is keyed under the link's name (also outside the project), and every
//!   link's text is keyed too (`NAME (link)`), and so is every folder, empty ones included
//!   (`NAME (folder)`). A FIFO, socket or device, a name that is not
//!   UTF-8 or a symlink loop is an error, never skipped; only `.git` and `.gvbuild` are;
//! - **the digests of the dependencies' outputs**, not their keys, each folded with what that
//!   dependency's own dependencies show, down the graph (a step may read the outputs of every
//!   step it depends on, directly or not: the sandbox and a remote worker show them all): a
//!   dependency that reruns and writes identical bytes, with nothing below it changed, leaves
//!   its dependents' keys unchanged (early cutoff);
//! - **`env` and `pass_env` values** (an unset pass-through var is keyed as unset);
//! - **each tool's identity**: the content digest of the executable it resolves to plus its
//!   `--version` output, since rustup-style proxies share one binary for many toolchains. The
//!   PATH used to find it is *not* keyed.
//!
//! Never in a key: mtimes, the project's absolute location, the cache location, the target's
//! name, PATH/HOME/USER/TERM/LANG/TMPDIR. The same project cloned elsewhere with the same cache
//! therefore computes the same keys and restores instead of running.
//!
//! # Depfiles: the two-level key
//!
//! Inputs a command discovers (headers listed in its `-MD` depfile, read as ninja reads it:
//! [`depfile`]) cannot be known before it runs. As in ccache's direct mode, the key above is the
//! *first-level* key. The cache keeps, for each first-level key, the lists of discovered inputs
//! seen after running it (project paths relative, system paths absolute). The *full* key is
//! blake3 of the first-level key and, for one such list, the identities [`discovered`] computes:
//! each file's digest (absent files as absent) and, per search folder, which of the names the
//! step could have looked up exist there, so a header that now shadows a recorded one changes
//! it. A cache hit needs exactly one list whose full key has an entry; with several, the step
//! runs. Editing a discovered header therefore changes the full key, also in a fresh clone that
//! only has the cache.
//!
//! # Files on disk
//!
//! In the project's state folder `.gvbuild/` (never in a key, safe to delete). The `.bin` files
//! are sealed ([`encode`]): a damaged one reads as absent.
//! - `graph.bin`: the validated graph, keyed by the YAML's bytes and the `--set` vars;
//! - `state.bin` + `journal`: per target, the last key and the outputs it produced (the journal is
//!   appended after each step and folded into `state.bin` at the end, so a killed build keeps
//!   what finished);
//! - `explain.bin`: the last [`KeyParts`] of each target, for `--explain`;
//! - `stat.bin`: the stat cache (size, mtime, ctime, inode -> digest) that lets a no-op build skip
//!   rehashing unchanged files;
//! - `logs/<target>.log`: each step's output; `lock`: the project lock; `jobs`: running steps'
//!   process groups, killed at the next start if gvbuild itself was killed.

pub mod depfile;
pub mod discovered;
pub mod encode;
pub mod hash;
pub mod inputs;
pub mod named;
pub mod outputs;
pub mod state;
pub mod tools;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use self::encode::KeyWriter;
pub use self::hash::{Digest, FileId, StatCache};

/// Bump to invalidate every cache entry ever written. 2: the key bytes moved from bincode to
/// [`encode`]; depfiles read as ninja does; absent discovered inputs and search-folder lookups
/// keyed; symlinked folders followed. 3: every folder an input walk finds is keyed (`NAME
/// (folder)`), so an empty folder added to an input folder reruns the step (issue 20). 4: a
/// sandboxed depfile step's discovered list holds what it looked up among the files it may
/// discover (found or not), so a list recorded without them is never trusted again.
pub const KEY_VERSION: u32 = 4;

/// Everything a step's first-level key is made of.
///
/// What the target and the graph already hold (the command, outputs, env, dep names) is
/// borrowed from them (`'a`): a no-op build makes one of these per step only to hash it. A
/// `KeyParts<'static>` owns everything (what `explain.bin` holds; see [`KeyParts::into_owned`]).
/// Serialized, a borrowed part is the same bytes as an owned one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub version: u32,
    pub step: StepDef<'a>,
    pub inputs: BTreeMap<String, FileId>,
    /// Direct dependency's target name -> digest of its outputs folded with what its own
    /// dependencies show, down the graph (`exec`'s `visible_digest`).
    pub deps: BTreeMap<Cow<'a, str>, Digest>,
    pub env: Cow<'a, BTreeMap<String, String>>,
    pub pass_env: BTreeMap<String, Option<String>>,
    pub tools: BTreeMap<String, tools::ToolId>,
}

/// The step definition after var expansion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepDef<'a> {
    pub kind: Cow<'a, str>,
    pub command: Cow<'a, str>,
    pub outputs: Vec<Cow<'a, str>>,
    pub depfile: Option<Cow<'a, str>>,
}

impl KeyParts<'_> {
    /// The same parts, owning everything they borrowed.
    pub fn into_owned(self) -> KeyParts<'static> {
        let owned = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        KeyParts {
            version: self.version,
            step: StepDef {
                kind: owned(self.step.kind),
                command: owned(self.step.command),
                outputs: self.step.outputs.into_iter().map(owned).collect(),
                depfile: self.step.depfile.map(owned),
            },
            inputs: self.inputs,
            deps: self.deps.into_iter().map(|(k, v)| (owned(k), v)).collect(),
            env: Cow::Owned(self.env.into_owned()),
            pass_env: self.pass_env,
            tools: self.tools,
        }
    }

    /// The declared outputs, as owned paths.
    pub fn output_paths(&self) -> Vec<String> {
        self.step.outputs.iter().map(|o| o.to_string()).collect()
    }
}

impl KeyParts<'_> {
    /// The first-level key: blake3 of `gvbuild key\0` and every part in the format that
    /// [`encode`] documents.
    pub fn key(&self) -> Digest {
        let mut w = KeyWriter::new(b"gvbuild key\0");
        w.field("version").u64(self.version as u64);
        w.field("step");
        w.field("kind").str(&self.step.kind);
        w.field("command").str(&self.step.command);
        w.field("outputs").len(self.step.outputs.len());
        for o in &self.step.outputs {
            w.str(o);
        }
        w.field("depfile").opt_str(self.step.depfile.as_deref());
        w.field("inputs");
        write_files(&mut w, &self.inputs);
        w.field("deps").len(self.deps.len());
        for (name, d) in &self.deps {
            w.str(name).bytes(d);
        }
        w.field("env").len(self.env.len());
        for (k, v) in self.env.iter() {
            w.str(k).str(v);
        }
        w.field("pass_env").len(self.pass_env.len());
        for (k, v) in &self.pass_env {
            w.str(k).opt_str(v.as_deref());
        }
        w.field("tools").len(self.tools.len());
        for (name, t) in &self.tools {
            w.str(name).bytes(&t.digest).str(&t.version);
        }
        w.finish()
    }
}

/// A map of file identities: name, digest, executable bit, size.
fn write_files(w: &mut KeyWriter, files: &BTreeMap<String, FileId>) {
    w.len(files.len());
    for (name, id) in files {
        w.str(name).bytes(&id.digest).bool(id.exec).u64(id.size);
    }
}

/// The full key of a step with discovered inputs: the first-level key plus the identities of
/// the discovered files (absent ones included) and the lookup facts of its search folders.
pub fn full_key(first: &Digest, discovered: &BTreeMap<String, FileId>) -> Digest {
    let mut w = KeyWriter::new(b"gvbuild full key\0");
    w.field("first").bytes(first);
    w.field("discovered");
    write_files(&mut w, discovered);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyParts<'static> {
        let mut inputs = BTreeMap::new();
        inputs.insert("src/a.c".into(), FileId { digest: [1; 32], exec: false, size: 3 });
        let mut env = BTreeMap::new();
        env.insert("LC_ALL".into(), "C".into());
        KeyParts {
            version: KEY_VERSION,
            step: StepDef {
                kind: "run".into(),
                command: "cc -o out/a src/a.c".into(),
                outputs: vec!["out/a".into()],
                depfile: None,
            },
            inputs,
            deps: BTreeMap::new(),
            env: Cow::Owned(env),
            pass_env: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }

    /// Pins the key format: if this changes, every user's cache is invalidated, so it must be a
    /// deliberate change that bumps KEY_VERSION.
    #[test]
    fn key_format_is_pinned() {
        assert_eq!(
            hash::hex(&sample().key()),
            "6b26abb8c10a7a9b57a74fb6d60a7f0e4d1d38fb3528b7880fe1e5230da98bc5"
        );
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = sample().key();
        let mut p = sample();
        p.step.command.to_mut().push(' ');
        assert_ne!(p.key(), base);
        let mut p = sample();
        p.inputs.values_mut().for_each(|f| f.exec = true);
        assert_ne!(p.key(), base);
        let mut p = sample();
        p.env.to_mut().insert("X".into(), "1".into());
        assert_ne!(p.key(), base);
        let mut p = sample();
        p.pass_env.insert("X".into(), None);
        assert_ne!(p.key(), base);
        let mut p = sample();
        p.deps.insert("gen".into(), [2; 32]);
        assert_ne!(p.key(), base);
        let mut p = sample();
        p.tools.insert("cc".into(), tools::ToolId { digest: [3; 32], version: "1".into() });
        assert_ne!(p.key(), base);
    }
}
