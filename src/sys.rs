//! The one POSIX call std does not wrap: signalling a process group.
#![allow(unsafe_code)]

use std::io;

/// Send `sig` to every process in group `pgid`.
pub fn killpg(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(io::Error::other)?;
    if pgid <= 1 {
        return Err(io::Error::other("refusing to signal process group <= 1"));
    }
    // SAFETY: killpg takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::killpg(pgid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub const SIGKILL: i32 = libc::SIGKILL;
