//! Makefile-style dependency files (`cc -MD`, `nvcc -MD`, `rustc --emit=dep-info`), read exactly
//! as ninja reads them.
//!
//! The reference is ninja's `src/depfile_parser.in.cc` (its lexer rules and
//! `depfile_parser_test.cc`); this is our own implementation of the same grammar:
//!
//! - A file name is a run of characters from `[a-zA-Z0-9+?"'&,/_:.~()}{%=@[]!-]` and bytes
//!   0x80–0xFF, plus these escapes:
//!   - 2N+1 backslashes and a space: N backslashes and a space, inside the name;
//!   - 2N backslashes (N ≥ 1) and a space: 2N backslashes, and the name ends;
//!   - N backslashes and `#`: N-1 backslashes and `#`;
//!   - N backslashes and `:` followed by whitespace, NUL or the end: kept as written, and the
//!     name ends (a target's colon after a name that ends in backslashes);
//!   - N backslashes and any other `:`: N-1 backslashes and `:` (GCC 10.1 and MinGW write
//!     `\:` for a colon inside a name);
//!   - `$$`: `$`;
//!   - backslashes before any other character (but NUL, CR, LF): kept as written.
//! - A single backslash before LF or CRLF continues the line; it ends the current name.
//! - LF or CRLF ends a rule. Any other character (space, tab, a lone `$`, `*`, `|`, a lone CR)
//!   ends the current name and is dropped.
//! - A name ending in `:` is the last target of a rule; names before it are targets, names after
//!   it are prerequisites (inputs). Several targets and several rules may appear. Inputs are
//!   collected over all rules, each once, in order of first appearance.
//! - A rule whose target was an input earlier (`-MP`'s `header.h:`) may not have inputs itself:
//!   "inputs may not also have inputs". A non-empty file without any `:` is an error.

/// A parsed depfile: its targets and its prerequisites.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Depfile {
    pub targets: Vec<Vec<u8>>,
    pub inputs: Vec<Input>,
}

/// One prerequisite, as bytes (names need not be UTF-8), with the 1-based line it starts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Input {
    pub path: Vec<u8>,
    pub line: usize,
}

/// Why a depfile could not be read, with the 1-based line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DepfileError {
    pub line: usize,
    pub message: &'static str,
}

fn is_plain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || b"+?\"'&,/_:.~()}{%=@[]!-".contains(&c)
}

/// Whitespace or NUL after `\:`, which makes the colon a target's colon (the end of the input
/// reads as NUL, as ninja's NUL-terminated buffer does).
fn ends_colon(c: Option<u8>) -> bool {
    matches!(c, None | Some(0 | b' ' | b'\r' | b'\n' | b'\t'))
}

/// Lex one file name starting at `*i`. Returns the name's bytes and whether a newline ended it.
fn lex_name(b: &[u8], i: &mut usize, line: &mut usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(&c) = b.get(*i) else {
            return (out, false);
        };
        match c {
            b'\\' => {
                let k = b[*i..].iter().take_while(|&&x| x == b'\\').count();
                let next = b.get(*i + k).copied();
                match next {
                    Some(b' ') if k % 2 == 1 => {
                        out.extend(std::iter::repeat_n(b'\\', k / 2));
                        out.push(b' ');
                        *i += k + 1;
                    }
                    Some(b' ') => {
                        out.extend(std::iter::repeat_n(b'\\', k));
                        *i += k + 1;
                        return (out, false);
                    }
                    Some(b'#') => {
                        out.extend(std::iter::repeat_n(b'\\', k - 1));
                        out.push(b'#');
                        *i += k + 1;
                    }
                    Some(b':') if ends_colon(b.get(*i + k + 1).copied()) => {
                        out.extend(std::iter::repeat_n(b'\\', k));
                        out.push(b':');
                        let ws = b.get(*i + k + 1).copied();
                        *i += k + 2;
                        if ws == Some(b'\n') {
                            *line += 1;
                            return (out, true);
                        }
                        return (out, false);
                    }
                    Some(b':') => {
                        out.extend(std::iter::repeat_n(b'\\', k - 1));
                        out.push(b':');
                        *i += k + 1;
                    }
                    None | Some(0 | b'\r' | b'\n') if k >= 2 => {
                        // The longest plain match takes every backslash, the last as "any char".
                        out.extend(std::iter::repeat_n(b'\\', k));
                        *i += k;
                    }
                    Some(b'\n') => {
                        *i += 2;
                        *line += 1;
                        return (out, false);
                    }
                    Some(b'\r') if b.get(*i + 2) == Some(&b'\n') => {
                        *i += 3;
                        *line += 1;
                        return (out, false);
                    }
                    None | Some(0 | b'\r') => {
                        *i += 1;
                        return (out, false);
                    }
                    Some(other) => {
                        out.extend(std::iter::repeat_n(b'\\', k));
                        out.push(other);
                        *i += k + 1;
                    }
                }
            }
            b'$' if b.get(*i + 1) == Some(&b'$') => {
                out.push(b'$');
                *i += 2;
            }
            c if is_plain(c) => {
                let n = b[*i..].iter().take_while(|&&x| is_plain(x)).count();
                out.extend_from_slice(&b[*i..*i + n]);
                *i += n;
            }
            b'\n' => {
                *i += 1;
                *line += 1;
                return (out, true);
            }
            b'\r' if b.get(*i + 1) == Some(&b'\n') => {
                *i += 2;
                *line += 1;
                return (out, true);
            }
            _ => {
                *i += 1;
                return (out, false);
            }
        }
    }
}

