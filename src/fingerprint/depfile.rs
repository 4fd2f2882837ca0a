//! Makefile-style dependency files, as written by `cc -MD` and `nvcc -MD`.
//!
//! `target: dep dep \` with line continuations, `\ ` for a space inside a name and `$$` for `$`.
//! Every rule's prerequisites are collected; targets are ignored.

/// The prerequisites listed in a depfile, in order of first appearance.
pub fn parse(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Join continuation lines first.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The first unescaped ':' followed by whitespace or end separates targets from
        // prerequisites (Windows drive letters never occur here).
        let Some(colon) = find_rule_colon(line) else {
            continue;
        };
        for word in split_words(&line[colon + 1..]) {
            if seen.insert(word.clone()) {
                out.push(word);
            }
        }
    }
    out
}

fn find_rule_colon(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b':' if b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(' ') | Some('#') | Some('\\') => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                _ => cur.push('\\'),
            },
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                cur.push('$');
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_gcc_style_depfiles() {
        let d = "build/app.o: src/app.c include/a.h \\\n  /usr/include/stdio.h my\\ file.h\ninclude/a.h:\n";
        assert_eq!(parse(d), vec!["src/app.c", "include/a.h", "/usr/include/stdio.h", "my file.h"]);
    }

    #[test]
    fn multiple_targets_and_dollars() {
        assert_eq!(parse("a b: c $$d\n"), vec!["c", "$d"]);
    }
}
