//! The QEMU command line, as the Gevulot node builds it.
//!
//! Source: gevulotnetwork/gevulot, `crates/node/src/vmm/qemu.rs`, `start_vm` (main at a3844163).
//! The node's arguments are kept in its order and spelling, with two changes that a local
//! runner needs and that do not change what the guest sees:
//!
//! - The node's vsock device (`vhost-vsock-pci`) is left out: it carries the node's gRPC task
//!   protocol, which this runner does not speak (it speaks the file protocol, see
//!   [`super::task`]); this machine has no `/dev/vhost-vsock` either.
//! - The node's QMP socket is `tcp:localhost:PORT,server`; here it is a Unix socket in a private
//!   folder (`unix:PATH,server`): no port to race for, and no other user can reach it. As on
//!   the node, QEMU waits for the QMP client before it starts the guest, and the client is
//!   the runner (it watches for a reset, see [`super::qmp`]).
//!
//! `accel=kvm:tcg` is the node's. Where `/dev/kvm` opens but cannot run a guest (this kind of
//! nested VM says "KVM internal error", or QEMU aborts setting an MSR), QEMU does not fall back
//! by itself: [`probe_kvm`] boots a one-sector guest under KVM first, and the runner asks for
//! `accel=tcg` when that fails, saying so.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The program the node runs (`--qemu-path`, default `qemu-system-x86_64`).
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest's CPUs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// The node's `accel=kvm:tcg`: KVM, or TCG where KVM cannot be opened.
    KvmOrTcg,
    /// `accel=tcg`: emulation only (slower than the node; the guest sees the same machine).
    Tcg,
}

impl Accel {
    fn arg(self) -> &'static str {
        match self {
            Accel::KvmOrTcg => "accel=kvm:tcg",
            Accel::Tcg => "accel=tcg",
        }
    }
}

/// What the user asked for: `auto` (the node's `kvm:tcg`, or `tcg` where KVM opens but cannot
/// run a guest), `kvm` (KVM or an error), `tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Why KVM cannot be used: the KVM probe's failure, or `--accel kvm` where KVM cannot run a guest.
/// Clone, as each QEMU binary's probe result is kept for the process.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum QemuError {
    #[error("cannot make a folder for the KVM probe: {0}")]
    #[diagnostic(code(gvbuild::vm::kvm_probe_folder))]
    ProbeFolder(#[source] Arc<io::Error>),
    #[error("cannot write {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::vm::kvm_probe_write))]
    ProbeWrite { path: PathBuf, source: Arc<io::Error> },
    #[error("cannot start {}: {source}", qemu.display())]
    #[diagnostic(code(gvbuild::vm::qemu_start))]
    Start { qemu: PathBuf, source: Arc<io::Error> },
    /// QEMU's own words (the first line it printed) when the probe guest failed under KVM.
    #[error("{0}")]
    #[diagnostic(code(gvbuild::vm::kvm_failed))]
    KvmFailed(String),
    #[error("a one-sector guest did not finish under KVM within 10 s")]
    #[diagnostic(code(gvbuild::vm::kvm_timeout))]
    KvmTimeout,
    #[error("--accel kvm: /dev/kvm cannot be opened here")]
    #[diagnostic(code(gvbuild::vm::no_kvm))]
    NoKvmDevice,
    #[error("--accel kvm: KVM cannot run a guest here ({0})")]
    #[diagnostic(code(gvbuild::vm::kvm_unusable))]
    KvmUnusable(#[source] Box<QemuError>),
}

/// The accelerator to pass for `choice`, and a note for the user when it is not the node's.
/// `Err` only for `kvm` where KVM cannot run a guest. The probe is made once per QEMU binary
/// per process.
pub fn choose_accel(qemu: &Path, choice: AccelChoice) -> Result<(Accel, Option<String>), QemuError> {
    if choice == AccelChoice::Tcg {
        return Ok((Accel::Tcg, None));
    }
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return match choice {
            AccelChoice::Kvm => Err(QemuError::NoKvmDevice),
            // QEMU's own kvm:tcg falls back to TCG when there is no KVM device.
            _ => Ok((
                Accel::KvmOrTcg,
                Some("no usable /dev/kvm: QEMU runs the guest with TCG (slower than a node with KVM)".into()),
            )),
        };
    }
    static PROBED: std::sync::Mutex<Vec<(PathBuf, Result<(), QemuError>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
    let result = match probed.iter().find(|(p, _)| p == qemu) {
        Some((_, r)) => r.clone(),
        None => {
            let r = match tempfile::tempdir() {
                Ok(dir) => probe_kvm(qemu, dir.path()),
                Err(e) => Err(QemuError::ProbeFolder(Arc::new(e))),
            };
            probed.push((qemu.to_path_buf(), r.clone()));
            r
        }
    };
    match (result, choice) {
        (Ok(()), _) => Ok((Accel::KvmOrTcg, None)),
        (Err(why), AccelChoice::Kvm) => Err(QemuError::KvmUnusable(Box::new(why))),
        (Err(why), _) => Ok((
            Accel::Tcg,
            Some(format!("/dev/kvm opens but KVM cannot run a guest here ({why}); the node's accel=kvm:tcg would fail the same way, so gvbuild runs with accel=tcg (slower; the guest sees the same machine)")),
        )),
    }
}

/// One boot's machine: what the node decides per task.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub image: PathBuf,
    pub workspace: PathBuf,
    /// `-smp`: the node's default is 2.
    pub cpus: u32,
    /// `-m`, in MiB (QEMU's `M`): the node's default is 2048.
    pub memory_mb: u64,
    /// PCI addresses passed through with `vfio-pci` (`0000:01:00.0`), one device each.
    pub gpus: Vec<String>,
    pub accel: Accel,
}

