//! `${name}` variable expansion.
//!
//! `${name}` is replaced by the var's value, `$$` is a literal `$` (so `$${HOME}` reaches the
//! shell as `${HOME}`), and any other `$` is left alone, so `$HOME` is the shell's business.
//! Var values may use other vars: the validator expands them first, in dependency order (see
//! [`references`]), and a cycle is an error.

use indexmap::IndexMap;

/// Why one `${name}` could not be expanded, with the byte range of the reference in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarProblem {
    /// No var of that name exists.
    Undefined { name: String, at: (usize, usize) },
    /// The var is declared with no value (`~`): the user still has to pin it.
    Unset { name: String, at: (usize, usize) },
    /// `${` with no closing `}`.
    Unclosed { at: (usize, usize) },
}

/// The names a string refers to with `${name}` (not `$${name}`), in order.
pub fn references(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => match s[i + 2..].find('}') {
                Some(rel) => {
                    out.push(s[i + 2..i + 2 + rel].to_string());
                    i += 2 + rel + 1;
                }
                None => break,
            },
            _ => i += 1,
        }
    }
    out
}

/// The vars in force: file values with `--set` overrides applied. `None` is a declared, unset var.
pub type Vars = IndexMap<String, Option<String>>;

/// Expand `s`. Unset vars expand to nothing and are reported, so that the caller can decide
/// whether using them is an error (it is, once a step using them is built).
pub fn expand(s: &str, vars: &Vars) -> (String, Vec<VarProblem>) {
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut literal_from = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push_str(&s[literal_from..i]);
                out.push('$');
                i += 2;
                literal_from = i;
            }
            Some(b'{') => {
                out.push_str(&s[literal_from..i]);
                match s[i + 2..].find('}') {
                    None => {
                        problems.push(VarProblem::Unclosed { at: (i, s.len() - i) });
                        out.push_str(&s[i..]);
                        return (out, problems);
                    }
                    Some(rel) => {
                        let name = &s[i + 2..i + 2 + rel];
                        let end = i + 2 + rel + 1;
                        match vars.get(name) {
                            Some(Some(value)) => out.push_str(value),
                            Some(None) => {
                                problems.push(VarProblem::Unset { name: name.to_string(), at: (i, end - i) })
                            }
                            None => problems
                                .push(VarProblem::Undefined { name: name.to_string(), at: (i, end - i) }),
                        }
                        i = end;
                        literal_from = i;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[literal_from..]);
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("arch".into(), Some("sm_90".into()));
        v.insert("hash".into(), None);
        v
    }

    #[test]
    fn expands_escapes_and_leaves_shell_vars() {
        let (out, problems) = expand("-arch=${arch} $HOME $${HOME} $$ $", &vars());
        assert_eq!(out, "-arch=sm_90 $HOME ${HOME} $ $");
        assert!(problems.is_empty());
    }

    #[test]
    fn reports_undefined_unset_and_unclosed() {
        let (_, p) = expand("a ${nope} ${hash} ${arch", &vars());
        assert_eq!(
            p,
            vec![
                VarProblem::Undefined { name: "nope".into(), at: (2, 7) },
                VarProblem::Unset { name: "hash".into(), at: (10, 7) },
                VarProblem::Unclosed { at: (18, 6) },
            ]
        );
    }
}
