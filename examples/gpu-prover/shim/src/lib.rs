//! A small shim with a C ABI, in the spirit of Gevulot's shim-ffi, speaking the shim's file task
//! protocol (gevulotnetwork/gevulot, branch `optional-file-based-task-to-shim`,
//! `crates/shim/src/lib.rs`): the task is `WORKSPACE/task.json`, `{"id", "args", "files"}`; the
//! result is `WORKSPACE/task_result.json`, created new, `{"Ok": {"id", "data", "files"}}` or
//! `{"Err": "..."}`. No dependencies, so that it builds offline and on remote workers: the two
//! JSON shapes are read and written by hand below.
use std::ffi::{c_char, c_long, c_void, CStr};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

pub type TaskFn = extern "C" fn(*const u8, usize, *mut c_char, usize, *mut c_void) -> c_long;

/// A JSON string literal of `s`.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads the JSON string starting at `s[0] == '"'`; returns it and the rest.
fn string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.strip_prefix('"')?.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

/// The value of `"key":` at the top level of the task object, as the text after the colon.
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = json.trim_start().strip_prefix('{')?;
    loop {
        rest = rest.trim_start();
        let (k, after) = string(rest)?;
        let after = after.trim_start().strip_prefix(':')?.trim_start();
        if k == key {
            return Some(after);
        }
        rest = skip_value(after)?.trim_start().strip_prefix(',')?;
    }
}

/// The text after one JSON value (a string, an array of strings, or a bare word).
fn skip_value(s: &str) -> Option<&str> {
    if s.starts_with('"') {
        return string(s).map(|(_, r)| r);
    }
    if s.starts_with('[') {
        return strings(s).map(|(_, r)| r);
    }
    let end = s.find([',', '}']).unwrap_or(s.len());
    Some(&s[end..])
}

/// An array of JSON strings.
fn strings(s: &str) -> Option<(Vec<String>, &str)> {
    let mut rest = s.strip_prefix('[')?.trim_start();
    let mut out = Vec::new();
    if let Some(r) = rest.strip_prefix(']') {
        return Some((out, r));
    }
    loop {
        let (v, r) = string(rest.trim_start())?;
        out.push(v);
        let r = r.trim_start();
        if let Some(r) = r.strip_prefix(']') {
            return Some((out, r));
        }
        rest = r.strip_prefix(',')?;
    }
}

/// Run the task; `Ok` holds the data and the files written, `Err` the message for the result.
fn run_task(dir: &str, task: &str, f: TaskFn, ctx: *mut c_void) -> Result<(String, Vec<u8>, Vec<String>), String> {
    let id = field(task, "id").and_then(|v| string(v)).map(|(s, _)| s).ok_or("task.json has no string `id`")?;
    let files = field(task, "files").and_then(|v| strings(v)).map(|(f, _)| f).ok_or("task.json has no `files` list")?;
    let (mut data, mut written) = (Vec::new(), Vec::new());
    for name in files {
        let path = if name.starts_with('/') { name.clone() } else { format!("{dir}/{name}") };
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let mut out = vec![0u8; 4096];
        let n = f(bytes.as_ptr(), bytes.len(), out.as_mut_ptr().cast(), out.len(), ctx);
        if n < 0 || n as usize > out.len() {
            return Err(format!("the program failed on {path}"));
        }
        let result = format!("{path}.result");
        fs::write(&result, &out[..n as usize]).map_err(|e| format!("cannot write {result}: {e}"))?;
        data.extend_from_slice(&out[..n as usize]);
        written.push(result);
    }
    Ok((id, data, written))
}

/// # Safety
/// `workspace` must be a NUL-terminated string; `f` must be a valid function pointer that
/// writes at most `out_len` bytes to `out`.
#[no_mangle]
pub unsafe extern "C" fn gevulot_run(workspace: *const c_char, f: Option<TaskFn>, ctx: *mut c_void) -> c_long {
    let Some(f) = f else { return -1 };
    if workspace.is_null() {
        return -1;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let dir = unsafe { CStr::from_ptr(workspace) }.to_string_lossy().into_owned();
    // The shim waits up to 30 s for the workspace share to appear.
    let start = Instant::now();
    let task = loop {
        match fs::read_to_string(format!("{dir}/task.json")) {
            Ok(t) => break t,
            Err(_) if start.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return -1,
        }
    };
    let (json, count) = match run_task(&dir, &task, f, ctx) {
        Ok((id, data, files)) => {
            let data: Vec<String> = data.iter().map(u8::to_string).collect();
            let files: Vec<String> = files.iter().map(|f| quote(f)).collect();
            let count = files.len() as c_long;
            (format!("{{\"Ok\":{{\"id\":{},\"data\":[{}],\"files\":[{}]}}}}", quote(&id), data.join(","), files.join(",")), count)
        }
        Err(e) => (format!("{{\"Err\":{}}}", quote(&e)), -2),
    };
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(format!("{dir}/task_result.json"))
        .and_then(|mut file| file.write_all(json.as_bytes()));
    match written {
        Ok(()) => count,
        Err(_) => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_fields_are_read() {
        let t = r#"{"id":"task01","args":["--x","a\"b"],"files":["in.bin","/workspace/b"]}"#;
        assert_eq!(string(field(t, "id").unwrap()).unwrap().0, "task01");
        assert_eq!(strings(field(t, "files").unwrap()).unwrap().0, ["in.bin", "/workspace/b"]);
        assert_eq!(strings(field(t, "args").unwrap()).unwrap().0, ["--x", "a\"b"]);
        assert_eq!(quote("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}