/// Parse a depfile (see the module docs for the grammar).
pub fn parse(b: &[u8]) -> Result<Depfile, DepfileError> {
    let mut d = Depfile::default();
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    let mut line = 1;
    let mut parsing_targets = true;
    let mut have_target = false;
    let mut poisoned = false;
    let mut is_empty = true;
    while i < b.len() {
        let start_line = line;
        let (mut name, newline) = lex_name(b, &mut i, &mut line);
        let is_input = !parsing_targets;
        if name.last() == Some(&b':') {
            name.pop();
            parsing_targets = false;
            have_target = true;
        }
        if !name.is_empty() {
            is_empty = false;
            if !seen.contains(&name) {
                if is_input {
                    if poisoned {
                        return Err(DepfileError {
                            line: start_line,
                            message: "inputs may not also have inputs",
                        });
                    }
                    seen.insert(name.clone());
                    d.inputs.push(Input { path: name, line: start_line });
                } else if !d.targets.contains(&name) {
                    d.targets.push(name);
                }
            } else if !is_input {
                poisoned = true;
            }
        }
        if newline {
            parsing_targets = true;
            poisoned = false;
        }
    }
    if !have_target && !is_empty {
        return Err(DepfileError { line, message: "expected ':' in depfile" });
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::parse;

    fn ins(text: &str) -> Vec<String> {
        parse(text.as_bytes())
            .unwrap()
            .inputs
            .into_iter()
            .map(|i| String::from_utf8(i.path).unwrap())
            .collect()
    }

    fn outs(text: &str) -> Vec<String> {
        parse(text.as_bytes()).unwrap().targets.into_iter().map(|t| String::from_utf8(t).unwrap()).collect()
    }

    #[test]
    fn gcc_style() {
        let d = "build/app.o: src/app.c include/a.h \\\n  /usr/include/stdio.h my\\ file.h\ninclude/a.h:\n";
        assert_eq!(ins(d), vec!["src/app.c", "include/a.h", "/usr/include/stdio.h", "my file.h"]);
        assert_eq!(outs(d), vec!["build/app.o"]);
    }

    #[test]
    fn continuation_lf_and_crlf_and_lines() {
        let d = parse(b"foo.o: \\\r\n  a.h \\\n  b.h\n").unwrap();
        assert_eq!(d.inputs.iter().map(|i| i.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn escaped_colon_as_gcc_10_writes_it() {
        // GCC 10.1 and MinGW write a colon inside a name as `\:`.
        assert_eq!(ins("out.o: inc/a\\:b.h c\\:\\x.h\n"), vec!["inc/a:b.h", "c:\\x.h"]);
        // A backslash-colon followed by whitespace is a target's colon after a backslash.
        assert_eq!(outs("foo1\\: x\n"), vec!["foo1\\"]);
        assert_eq!(ins("foo1\\: x\n"), vec!["x"]);
    }

    #[test]
    fn spaces_hashes_dollars_backslashes() {
        assert_eq!(
            ins("o: a\\ b\\#c.h \\\\\\\\\\  \\\\\\\\ \\\\share\\info\\\\#1\n"),
            vec!["a b#c.h", "\\\\ ", "\\\\\\\\", "\\\\share\\info\\#1"]
        );
        assert_eq!(ins("o: cost$$1.h a$b\n"), vec!["cost$1.h", "a", "b"]);
        assert_eq!(ins("o: \\!\\@\\%\\^\\&\\[\\]\\\\\n"), vec!["\\!\\@\\%\\^\\&\\[\\]\\\\"]);
    }

    #[test]
    fn several_targets_and_rules() {
        assert_eq!(ins("foo bar: x y\nfoo: z\n"), vec!["x", "y", "z"]);
        assert_eq!(outs("foo bar: x y\nfoo: z\n"), vec!["foo", "bar"]);
        assert_eq!(ins("foo: x\r\nfoo: y\r\nfoo \\\r\nfoo: z\r\n"), vec!["x", "y", "z"]);
        assert_eq!(ins(" foo: x\n foo: y\n"), vec!["x", "y"]);
    }

    #[test]
    fn mp_phony_rules() {
        assert_eq!(ins("foo: x y z\nx:\ny:\nz:\n"), vec!["x", "y", "z"]);
        let e = parse(b"foo: x y z\nx: alsoin\ny:\nz:\n").unwrap_err();
        assert_eq!((e.line, e.message), (2, "inputs may not also have inputs"));
    }

    #[test]
    fn empty_and_missing_colon() {
        assert_eq!(parse(b"").unwrap().inputs, vec![]);
        assert_eq!(parse(b"\n\n").unwrap().inputs, vec![]);
        let e = parse(b"foo.o foo.c\n").unwrap_err();
        assert_eq!(e.message, "expected ':' in depfile");
    }

    #[test]
    fn windows_and_special_names() {
        assert_eq!(ins("foo.o: //?/c:/bar.h\n"), vec!["//?/c:/bar.h"]);
        assert_eq!(
            ins("o: en@quot.header~ t+t-x!=1 a[1]b@2%c\n"),
            vec!["en@quot.header~", "t+t-x!=1", "a[1]b@2%c"]
        );
    }

    #[test]
    fn non_utf8_names_are_kept_as_bytes() {
        let d = parse(b"o: caf\xe9.h\n").unwrap();
        assert_eq!(d.inputs[0].path, b"caf\xe9.h");
    }
}