/// The node's default CPUs when a program states none (`scheduler/program_manager.rs`).
pub const DEFAULT_CPUS: u32 = 2;
/// The node's default memory in MiB when a program states none (the same file).
pub const DEFAULT_MEMORY_MB: u64 = 2048;

/// A memory size as written (`2048m`, `4g`, as RunConfig.Memory and `--memory` take it) in MiB,
/// or `None` when it is not a size of at least 1 MiB.
pub fn memory_mb(text: &str) -> Option<u64> {
    crate::fsutil::parse_size(text).filter(|b| *b >= 1 << 20).map(|b| b >> 20)
}

/// QEMU's option syntax: a `,` inside a value is written `,,`.
fn opt_value(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The arguments after the program name, in the node's order; `qmp` is the QMP socket's path.
pub fn node_args(m: &MachineSpec, qmp: &Path) -> Vec<OsString> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    push(&["-machine", "q35"]);
    // Three PCIe root ports; the disk controller sits on the second, GPUs on the others.
    push(&["-device", "pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x3"]);
    push(&["-device", "pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x3.0x1"]);
    push(&["-device", "pcie-root-port,port=0x12,chassis=3,id=pci.3,bus=pcie.0,addr=0x3.0x2"]);
    push(&["-device", "virtio-scsi-pci,bus=pci.2,addr=0x0,id=scsi0"]);
    push(&["-device", "scsi-hd,bus=scsi0.0,drive=hd0"]);
    push(&["-vga", "none"]);
    a.push("-smp".into());
    a.push(m.cpus.to_string());
    a.push("-device".into());
    a.push("isa-debug-exit".into());
    a.push("-m".into());
    a.push(format!("{}M", m.memory_mb));
    a.push("-device".into());
    a.push("virtio-rng-pci".into());
    a.push("-machine".into());
    a.push(m.accel.arg().into());
    a.push("-cpu".into());
    a.push("max".into());
    a.push("-drive".into());
    a.push(format!("file={},format=raw,if=none,id=hd0,readonly=on", opt_value(&m.image)));
    a.push("-display".into());
    a.push("none".into());
    a.push("-serial".into());
    a.push("stdio".into());
    a.push("-virtfs".into());
    a.push(format!(
        "local,path={},mount_tag=0,security_model=none,multidevs=remap,id=hd0",
        opt_value(&m.workspace)
    ));
    // The node: `-device vhost-vsock-pci,guest-cid=CID` here (left out, see the module docs).
    a.push("-qmp".into());
    a.push(format!("unix:{},server", opt_value(qmp)));
    for gpu in &m.gpus {
        a.push("-device".into());
        a.push(format!("vfio-pci,rombar=0,host={gpu}"));
    }
    a.into_iter().map(OsString::from).collect()
}

/// Where QEMU is: `explicit` (`--qemu`, GVBUILD_QEMU: a path, or a name looked up on PATH) or
/// `qemu-system-x86_64` on PATH.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    let name = explicit.map_or_else(|| QEMU.to_string(), |p| p.to_string_lossy().into_owned());
    let cwd = std::env::current_dir().ok()?;
    crate::fingerprint::tools::resolve(&name, &cwd)
}

/// A one-sector guest for [`probe_kvm`]: real-mode code that writes `ok` to the first serial
/// port and then 0x21 to `isa-debug-exit` (port 0x501), so QEMU exits with status
/// `(0x21 << 1) | 1` = 67. Hand-assembled; each line is one instruction.
const PROBE_SECTOR: &[u8] = &[
    0xfa, // cli
    0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
    0xb0, b'o', // mov al, 'o'
    0xee, // out dx, al
    0xb0, b'k', // mov al, 'k'
    0xee, // out dx, al
    0xba, 0x01, 0x05, // mov dx, 0x501 (isa-debug-exit)
    0xb0, 0x21, // mov al, 0x21
    0xee, // out dx, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
];
/// QEMU's exit status after the probe sector ran to its end.
const PROBE_STATUS: i32 = (0x21 << 1) | 1;

