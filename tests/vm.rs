//! `gvbuild run` and the `task` step against a real QEMU, with a stand-in Nanos release whose
//! boot loader is a boot sector written here: it prints a line on the serial port, then leaves
//! through `isa-debug-exit`, hangs, or resets the machine. No Nanos kernel runs, so no task
//! is ever answered: these tests cover the QEMU invocation, the console, the ends a VM can come
//! to and their diagnoses, and that no QEMU outlives gvbuild. `vm_nanos.rs` boots real Nanos.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::*;

/// How the stand-in boot sector ends after printing its line.
#[derive(Clone, Copy)]
pub enum End {
    /// Write the code to `isa-debug-exit` (port 0x501): QEMU exits with `(code << 1) | 1`.
    Exit(u8),
    /// `cli; hlt` forever.
    Hang,
    /// Reset the machine through the reset control register (port 0xCF9).
    Reset,
}

/// A boot sector (real mode, loaded at 0x7C00) that prints `message` and a newline on COM1 and
/// then ends as `end` says, with the Nanos boot record (`stage2_len` bytes of stage2 follow) and
/// the 55 AA signature. Hand-assembled; each line is one instruction.
pub fn boot_sector(message: &str, end: End, stage2_len: u64) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xbe, 0, 0, // mov si, MESSAGE (patched below)
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xac, // loop: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp loop
    ];
    match end {
        End::Exit(c) => code.extend([0xba, 0x01, 0x05, 0xb0, c, 0xee, 0xf4, 0xeb, 0xfd]),
        End::Hang => code.extend([0xfa, 0xf4, 0xeb, 0xfd]),
        End::Reset => code.extend([0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee, 0xf4, 0xeb, 0xfd]),
    }
    let at = 0x7c00 + code.len() as u16;
    code[6..8].copy_from_slice(&at.to_le_bytes());
    code.extend(message.as_bytes());
    code.extend(b"\r\n\0");
    assert!(code.len() < 0x1aa, "the message is too long for the boot sector");
    let mut sector = code;
    sector.resize(512, 0);
    sector[0x1aa..0x1b2].copy_from_slice(&0x8000u64.to_le_bytes());
    sector[0x1b2..0x1ba].copy_from_slice(&stage2_len.to_le_bytes());
    sector[0x1ba..0x1be].copy_from_slice(&12u32.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

/// A project whose `image` target is built from the stand-in release with this boot sector, and
/// a `prove` task target on it.
fn project(message: &str, end: End, mounts: &str) -> Project {
    let p = Project::new().file(
        "gevulot.yaml",
        &native_image_yaml(
            "  prove:\n    task:\n      image: prover.img\n      args: [--fast]\n      files: [in/sample.in]\n      into: out/prove\n      timeout: 20\n",
        ),
    );
    write_nanos_release(&p, "nanos");
    let stage2_len = 8 * 512;
    let mut boot = boot_sector(message, end, stage2_len);
    boot.extend((0..stage2_len).map(|_| 0u8));
    fs::write(p.path("nanos/boot.img"), boot).unwrap();
    p.executable("root/prover", "prover");
    p.write("prover.json", &format!(r#"{{"Program": "prover", "Mounts": {mounts}}}"#));
    p.write("in/sample.in", "a sample");
    p
}

/// Text with miette's wrapping undone: every run of spaces, newlines and `|` gutters is one
/// space, so a message can be looked for whatever the width it was wrapped at.
fn flat(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c == '|').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

fn has(text: &str, want: &str) {
    assert!(flat(text).contains(&flat(want)), "want {want:?} in:\n{text}");
}

/// QEMU processes whose command line names `needle` (a test's own temporary path).
fn qemus_with(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("qemu-system") && cmd.contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// The real QEMU on PATH.
fn real_qemu() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path).map(|d| d.join("qemu-system-x86_64")).find(|p| p.is_file()).unwrap()
}

/// A wrapper for `--qemu` that appends its arguments (one per line, then a blank line) to
/// `log` and runs the real QEMU; at `script` (default: `qemu-recorder.sh` in the project).
fn recording_qemu_at(script: &Path, log: &Path) -> PathBuf {
    fs::write(
        script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\necho >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            log.display(),
            real_qemu().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    script.to_path_buf()
}

fn recording_qemu(p: &Project, log: &Path) -> PathBuf {
    recording_qemu_at(&p.path("qemu-recorder.sh"), log)
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn run_boots_the_image_with_the_node_s_qemu_arguments_and_keeps_the_console() {
    let p = project("stand-in boot sector says hello", End::Exit(0x21), r#"{"%1": "/workspace"}"#);
    let log = p.path("qemu-args.log");
    let qemu = recording_qemu(&p, &log);
    let run = p
        .gvbuild(&["run", "image", "--qemu", qemu.to_str().unwrap(), "--cpus", "3", "--memory", "1g"])
        .exit(1);
    let err = run.stderr();
    // Built first (as `cargo run` does), then booted, with the console streamed.
    assert!(p.exists("prover.img"), "{err}");
    has(&err, "vm| stand-in boot sector says hello");
    has(&err, "the program exited without a result");
    has(&err, "QEMU exit status 67: the guest wrote 33 to isa-debug-exit");
    // The console's last lines are in the diagnosis, and the whole console in the log.
    has(&err, "  | stand-in boot sector says hello");
    let console = p.read("prover.run/console.log");
    has(&console, "stand-in boot sector says hello");
    assert!(
        !console.contains("QEMU waiting for connection"),
        "QEMU's QMP note is not the guest's: {console}"
    );

    // The arguments of the boot (the invocation with -virtfs; the other one is the KVM probe).
    let text = fs::read_to_string(&log).unwrap();
    let boot: Vec<&str> = text.split("\n\n").find(|a| a.contains("-virtfs")).unwrap().lines().collect();
    let image = p.path("prover.img");
    let accel = if err.contains("accel=tcg") { "accel=tcg" } else { "accel=kvm:tcg" };
    let expected_head = [
        "-machine",
        "q35",
        "-device",
        "pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x3",
        "-device",
        "pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x3.0x1",
        "-device",
        "pcie-root-port,port=0x12,chassis=3,id=pci.3,bus=pcie.0,addr=0x3.0x2",
        "-device",
        "virtio-scsi-pci,bus=pci.2,addr=0x0,id=scsi0",
        "-device",
        "scsi-hd,bus=scsi0.0,drive=hd0",
        "-vga",
        "none",
        "-smp",
        "3",
        "-device",
        "isa-debug-exit",
        "-m",
        "1024M",
        "-device",
        "virtio-rng-pci",
        "-machine",
        accel,
        "-cpu",
        "max",
        "-drive",
        &format!("file={},format=raw,if=none,id=hd0,readonly=on", image.display()),
        "-display",
        "none",
        "-serial",
        "stdio",
        "-virtfs",
    ];
    assert_eq!(&boot[..expected_head.len()], &expected_head[..]);
    let virtfs = boot[expected_head.len()];
    assert!(
        virtfs.starts_with("local,path=/")
            && virtfs.ends_with(",mount_tag=0,security_model=none,multidevs=remap,id=hd0"),
        "{virtfs}"
    );
    assert_eq!(boot[expected_head.len() + 1], "-qmp");
    assert!(
        boot[expected_head.len() + 2].starts_with("unix:")
            && boot[expected_head.len() + 2].ends_with(",server")
    );
    assert_eq!(boot.len(), expected_head.len() + 3, "no vsock, no GPU: {boot:?}");
    // The fresh workspace held the task, and is gone.
    let ws = virtfs.trim_start_matches("local,path=").split(",mount_tag").next().unwrap();
    assert!(!Path::new(ws).exists(), "the temporary workspace {ws} is removed");
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn run_writes_the_task_into_a_named_workspace() {
    let p = project("hello", End::Exit(0), r#"{"%1": "/workspace"}"#);
    p.write("ws/task_result.json", "stale: the shim would fail to create it");
    p.gvbuild(&[
        "run",
        "image",
        "--workspace",
        "ws",
        "--input",
        "in/sample.in",
        "--task-id",
        "t7",
        "--",
        "--fast",
        "x y",
    ])
    .exit(1)
    .stderr_has("the program exited without a result");
    let task: serde_json::Value = serde_json::from_str(&p.read("ws/task.json")).unwrap();
    assert_eq!(task, serde_json::json!({ "id": "t7", "args": ["--fast", "x y"], "files": ["sample.in"] }));
    assert_eq!(p.read("ws/sample.in"), "a sample");
    assert!(!p.exists("ws/task_result.json"), "the stale result is removed before the boot");
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn run_stops_at_the_first_reset_and_says_what_the_node_would_do() {
    let p = project("booting once", End::Reset, r#"{"%1": "/workspace"}"#);
    let run = p.gvbuild(&["run", "image", "--timeout", "20"]).exit(1);
    let err = run.stderr();
    has(&err, "the VM reset");
    has(&err, "it would boot the image again");
    let console = p.read("prover.run/console.log");
    assert_eq!(console.matches("booting once").count(), 1, "stopped at the first reset: {console}");
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn run_kills_the_vm_at_its_timeout() {
    let p = project("hanging", End::Hang, r#"{"%1": "/workspace"}"#);
    let (code, text) = gvbuild_in_time(&p, &["run", "image", "--timeout", "2"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "the task ran past its 2 s limit and QEMU was killed");
    has(&text, "  | hanging");
    assert!(qemus_with(p.root()).is_empty());
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn no_qemu_outlives_gvbuild_after_ctrl_c_sigterm_or_sigkill() {
    for name in ["INT", "TERM", "KILL"] {
        let p = project("waiting for a signal", End::Hang, r#"{"%1": "/workspace"}"#);
        p.build(&["image"]);
        let mut child = p
            .command(&["run", "prover.img", "--timeout", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the guest's line on the console", || {
            fs::read_to_string(p.path("prover.run/console.log"))
                .is_ok_and(|c| c.contains("waiting for a signal"))
        });
        assert_eq!(qemus_with(p.root()).len(), 1, "{name}: one QEMU runs");
        let sent =
            std::process::Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let status = wait_child(&mut child, "gvbuild");
        assert!(!status.success(), "{name}");
        wait_until(&format!("no QEMU left after SIG{name}"), || qemus_with(p.root()).is_empty());
    }
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn a_workspace_off_mount_tag_zero_is_named_as_the_cause() {
    // `%2` sorts after `%1`: /workspace is numbered %1, which the node's mount_tag=0 misses.
    let p = project("no workspace here", End::Exit(0), r#"{"%1": "/data", "%2": "/workspace"}"#);
    let run = p.gvbuild(&["run", "image"]).exit(1).stderr_has("the program exited without a result");
    has(
        &run.stderr(),
        "the Gevulot node attaches the workspace as 9p mount tag 0: this image will not see it",
    );
}

#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn a_task_without_a_result_fails_its_step_and_stores_nothing() {
    let p = project("no result", End::Exit(0), r#"{"%1": "/workspace"}"#);
    for _ in 0..2 {
        let (run, b) = p.build_any(&["prove"]);
        assert_eq!(run.code(), 1, "{}", run.stderr());
        assert_eq!(b.outcomes()["prove"], "failed", "ran again, never restored: {b:?}");
        has(&run.stderr(), "the program exited without a result");
        assert!(!p.exists("out/prove"), "a failed task leaves no output");
        // The console outlives the output folder, in the step's log.
        assert!(p.read(".gvbuild/logs/prove.log").contains("no result"), "the console is kept");
        has(&run.stderr(), "the whole console is in");
    }
    // A dry run says what would boot.
    p.gvbuild(&["-n", "prove"])
        .success()
        .stdout_has("task `task01`: boot prover.img with 1 file(s) -> out/prove");
}

#[test]
fn run_says_how_to_install_qemu_when_it_is_missing() {
    let p = project("unused", End::Exit(0), r#"{"%1": "/workspace"}"#);
    p.build(&["image"]);
    let run = p.gvbuild(&["run", "prover.img", "--qemu", "/nonexistent/qemu-system-x86_64"]).exit(1);
    has(&run.stderr(), "QEMU (/nonexistent/qemu-system-x86_64) was not found");
    has(&run.stderr(), "apt-get install qemu-system-x86");
}

#[test]
fn run_refuses_a_target_that_is_not_an_image() {
    let p = project("unused", End::Exit(0), r#"{"%1": "/workspace"}"#);
    p.gvbuild(&["run", "prove"]).exit(2).stderr_has("target `prove` is not an `image:` step");
    p.gvbuild(&["run", "nope.img"]).exit(2).stderr_has("no image file nope.img");
}

#[test]
fn run_refuses_folders_it_would_lose_data_in() {
    let p = project("unused", End::Exit(0), r#"{"%1": "/workspace"}"#);
    p.build(&["image"]);
    p.write("mine/notes.txt", "not a result");
    p.write("ws/keep.txt", "the user's");
    let refused = |args: &[&str], want: &str| {
        let run = p.gvbuild(args).exit(2);
        has(&run.stderr(), want);
    };
    refused(&["run", "prover.img", "--into", "mine"], "holds files that are not an earlier run's result");
    refused(&["run", "prover.img", "--into", "ws", "--workspace", "ws"], "overlap");
    refused(&["run", "prover.img", "--into", "ws/out", "--workspace", "ws"], "overlap");
    refused(&["run", "prover.img", "--into", ".", "--workspace", "ws"], "overlap");
    p.write("a/x.in", "1");
    p.write("b/x.in", "2");
    refused(&["run", "prover.img", "--input", "a/x.in", "--input", "b/x.in"], "would both be");
    assert_eq!(p.read("mine/notes.txt"), "not a result");
    assert_eq!(p.read("ws/keep.txt"), "the user's");
    // -C: paths are read from there.
    let q = p.root().to_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(bin())
        .current_dir(out.path())
        .args(["-C", &q, "run", "prover.img", "--qemu", "/nonexistent/qemu"])
        .env("GVBUILD_CACHE_DIR", p.path(".cache"))
        .output()
        .unwrap();
    has(&String::from_utf8_lossy(&run.stderr), "QEMU (/nonexistent/qemu) was not found");
}

/// A task's mistakes are reported together, each at its place in gevulot.yaml.
#[test]
fn task_fields_are_checked_and_every_mistake_is_reported() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  prove:\n    run: echo not here\n    task:\n      image: build/*.img\n      files: [a/x.in, b/x.in, c/task.json]\n      memory: lots\n      cpus: 0\n      into: out\n",
    );
    let run = p.gvbuild(&["list"]).exit(2);
    let err = run.stderr();
    for want in [
        "`run` is not allowed next to `task` in target `prove`",
        "the image of task `prove` is a glob",
        "two files of task `prove` are named `x.in` in the workspace",
        "file `c/task.json` of task `prove` is named like the task protocol's own `task.json`",
        "`memory` of task `prove` is not a size of 1 MiB or more",
        "`cpus` of task `prove` is 0",
        "gevulot.yaml:5:14",
    ] {
        has(&err, want);
    }
}

/// A task step's machine: the image's manifest's RunConfig, unless the task says otherwise
/// (the QEMU on PATH records what it was given).
#[test]
#[cfg_attr(gvbuild_no_qemu, ignore = "needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
fn a_task_step_takes_its_machine_size_from_the_manifest_unless_it_says_otherwise() {
    let p =
        project("sized", End::Exit(0), r#"{"%1": "/workspace"}, "RunConfig": {"CPUs": 3, "Memory": "1g"}"#);
    let bin = p.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = p.path("qemu-args.log");
    recording_qemu_at(&bin.join("qemu-system-x86_64"), &log);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let boot_args = || {
        let text = fs::read_to_string(&log).unwrap();
        let last = text.split("\n\n").filter(|a| a.contains("-virtfs")).last().unwrap().to_string();
        let args: Vec<&str> = last.lines().collect();
        let at = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1].to_string();
        (at("-smp"), at("-m"))
    };
    let out = p.command(&["prove"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(boot_args(), ("3".to_string(), "1024M".to_string()));
    let yaml = p.read("gevulot.yaml").replace("      timeout: 20\n", "      timeout: 20\n      cpus: 1\n");
    p.write("gevulot.yaml", &yaml);
    let out = p.command(&["prove"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(boot_args(), ("1".to_string(), "1024M".to_string()));
}
