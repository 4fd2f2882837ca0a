//! Why a step was not fresh, as typed reasons (cargo's dirty reasons, for build steps).

use std::collections::BTreeMap;
use std::fmt;

use crate::fingerprint::state::Explained;
use crate::fingerprint::{FileId, KeyParts};
use crate::graph::Graph;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    NoRecord,
    Forced,
    Uncached,
    CommandChanged,
    OutputsDeclChanged,
    DepfileChanged,
    InputChanged(String),
    InputAdded(String),
    InputRemoved(String),
    DiscoveredChanged(String),
    DepOutputsChanged(String),
    /// The same, for a dependency inferred from an input that reads its output.
    InferredDepOutputsChanged {
        dep: String,
        input: String,
    },
    DepAdded(String),
    InferredDepAdded {
        dep: String,
        input: String,
    },
    DepRemoved(String),
    EnvChanged(String),
    PassEnvChanged(String),
    ToolChanged {
        name: String,
        what: &'static str,
    },
    FormatChanged,
    OutputsModified,
    /// Several cached results matched (each list of discovered inputs recorded for this key).
    SeveralCachedResults(usize),
    /// A dry run: this dependency would be restored first, and this step reads its outputs.
    DepWouldRestore(String),
    /// A dry run: this dependency would run first, and this step reads its outputs (which the
    /// run may leave as they were: then this step stays fresh).
    DepWouldRun(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoRecord => write!(f, "no previous build of this target is recorded in this project"),
            Reason::Forced => write!(f, "forced by --rebuild, --rebuild-all or --trace-undeclared"),
            Reason::Uncached => write!(f, "`cache: false`: runs on every build"),
            Reason::CommandChanged => write!(f, "the command changed"),
            Reason::OutputsDeclChanged => write!(f, "the declared outputs changed"),
            Reason::DepfileChanged => write!(f, "the depfile setting changed"),
            Reason::InputChanged(p) => write!(f, "input {p} changed"),
            Reason::InputAdded(p) => write!(f, "input {p} is new"),
            Reason::InputRemoved(p) => write!(f, "input {p} is gone"),
            Reason::DiscoveredChanged(p) => match p.strip_prefix("lookups in ") {
                Some(dir) => {
                    write!(f, "a header it could include appeared or vanished in search folder {dir}")
                }
                None => write!(f, "discovered input {p} changed"),
            },
            Reason::DepOutputsChanged(d) => {
                write!(f, "dependency {d} produced new outputs (its own, or those of a step it depends on)")
            }
            Reason::InferredDepOutputsChanged { dep, input } => {
                write!(f, "dependency {dep} (inferred from input {input}) produced new outputs")
            }
            Reason::DepAdded(d) => write!(f, "new dependency {d}"),
            Reason::InferredDepAdded { dep, input } => {
                write!(f, "new dependency {dep}, inferred from input {input}")
            }
            Reason::DepRemoved(d) => write!(f, "dependency {d} was removed"),
            Reason::EnvChanged(v) => write!(f, "env {v} changed"),
            Reason::PassEnvChanged(v) => write!(f, "pass_env {v} changed"),
            Reason::ToolChanged { name, what } => write!(f, "tool {name} changed ({what})"),
            Reason::FormatChanged => write!(f, "the key format changed (new gvbuild version)"),
            Reason::OutputsModified => write!(f, "its outputs on disk differ from the last build"),
            Reason::DepWouldRestore(d) => write!(
                f,
                "dependency {d} would be restored first, and this step reads its outputs: it may then run or be restored"
            ),
            Reason::DepWouldRun(d) => write!(
                f,
                "dependency {d} would run first, and this step reads its outputs: it runs if they change"
            ),
            Reason::SeveralCachedResults(n) => {
                write!(f, "{n} cached results match its discovered inputs; running rather than guessing")
            }
        }
    }
}

fn diff_files(
    old: &BTreeMap<String, FileId>,
    new: &BTreeMap<String, FileId>,
    out: &mut Vec<Reason>,
    discovered: bool,
) {
    for (p, id) in new {
        match old.get(p) {
            None if !discovered => out.push(Reason::InputAdded(p.clone())),
            Some(o) if o != id => out.push(if discovered {
                Reason::DiscoveredChanged(p.clone())
            } else {
                Reason::InputChanged(p.clone())
            }),
            _ => {}
        }
    }
    if !discovered {
        for p in old.keys() {
            if !new.contains_key(p) {
                out.push(Reason::InputRemoved(p.clone()));
            }
        }
    }
}

fn diff_map<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    mut f: impl FnMut(&str) -> Reason,
    out: &mut Vec<Reason>,
) {
    for k in old.keys().chain(new.keys().filter(|k| !old.contains_key(*k))) {
        if old.get(k) != new.get(k) {
            out.push(f(k));
        }
    }
}

/// Say which input each inferred dependency that `reasons` name comes from.
pub fn mark_inferred(reasons: &mut [Reason], graph: &Graph, target: usize) {
    for r in reasons {
        let (Reason::DepOutputsChanged(d) | Reason::DepAdded(d)) = r else { continue };
        let Some(e) = graph.lookup(d).and_then(|dep| graph.inferred_edge(target, dep)) else { continue };
        let (dep, input) = (std::mem::take(d), graph.inferred_input(e).to_string());
        *r = match r {
            Reason::DepAdded(_) => Reason::InferredDepAdded { dep, input },
            _ => Reason::InferredDepOutputsChanged { dep, input },
        };
    }
}

/// Compare the previous parts of a target's key with the current ones.
pub fn diff(
    prev: Option<&Explained>,
    parts: &KeyParts,
    discovered: &BTreeMap<String, FileId>,
) -> Vec<Reason> {
    let Some(prev) = prev else {
        return vec![Reason::NoRecord];
    };
    let old = &prev.parts;
    let mut out = Vec::new();
    if old.version != parts.version {
        return vec![Reason::FormatChanged];
    }
    if old.step.command != parts.step.command || old.step.kind != parts.step.kind {
        out.push(Reason::CommandChanged);
    }
    if old.step.outputs != parts.step.outputs {
        out.push(Reason::OutputsDeclChanged);
    }
    if old.step.depfile != parts.step.depfile {
        out.push(Reason::DepfileChanged);
    }
    diff_files(&old.inputs, &parts.inputs, &mut out, false);
    diff_files(&prev.discovered, discovered, &mut out, true);
    for (d, digest) in &parts.deps {
        match old.deps.get(d) {
            None => out.push(Reason::DepAdded(d.to_string())),
            Some(o) if o != digest => out.push(Reason::DepOutputsChanged(d.to_string())),
            _ => {}
        }
    }
    for d in old.deps.keys() {
        if !parts.deps.contains_key(d) {
            out.push(Reason::DepRemoved(d.to_string()));
        }
    }
    diff_map(&old.env, &parts.env, |k| Reason::EnvChanged(k.to_string()), &mut out);
    diff_map(&old.pass_env, &parts.pass_env, |k| Reason::PassEnvChanged(k.to_string()), &mut out);
    for (name, id) in &parts.tools {
        match old.tools.get(name) {
            Some(o) if o.digest != id.digest => {
                out.push(Reason::ToolChanged { name: name.clone(), what: "binary" })
            }
            Some(o) if o.version != id.version => {
                out.push(Reason::ToolChanged { name: name.clone(), what: "--version output" })
            }
            None => out.push(Reason::ToolChanged { name: name.clone(), what: "newly listed" }),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push(Reason::OutputsModified);
    }
    out
}