/// Whether KVM can run a guest here: `Ok(())`, or why not (QEMU's words). Only asked when
/// `/dev/kvm` opens; the probe boots [`PROBE_SECTOR`] with `accel=kvm` and takes well under a
/// second where KVM works.
pub fn probe_kvm(qemu: &Path, scratch: &Path) -> Result<(), QemuError> {
    let disk = scratch.join("kvm-probe.img");
    let mut sector = PROBE_SECTOR.to_vec();
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xaa]);
    std::fs::write(&disk, &sector)
        .map_err(|e| QemuError::ProbeWrite { path: disk.clone(), source: Arc::new(e) })?;
    // A group of its own, so that a probe that hangs is killed whole.
    let mut child = Command::new(qemu)
        .process_group(0)
        .args(["-machine", "q35,accel=kvm", "-cpu", "max", "-m", "64M", "-display", "none", "-vga", "none"])
        .args(["-serial", "null", "-device", "isa-debug-exit", "-nodefaults"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", opt_value(&disk)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| QemuError::Start { qemu: qemu.to_path_buf(), source: Arc::new(e) })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = crate::sys::killpg(child.id(), crate::sys::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) if s.code() == Some(PROBE_STATUS) => Ok(()),
        Some(_) => Err(QemuError::KvmFailed(
            err.lines().find(|l| !l.trim().is_empty()).unwrap_or("QEMU failed under KVM").to_string(),
        )),
        None => Err(QemuError::KvmTimeout),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The node's argument list, line by line (gevulotnetwork/gevulot
    /// `crates/node/src/vmm/qemu.rs`, `start_vm`), with the two local changes the module docs
    /// name: no vsock device, QMP on a Unix socket.
    #[test]
    fn the_arguments_are_the_nodes() {
        let m = MachineSpec {
            image: "/img/prover.img".into(),
            workspace: "/ws".into(),
            cpus: 4,
            memory_mb: 8192,
            gpus: vec!["0000:01:00.0".into()],
            accel: Accel::KvmOrTcg,
        };
        let args: Vec<String> =
            node_args(&m, Path::new("/q/qmp.sock")).into_iter().map(|a| a.into_string().unwrap()).collect();
        let expected = [
            // `.args(["-machine", "q35"])`
            "-machine q35",
            // the three root ports
            "-device pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x3",
            "-device pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x3.0x1",
            "-device pcie-root-port,port=0x12,chassis=3,id=pci.3,bus=pcie.0,addr=0x3.0x2",
            // the disk: virtio-scsi on pci.2, the image as drive hd0
            "-device virtio-scsi-pci,bus=pci.2,addr=0x0,id=scsi0",
            "-device scsi-hd,bus=scsi0.0,drive=hd0",
            "-vga none",
            // `-smp {cpus}`
            "-smp 4",
            "-device isa-debug-exit",
            // `-m {mem}M`
            "-m 8192M",
            "-device virtio-rng-pci",
            "-machine accel=kvm:tcg",
            "-cpu max",
            "-drive file=/img/prover.img,format=raw,if=none,id=hd0,readonly=on",
            "-display none",
            "-serial stdio",
            // the workspace: 9p mount tag 0 (was 1 before commit 3ec31e97, #194)
            "-virtfs local,path=/ws,mount_tag=0,security_model=none,multidevs=remap,id=hd0",
            // node: `-qmp tcp:localhost:{port},server`
            "-qmp unix:/q/qmp.sock,server",
            // one per GPU: `-device vfio-pci,rombar=0,host={addr}`
            "-device vfio-pci,rombar=0,host=0000:01:00.0",
        ];
        let mut pairs = Vec::new();
        for pair in args.chunks(2) {
            pairs.push(pair.join(" "));
        }
        assert_eq!(pairs, expected);
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let m = MachineSpec {
            image: "/a,b/x.img".into(),
            workspace: "/w,s".into(),
            cpus: 2,
            memory_mb: 2048,
            gpus: vec![],
            accel: Accel::Tcg,
        };
        let args: Vec<String> =
            node_args(&m, Path::new("/q")).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert!(args.contains(&"file=/a,,b/x.img,format=raw,if=none,id=hd0,readonly=on".to_string()));
        assert!(args.iter().any(|a| a.starts_with("local,path=/w,,s,mount_tag=0")));
        assert!(args.contains(&"accel=tcg".to_string()));
    }
}
