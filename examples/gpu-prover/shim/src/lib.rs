//! A small shim with a C ABI, in the spirit of Gevulot's shim-ffi: the program hands it a
//! callback; the shim reads each task from the workspace, runs the callback, and writes the
//! result next to the task.
use std::ffi::{c_char, c_long, c_void, CStr};
use std::fs;
use std::path::Path;

pub type TaskFn = extern "C" fn(*const u8, usize, *mut c_char, usize, *mut c_void) -> c_long;

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
    let Ok(entries) = fs::read_dir(&dir) else { return -1 };
    let mut tasks: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "task")).collect();
    tasks.sort();
    let mut count = 0;
    for task in tasks {
        let Ok(bytes) = fs::read(&task) else { return -1 };
        let mut out = vec![0u8; 4096];
        let n = f(bytes.as_ptr(), bytes.len(), out.as_mut_ptr().cast(), out.len(), ctx);
        if n < 0 || n as usize > out.len() {
            return -1;
        }
        let result = Path::new(&dir).join(task.with_extension("result").file_name().unwrap_or_default());
        if fs::write(result, &out[..n as usize]).is_err() {
            return -1;
        }
        count += 1;
    }
    count
}
