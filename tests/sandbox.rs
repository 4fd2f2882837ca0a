//! The sandbox of `run:` steps (docs/sandbox.md), through the real binary: what a step sees and
//! may write, the diagnosis of a step that touched what it did not declare, scratch folders,
//! `network: false`, the fallback where the machine has no namespaces, and the visible set
//! against what a remote worker receives.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{bin, names, wait_until, y, Project};

/// Entries in the cache's action cache: what a build stored.
fn stored(p: &Project) -> usize {
    walkdir::WalkDir::new(p.cache.path().join("ac"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

#[test]
fn a_step_that_cats_an_undeclared_file_fails_naming_it_and_stores_nothing() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              t:
                inputs: [a.txt]
                outputs: [out/t.txt]
                run: cat a.txt secret.txt > out/t.txt
            "#),
        )
        .file("a.txt", "a\n")
        .file("secret.txt", "s\n");
    let run = p.gvbuild(&[]).failure();
    let err = run.stderr();
    assert!(err.contains("read  secret.txt (hidden by the sandbox; add it to `inputs:`)"), "{err}");
    assert!(err.contains("No such file or directory"), "the step saw no such file: {err}");
    assert_eq!(stored(&p), 0, "nothing stored");
    // Declared, it builds, and is stored.
    p.write(
        "gevulot.yaml",
        &y(r#"
        targets:
          t:
            inputs: [a.txt, secret.txt]
            outputs: [out/t.txt]
            run: cat a.txt secret.txt > out/t.txt
        "#),
    );
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("out/t.txt"), "a\ns\n");
    assert_eq!(stored(&p), 1);
}

#[test]
fn the_step_sees_its_inputs_and_dependencies_outputs_and_nothing_else_of_the_project() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [src/a.txt]
                outputs: [out/a.txt]
                run: cp src/a.txt out/a.txt
              b:
                deps: [a]
                outputs: [out/b.txt]
                run: cp out/a.txt out/b.txt
              c:
                deps: [b]
                inputs: [src/c/]
                outputs: [out/seen.txt]
                run: find . -type f -o -type l | LC_ALL=C sort > "$TMPDIR/seen"; cp "$TMPDIR/seen" out/seen.txt
              other:
                outputs: [out/other.txt]
                run: echo other > out/other.txt
            "#),
        )
        .file("src/a.txt", "a\n")
        .file("src/c/one.txt", "1\n")
        .file("src/c/deep/two.txt", "2\n")
        .file("src/unrelated.txt", "u\n")
        .file(".git/config", "");
    p.build(&["other"]);
    p.build(&["c"]);
    // Its declared folder with all below it, what it depends on (directly or not); not the other
    // target's output, not the undeclared source, not gevulot.yaml, .git or .gvbuild.
    assert_eq!(p.read("out/seen.txt"), "./out/a.txt\n./out/b.txt\n./src/c/deep/two.txt\n./src/c/one.txt\n");
}

/// gcc finds `x.h` through an include folder that reaches it by an environment variable, which
/// neither the key nor a depfile parse sees: sandboxed the folder is not there, and the failure
/// names it.
#[test]
fn an_undeclared_header_found_through_an_include_folder_the_depfile_does_not_record_fails() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              app:
                inputs: [main.c]
                outputs: [build/app]
                run: cc -MD -MF build/app.d -o build/app main.c
                depfile: build/app.d
                env: { CPATH: hidden }
            "#),
        )
        .file("main.c", "#include \"x.h\"\nint main(void) { return X; }\n")
        .file("hidden/x.h", "#define X 0\n");
    let run = p.gvbuild(&[]).failure();
    let err = run.stderr();
    assert!(err.contains("x.h: No such file or directory"), "{err}");
    assert!(err.contains("read  hidden"), "the diagnosis names the folder: {err}");
    assert!(err.contains("`inputs:`"), "{err}");
    assert_eq!(stored(&p), 0);
    // Unsandboxed it compiles: the header was read through a lookup no key covers.
    p.build(&["--no-sandbox"]);
    assert!(p.exists("build/app"));
}

/// A depfile step sees the files it may discover, but its key covers one's content only where
/// its depfile lists it: a read of one the depfile does not list (a `cat` beside the compile,
/// a header of an `-isystem` folder that `-MMD` leaves out) fails the step,
/// naming the file, with nothing stored or recorded and no output kept. A header the depfile
/// lists is read as before, and declared (or listed) the same reads build and are keyed.
#[test]
fn a_depfile_steps_read_that_its_depfile_does_not_list_fails_and_stores_nothing() {
    let yaml = |ver_inputs: &str, dep_flag: &str| {
        y(&format!(
            r#"
            targets:
              app:
                inputs: [main.c]
                outputs: [build/app.o, build/app.d]
                run: cc -MMD -MF build/app.d -Iinc -c main.c -o build/app.o
                depfile: build/app.d
              ver:
                inputs: [{ver_inputs}]
                outputs: [build/ver.o, build/ver.d, build/ver.txt]
                run: cc -MMD -MF build/ver.d -c ver.c -o build/ver.o && cat version.txt empty.txt > build/ver.txt
                depfile: build/ver.d
              sys:
                inputs: [sys.c]
                outputs: [build/sys.o, build/sys.d]
                run: cc {dep_flag} -MF build/sys.d -isystem vendor -c sys.c -o build/sys.o
                depfile: build/sys.d
            "#
        ))
    };
    let p = Project::new()
        .file("gevulot.yaml", &yaml("ver.c", "-MMD"))
        .file("main.c", "#include \"a.h\"\nint main(void) { return A; }\n")
        .file("inc/a.h", "#define A 0\n")
        .file("ver.c", "int ver;\n")
        .file("version.txt", "v1\n")
        .file("empty.txt", "")
        .file("sys.c", "#include <v.h>\nint sys = V;\n")
        .file("vendor/v.h", "#define V 1\n");
    let (run, build) = p.build_any(&["-k"]);
    let err = run.failure().stderr();
    assert_eq!(build.ran(), names(&["app"]), "a header its depfile lists is keyed: {err}");
    assert_eq!(build.with("failed"), names(&["sys", "ver"]), "{err}");
    let unlisted = "(a file its depfile step may discover, which the sandbox shows, but its depfile does not list it, so its key does not cover it: add it to `inputs:`";
    assert!(
        err.contains("the command succeeded, but in the sandbox it touched what it did not declare"),
        "{err}"
    );
    assert!(err.contains(&format!("read  version.txt {unlisted})")), "{err}");
    // The kernel reads an empty file without asking the view: its lookup is keyed instead.
    assert!(!err.contains("read  empty.txt"), "{err}");
    assert!(
        err.contains(&format!("read  vendor/v.h {unlisted}, or have the depfile list it: `-MMD` leaves out headers of `-isystem` and `-idirafter` folders, `-MD` does not)")),
        "{err}"
    );
    assert!(
        !err.contains("read  ver.c") && !err.contains("read  sys.c") && !err.contains("read  inc/a.h"),
        "{err}"
    );
    assert_eq!(stored(&p), 1, "only `app` is stored");
    assert!(!p.exists("build/ver.txt") && !p.exists("build/ver.o") && !p.exists("build/sys.o"));
    // Nothing was recorded: built again, they run again and fail again.
    let (again, build) = p.build_any(&["-k"]);
    assert_eq!(build.with("failed"), names(&["sys", "ver"]), "{}", again.stderr());
    // Unsandboxed nothing sees the reads: the hole the sandbox closes.
    p.build(&["--no-sandbox", "ver"]);
    assert_eq!(p.read("build/ver.txt"), "v1\n");

    // Declared, the files are keyed; listed (`-MD`), the header is.
    p.write("gevulot.yaml", &yaml("ver.c, version.txt, empty.txt", "-MD"));
    assert_eq!(p.build(&[]).ran(), names(&["sys", "ver"]));
    p.write("version.txt", "v2\n");
    p.write("vendor/v.h", "#define V 2\n");
    assert_eq!(p.build(&[]).ran(), names(&["sys", "ver"]));
    assert_eq!(p.read("build/ver.txt"), "v2\n");
    assert_eq!(p.build(&[]).fresh(), names(&["app", "sys", "ver"]));
}

/// What a depfile step may discover, as a user's command names it: an include folder given as
/// an absolute path in the project (as CMake writes them) or through `..` (also out of the
/// project folder and back in), a header that is a
/// symlink; an empty file it only looks at (cargo `stat`s a package's README) is no read. It
/// builds traced and sandboxed, and a change to the header a symlink leads to reruns it.
#[test]
fn a_depfile_steps_include_folders_symlinks_and_looks_are_as_unsandboxed() {
    let p = Project::new()
        .file("src/m.c", "#include \"l.h\"\n#include \"o.h\"\n#include \"p.h\"\nint m = L + O + P;\n")
        .file("more/p.h", "#define P 1\n")
        .file("inc/real.h", "#define L 1\n")
        .file("other/o.h", "#define O 1\n")
        .file("src/README.md", "");
    std::os::unix::fs::symlink("real.h", p.path("inc/l.h")).unwrap();
    let inc = p.path("inc");
    let name = p.root().file_name().unwrap().to_str().unwrap().to_string();
    p.write(
        "gevulot.yaml",
        &y(&format!(
            r#"
            targets:
              m:
                inputs: [src/m.c]
                outputs: [build/m.o, build/m.d]
                run: cc -MMD -MF build/m.d -I{} -Isrc/../other -I../{name}/more -c src/m.c -o build/m.o && test -e src/README.md && stat src/README.md
                depfile: build/m.d
            "#,
            inc.display()
        )),
    );
    // Traced first (the depfile names `src/../other/o.h`; a `stat` reads a name): nothing named.
    let run = p.gvbuild(&["--trace-undeclared"]).success();
    assert!(!run.stderr().contains("did not declare"), "{}", run.stderr());
    assert_eq!(p.build(&[]).fresh(), names(&["m"]));
    assert_eq!(stored(&p), 1);
    p.write("inc/real.h", "#define L 2\n");
    assert_eq!(p.build(&[]).ran(), names(&["m"]));
    assert_eq!(p.build(&[]).fresh(), names(&["m"]));
}

/// What a depfile step looks up among the files it may discover is keyed, found or not: a file
/// that appears (`test -e`), one a `__has_include` no longer finds, an empty header that gcc
/// reads without a `READ` (its later content is then a read its `-MMD` depfile does not list).
#[test]
fn what_a_depfile_step_looks_up_among_the_files_it_may_discover_is_keyed() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              probe:
                inputs: [src/main.c]
                outputs: [out.txt, dep.d]
                run: |
                  printf 'out.txt: src/main.c\n' > dep.d
                  if [ -e src/extra.txt ]; then echo found; else echo none; fi > out.txt
                depfile: dep.d
              m:
                inputs: [m.c]
                outputs: [build/m.o, build/m.d]
                run: cc -isystem sys -Iinc -MMD -MF build/m.d -c m.c -o build/m.o
                depfile: build/m.d
              feat:
                inputs: [f.c]
                outputs: [build/f.o, build/f.d]
                run: cc -Iemptyinc -Inewinc -MD -MF build/f.d -c f.c -o build/f.o && { test -e fifo || true; } && { test -e .gvbuild || true; }
                depfile: build/f.d
            "#),
        )
        .file("f.c", "#if __has_include(<feature.h>)\nint has_feature;\n#endif\nint f;\n")
        .file("src/main.c", "int x;\n")
        .file("m.c", "#include <config.h>\n#if __has_include(\"cfg.h\")\nint has_cfg;\n#endif\nint m;\n")
        .file("sys/config.h", "")
        .file("inc/cfg.h", "#define C\n");
    // A FIFO it looks for (hidden: no file to discover) is keyed, not an error; gvbuild's own
    // folder, which changes in every build, is hidden whatever its time.
    assert!(std::process::Command::new("mkfifo").arg(p.path("fifo")).status().unwrap().success());
    std::fs::create_dir(p.path("emptyinc")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["feat", "m", "probe"]));
    assert_eq!(p.build(&[]).fresh(), names(&["feat", "m", "probe"]));
    // (Gone before the copy below, which would block reading it.)
    std::fs::remove_file(p.path("fifo")).unwrap();
    // An include folder that was not there, and one that was but showed nothing: each made to
    // hold the header the step looked for.
    p.write("newinc/feature.h", "\n");
    assert_eq!(p.build(&["feat"]).ran(), names(&["feat"]));
    p.write("emptyinc/feature.h", "\n");
    assert_eq!(p.build(&["feat"]).ran(), names(&["feat"]));
    assert_eq!(p.read("out.txt"), "none\n");
    p.write("src/extra.txt", "x\n");
    assert_eq!(p.build(&[]).ran(), names(&["probe"]));
    assert_eq!(p.read("out.txt"), "found\n");
    // Another clone with the file, sharing the cache: the result made with it.
    let other = p.clone_to_new_folder();
    assert_eq!(other.build(&["probe"]).restored(), names(&["probe"]));
    assert_eq!(other.read("out.txt"), "found\n");
    std::fs::remove_file(p.path("src/extra.txt")).unwrap();
    assert_eq!(p.build(&[]).restored(), names(&["probe"]));
    assert_eq!(p.read("out.txt"), "none\n");
    // Another target comes to write a path it looked up: a lookup is no read to order after
    // that target, and the path stays hidden from it.
    let yaml =
        p.read("gevulot.yaml") + "  gen:\n    outputs: [src/extra.txt]\n    run: echo gen > src/extra.txt\n";
    p.write("gevulot.yaml", &yaml);
    p.build(&["probe", "gen"]);
    assert_eq!(p.build(&["probe", "gen"]).fresh(), names(&["gen", "probe"]));
    assert_eq!(p.read("out.txt"), "none\n");
    // The target gone, the file it left is one to discover: the step sees it.
    p.write(
        "gevulot.yaml",
        &yaml.replace("  gen:\n    outputs: [src/extra.txt]\n    run: echo gen > src/extra.txt\n", ""),
    );
    assert_eq!(p.build(&["probe"]).ran(), names(&["probe"]));
    assert_eq!(p.read("out.txt"), "found\n");
    std::fs::remove_file(p.path("src/extra.txt")).unwrap();
    assert_eq!(p.build(&["probe"]).restored(), names(&["probe"]));
    // Looked for and gone: `has_cfg` must go with it.
    std::fs::rename(p.path("inc/cfg.h"), p.path("cfg.h.away")).unwrap();
    assert_eq!(p.build(&["m"]).ran(), names(&["m"]));
    // Filled, the empty header is a read its depfile does not list.
    p.write("sys/config.h", "#define V 1\n");
    let err = p.gvbuild(&["m"]).failure().stderr();
    assert!(err.contains("read  sys/config.h (a file its depfile step may discover"), "{err}");
}

#[test]
fn writing_outside_the_outputs_fails_and_the_write_never_reaches_the_project() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
        targets:
          stray:
            outputs: [out/t.txt]
            run: echo t > out/t.txt; echo s > stray.txt; mkdir -p more && echo m > more/x
          outside:
            outputs: [out/o.txt]
            run: echo o > out/o.txt; echo x > /usr/gvbuild-sandbox-test
          input:
            inputs: [in.txt]
            outputs: [out/i.txt]
            run: echo changed > in.txt; echo i > out/i.txt
        "#),
        )
        .file("in.txt", "original\n");
    let run = p.gvbuild(&["-k"]).failure();
    let err = run.stderr();
    assert!(
        err.contains("the command succeeded, but in the sandbox it touched what it did not declare"),
        "{err}"
    );
    assert!(err.contains("wrote stray.txt (none of its outputs"), "{err}");
    assert!(err.contains("wrote more (none of its outputs"), "{err}");
    assert!(!p.exists("stray.txt") && !p.exists("more"), "an undeclared write never reaches the project");
    assert!(err.contains("wrote /usr/gvbuild-sandbox-test (outside the project"), "{err}");
    assert!(!Path::new("/usr/gvbuild-sandbox-test").exists());
    assert!(err.contains("wrote in.txt (something it reads, which is read-only for it"), "{err}");
    assert_eq!(p.read("in.txt"), "original\n", "an input is read-only");
    assert_eq!(stored(&p), 0);
}

#[test]
fn a_scratch_folder_persists_between_runs_and_is_not_keyed() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              t:
                inputs: [a.txt]
                outputs: [out/t.txt]
                run: echo run >> state/runs; cat a.txt state/runs > out/t.txt
                scratch: [state]
            "#),
        )
        .file("a.txt", "one\n");
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("state/runs"), "run\n");
    // Editing the scratch folder changes no key: the step stays fresh.
    p.write("state/runs", "edited\n");
    assert_eq!(p.build(&[]).fresh(), names(&["t"]));
    // The next run finds it as it was left.
    p.write("a.txt", "two\n");
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("state/runs"), "edited\nrun\n");
    assert_eq!(p.read("out/t.txt"), "two\nedited\nrun\n");
    // Never removed by gvbuild, not even by `clean`.
    p.gvbuild(&["clean"]).success();
    assert!(p.exists("state/runs"));
}

#[test]
fn network_false_refuses_a_connection_that_the_default_allows() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10); print('connected')\""
    );
    let yaml = |network: &str| {
        format!(
            "{network}targets:\n  t:\n    outputs: [out/t.txt]\n    run: {connect} > out/t.txt\n    cache: false\n"
        )
    };
    let p = Project::new().file("gevulot.yaml", &yaml(""));
    p.build(&[]);
    assert_eq!(p.read("out/t.txt"), "connected\n");
    p.write("gevulot.yaml", &yaml("network: false\n"));
    let run = p.gvbuild(&[]).failure();
    assert!(run.stderr().contains("Network is unreachable"), "{}", run.stderr());
    // A target's own `network:` goes over the top level's.
    p.write(
        "gevulot.yaml",
        &yaml("network: false\n").replace("    cache: false\n", "    cache: false\n    network: true\n"),
    );
    p.build(&[]);
    // Unsandboxed, `network: false` still holds.
    p.write("gevulot.yaml", &yaml("network: false\n"));
    let run = p.gvbuild(&["--no-sandbox"]).failure();
    assert!(run.stderr().contains("Network is unreachable"), "{}", run.stderr());
}

#[test]
fn sandbox_false_and_no_sandbox_run_a_step_unsandboxed() {
    let yaml = |top: &str, own: &str| {
        format!("{top}targets:\n  t:\n    outputs: [out/t.txt]\n    run: cat secret.txt > out/t.txt\n{own}")
    };
    let p = Project::new().file("gevulot.yaml", &yaml("", "")).file("secret.txt", "s\n");
    p.gvbuild(&[]).failure();
    p.build(&["--no-sandbox"]);
    p.write("gevulot.yaml", &yaml("", "    sandbox: false  # reads secret.txt on purpose\n"));
    p.build(&["-B"]);
    p.write("gevulot.yaml", &yaml("sandbox: false\n", ""));
    p.build(&["-B"]);
    // A target's `true` goes over the top level's `false`.
    p.write("gevulot.yaml", &yaml("sandbox: false\n", "    sandbox: true\n"));
    p.gvbuild(&["-B"]).failure();
}

#[test]
fn sandbox_keys_are_checked_where_they_are_written() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          g:
            deps: [t]
            scratch: [x]
          t:
            outputs: [out/t]
            run: echo > out/t
            scratch: [../up, "*.o", .gvbuild/x]
          i:
            inputs: [.gvbuild/, ./.gvbuild/cache/x]
            outputs: [out/i]
            run: echo > out/i
        "#),
    );
    let err = p.gvbuild(&["list"]).exit(2).stderr();
    assert!(err.contains("input `.gvbuild/` of target `i` cannot be used"), "{err}");
    assert!(err.contains("input `./.gvbuild/cache/x` of target `i` cannot be used"), "{err}");
    assert!(err.contains("scratch folder `../up` of target `t` cannot be used"), "{err}");
    assert!(err.contains("scratch folder `*.o` of target `t` cannot be used"), "{err}");
    assert!(err.contains("`.gvbuild/` is gvbuild's own"), "{err}");
    assert!(err.contains("`scratch` needs a step, but target `g` has none"), "{err}");
    assert!(err.contains("[gevulot.yaml:4:15]"), "the group's `scratch` is reported where it is: {err}");
}

/// Where the machine has no namespaces (here: root without CAP_SYS_ADMIN, and user namespaces
/// limited to none), the build warns once, naming the cause, and runs its steps unsandboxed.
#[test]
fn without_namespaces_the_build_warns_once_and_runs_unsandboxed() {
    let can = Command::new("unshare").args(["--user", "--map-root-user", "setpriv", "--version"]).output();
    if !can.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: unshare or setpriv (util-linux) cannot make the test's user namespace here");
        return;
    }
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                outputs: [out/a.txt]
                run: cat secret.txt > out/a.txt
              b:
                outputs: [out/b.txt]
                run: cat secret.txt > out/b.txt
            "#),
        )
        .file("secret.txt", "s\n");
    // In a user namespace of its own, where user namespaces are then limited to none, and
    // without CAP_SYS_ADMIN: gvbuild can make neither kind of namespace.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {} -C {} --cache-dir {} build",
        bin(),
        p.root().display(),
        p.cache.path().display()
    );
    let out =
        Command::new("unshare").args(["--user", "--map-root-user", "sh", "-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> =
        err.lines().filter(|l| l.contains("the sandbox is not available here")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the build: {err}");
    assert!(warnings[0].contains("max_user_namespaces"), "it names the cause and the fix: {err}");
    assert_eq!(p.read("out/a.txt"), "s\n");
}

/// A sandboxed step that is killed with its build leaves nothing behind: the next build runs it
/// again, in a sandbox as before.
#[test]
fn a_step_left_running_in_its_sandbox_is_killed_with_its_group() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          slow:
            outputs: [out/slow]
            run: sleep 60 & echo $$! > ctl/started; wait; echo > out/slow
            scratch: [ctl]
        "#),
    );
    let mut child = p.command(&[]).spawn().unwrap();
    wait_until("the step to start", || {
        fs::read_to_string(p.path("ctl/started")).is_ok_and(|s| s.ends_with('\n'))
    });
    let sleeper = p.read("ctl/started").trim().to_string();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    // The step's group went with its build (SIGTERM: gvbuild kills it), namespace and all.
    let gone = || {
        fs::read_to_string(format!("/proc/{sleeper}/stat"))
            .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
    };
    wait_until("the step's process to be gone", gone);
    fs::remove_file(p.path("ctl/started")).unwrap();
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("sleep 60 &", "true &"));
    assert_eq!(p.build(&[]).ran(), names(&["slow"]));
}

/// Each sandbox's TMPDIR is empty when its step starts, and what the step writes there goes
/// with it.
#[test]
fn tmpdir_is_private_and_empty() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          a:
            outputs: [out/a.txt]
            run: ls -A "$TMPDIR" > out/a.txt; echo a > "$TMPDIR/x"
          b:
            outputs: [out/b.txt]
            run: ls -A "$TMPDIR" > out/b.txt; echo b > "$TMPDIR/x"
        "#),
    );
    p.build(&["-j1"]);
    assert_eq!(p.read("out/a.txt"), "");
    assert_eq!(p.read("out/b.txt"), "");
    // What the steps wrote there went with their sandboxes.
    for e in fs::read_dir(std::env::temp_dir()).unwrap().filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with("gvbuild-sandbox-") {
            assert!(!e.path().join("x").exists(), "{}", e.path().display());
        }
    }
}

/// The diagnosis places paths where the step's processes are: after a `cd`, and in a folder
/// `mkdir -p` walks through.
#[test]
fn the_diagnosis_follows_the_step_into_other_folders() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              up:
                inputs: [sub/in.txt]
                outputs: [out/up.txt]
                run: cd sub && cat in.txt ../secret.txt > ../out/up.txt
              deep:
                outputs: [out/deep.txt]
                run: mkdir -p "$HOME/.gvbuild-sandbox-test/a/b" && echo > out/deep.txt
            "#),
        )
        .file("sub/in.txt", "in\n")
        .file("secret.txt", "s\n");
    let err = p.gvbuild(&["-k"]).failure().stderr();
    assert!(err.contains("read  secret.txt (hidden by the sandbox; add it to `inputs:`)"), "{err}");
    assert!(!err.contains("read  sub/secret.txt"), "{err}");
    let home = std::env::var("HOME").unwrap();
    assert!(err.contains(&format!("wrote {home}/.gvbuild-sandbox-test (outside the project")), "{err}");
    assert!(!p.exists("out/up.txt"), "a failed step's outputs stay out of the project");
}

#[test]
fn a_scratch_folder_is_its_steps_own() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          a:
            inputs: [work/in.txt]
            outputs: [o/a.txt]
            run: echo > o/a.txt
            scratch: [work]
          b:
            outputs: [work/b.txt]
            run: echo > work/b.txt
            scratch: [work/sub]
          c:
            outputs: [bo/]
            run: mkdir -p bo && echo > bo/x
            scratch: [bo/cache]
        "#),
    );
    let err = p.gvbuild(&["list"]).exit(2).stderr();
    assert!(
        err.contains("scratch folder `work` of target `a` and output `work/b.txt` of target `b` overlap"),
        "{err}"
    );
    assert!(
        err.contains(
            "scratch folder `work` of target `a` and scratch folder `work/sub` of target `b` overlap"
        ),
        "{err}"
    );
    assert!(err.contains("input `work/in.txt` of target `a` lies in its scratch folder `work`"), "{err}");
    assert!(err.contains("scratch folder `bo/cache` of target `c` lies in its own output `bo`"), "{err}");
}

/// The cache folder, outside the project here, is not there for a step.
#[test]
fn the_cache_folder_is_hidden_wherever_it_is() {
    let p = Project::new();
    p.write(
        "gevulot.yaml",
        &format!(
            "targets:\n  t:\n    outputs: [out/t.txt]\n    run: ls -A {} > out/t.txt\n",
            p.cache.path().display()
        ),
    );
    p.build(&[]);
    assert_eq!(p.read("out/t.txt"), "", "the step saw an empty folder where the cache is");
    assert!(p.cache.path().join("ac").exists(), "the cache itself is there for gvbuild");

    // Named relative to `-C DIR` (a sandbox started from the shared view's namespace starts at
    // its root, not in gvbuild's folder), with either view; gvbuild itself runs elsewhere.
    let cache = p.cache.path();
    let up = "../".repeat(p.root().components().count() - 1);
    let name = format!("{up}{}", cache.strip_prefix("/").unwrap().display());
    let name = name.as_str();
    let parent = std::env::temp_dir();
    let parent = parent.as_path();
    for view in ["lazy", "bind"] {
        p.write("gevulot.yaml", &format!("targets:\n  t:\n    outputs: [out/t.txt]\n    run: ls -A {} > out/t.txt; echo {view} >> out/t.txt\n", cache.display()));
        let root = p.root().to_str().unwrap().to_string();
        let out = p
            .command(&["-C", &root, "--cache-dir", name, "build"])
            .current_dir(parent)
            .env("GVBUILD_SANDBOX_VIEW", view)
            .env_remove("GVBUILD_CACHE_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{view}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            p.read("out/t.txt"),
            format!("{view}\n"),
            "with --cache-dir {name} from {}",
            parent.display()
        );
    }
}

/// Regression: a folder bound whole (`src/parser/`, all of it visible) was followed, in path
/// order, by `src/parser.rs`, after which the files below the folder were bound again, into a
/// read-only folder: the step could not start.
#[test]
fn a_folder_bound_whole_beside_a_file_of_its_name() {
    let mut p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          t:
            inputs: [src/parser/, src/parser.rs]
            outputs: [out/t.txt]
            run: cat src/parser.rs src/parser/*.rs > out/t.txt
        "#),
    );
    for i in 0..10 {
        p = p.file(&format!("src/parser/f{i}.rs"), &format!("{i}\n"));
    }
    let p = p.file("src/parser.rs", "top\n").file("src/other.txt", "not visible\n");
    p.build(&[]);
    assert_eq!(p.read("out/t.txt"), "top\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
}

/// A step that wrote beyond its outputs fails, and its outputs stay out of the project.
#[test]
fn outputs_of_a_step_that_wrote_more_stay_out() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    outputs: [out/t.txt]\n    run: echo t > out/t.txt; echo s > stray.txt\n",
    );
    p.gvbuild(&[]).failure().stderr_has("wrote stray.txt");
    assert!(!p.exists("out/t.txt"));
}

/// Regression: the view's root, received from one step, leaked into the steps started while
/// it ran (the descriptor was not close-on-exec), which could see and write that view.
#[test]
fn no_step_inherits_another_steps_view() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          a:
            outputs: [out/a.txt]
            run: sleep 1; echo a > out/a.txt
          b:
            outputs: [out/fds.txt]
            run: sleep 0.3; for f in /proc/$$$$/fd/*; do readlink "$$f" || true; done > "$$TMPDIR/fds"; cp "$$TMPDIR/fds" out/fds.txt
        "#),
    );
    p.build(&["-j2"]);
    let root = fs::canonicalize(p.root()).unwrap();
    let fds = p.read("out/fds.txt");
    assert!(!fds.lines().any(|l| Path::new(l) == root), "{fds}");
}

/// The lazy view (FUSE under an overlay, `GVBUILD_SANDBOX_VIEW=lazy`) and the bound one
/// (`bind`, what a machine without FUSE gets, and by default a step that sees a handful of
/// paths) show a step the same files, folders and symlinks, and catch the same writes. As root
/// where `/dev/fuse` exists (CI), `lazy` must give the lazy view.
#[test]
fn the_lazy_and_the_bound_view_show_the_same_and_catch_the_same() {
    let yaml = y(r#"
        targets:
          gen:
            inputs: [src/a.txt]
            outputs: [out/a.txt, out/tree/]
            run: cp src/a.txt out/a.txt; mkdir -p out/tree/deep; echo x > out/tree/deep/x; ln -s deep/x out/tree/link
          other:
            outputs: [out/other.txt]
            run: echo other > out/other.txt
          look:
            deps: [gen]
            inputs: [src/c/]
            outputs: [out/seen.txt]
            run: |
              find . \( -type f -o -type l \) -printf '%y %p\n' | LC_ALL=C sort > "$TMPDIR/seen"
              readlink out/tree/link >> "$TMPDIR/seen"
              cat out/tree/link >> "$TMPDIR/seen"
              cat /proc/self/mountinfo > "$TMPDIR/mounts"
              grep -c ' - fuse ' "$TMPDIR/mounts" >> "$TMPDIR/seen" || true
              cp "$TMPDIR/seen" out/seen.txt
          poke:
            deps: [gen]
            inputs: [src/c/one.txt]
            outputs: [out/poke.txt]
            run: echo p > out/poke.txt; echo y > out/tree/deep/x; rm src/c/one.txt
        "#);
    let expected =
        "f ./out/a.txt\nf ./out/tree/deep/x\nf ./src/c/deep/two.txt\nf ./src/c/one.txt\nl ./out/tree/link\n\
                    deep/x\nx\n";
    let lazy_here = rustix::process::geteuid().is_root() && Path::new("/dev/fuse").exists();
    for view in ["lazy", "bind"] {
        let p = Project::new()
            .file("gevulot.yaml", &yaml)
            .file("src/a.txt", "a\n")
            .file("src/c/one.txt", "1\n")
            .file("src/c/deep/two.txt", "2\n")
            .file("src/hidden.txt", "h\n");
        let mut cmd = p.command(&["other", "look"]);
        cmd.env("GVBUILD_SANDBOX_VIEW", view);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{view}: {}", String::from_utf8_lossy(&out.stderr));
        let seen = p.read("out/seen.txt");
        let (listing, fuse) = seen.rsplit_once("x\n").unwrap_or_else(|| panic!("{view}: {seen}"));
        assert_eq!(format!("{listing}x\n"), expected, "{view}");
        match view {
            "bind" => assert_eq!(fuse, "0\n", "GVBUILD_SANDBOX_VIEW=bind binds"),
            _ if lazy_here => assert_eq!(fuse, "1\n", "as root with /dev/fuse, the view can be lazy"),
            _ => {}
        }
        let mut cmd = p.command(&["poke"]);
        cmd.env("GVBUILD_SANDBOX_VIEW", view);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{view}: {err}");
        assert!(err.contains("out/tree"), "{view}: a write into a dependency's output is caught: {err}");
        assert!(
            p.exists("src/c/one.txt") && p.read("out/tree/deep/x") == "x\n",
            "{view}: the project is untouched"
        );
        assert!(!p.exists("out/poke.txt"), "{view}");
    }
}

/// Where FUSE cannot be had (here `/dev/fuse` is `/dev/null` in gvbuild's mount namespace, as in
/// a container without it), the probe finds out, and a step that sees many paths (a lazy view
/// where FUSE works) is bound instead and builds; a step that reads what it did not declare
/// still fails.
#[test]
fn without_fuse_a_step_that_sees_many_paths_is_bound_and_builds() {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root (to hide /dev/fuse in a mount namespace)");
        return;
    }
    let outs: Vec<String> = (0..20).map(|i| format!("out/g{i}.txt")).collect();
    let yaml = y(&format!(
        r#"
        targets:
          gen:
            outputs: [{}]
            run: for i in $(seq 0 19); do echo $i > out/g$i.txt; done
          sum:
            deps: [gen]
            outputs: [out/sum.txt]
            run: cat out/g*.txt | wc -l > out/sum.txt; grep -c ' - fuse ' /proc/self/mountinfo >> out/sum.txt || true
          peek:
            deps: [gen]
            outputs: [out/peek.txt]
            run: cat secret.txt > out/peek.txt
        "#,
        outs.join(", ")
    ));
    let p = Project::new().file("gevulot.yaml", &yaml).file("secret.txt", "s\n");
    let hidden = |args: &[&str]| {
        let inner = p.command(args);
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind /dev/null /dev/fuse && exec \"$@\"",
            "sh",
        ])
        .arg(bin())
        .args(args)
        .current_dir(p.root())
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))));
        c.output().unwrap()
    };
    let out = hidden(&["sum"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.read("out/sum.txt"), "20\n0\n", "all 20 seen, through binds");
    let out = hidden(&["peek"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("secret.txt"), "{err}");
    // With FUSE, the same step gets the lazy view.
    p.write("out/sum.txt", "");
    let _ = fs::remove_file(p.path("out/sum.txt"));
    let mut c = p.command(&["-B", "sum"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.read("out/sum.txt"), "20\n1\n", "as root with FUSE, a step that sees 21 paths is lazy");
}

/// A value of GVBUILD_SANDBOX_VIEW that is neither `lazy` nor `bind` is said, not silently
/// taken as the default; the build goes on.
#[test]
fn an_unknown_sandbox_view_is_said_and_ignored() {
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  t:\n    outputs: [out/t.txt]\n    run: echo t > out/t.txt\n");
    let out = p.command(&["build"]).env("GVBUILD_SANDBOX_VIEW", "LAZY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("GVBUILD_SANDBOX_VIEW=LAZY is neither `lazy` nor `bind`; ignored"), "{err}");
    assert_eq!(p.read("out/t.txt"), "t\n");
}

/// A cache folder inside the project cannot be a step's input (its files change while the
/// build runs): the build says which input holds it, and builds once it does not.
#[test]
fn an_input_that_holds_the_cache_folder_is_refused() {
    let yaml = |input: &str| {
        format!("targets:\n  t:\n    inputs: [{input}]\n    outputs: [out/t.txt]\n    run: ls > out/t.txt\n")
    };
    let p = Project::new().file("gevulot.yaml", &yaml("mycache/")).file("src/a.txt", "a\n");
    for input in ["mycache/", "mycache/ac"] {
        p.write("gevulot.yaml", &yaml(input));
        let out =
            p.command(&["--cache-dir", "mycache", "build"]).env_remove("GVBUILD_CACHE_DIR").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {err}");
        assert!(err.contains("of target `t` holds or is in the cache folder `mycache`"), "{input}: {err}");
    }
    p.write("gevulot.yaml", &yaml("src/"));
    let out =
        p.command(&["--cache-dir", "mycache", "build"]).env_remove("GVBUILD_CACHE_DIR").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The folders above a step's outputs (which a lazy view makes in its upper layer before the
/// step starts, instead of copying each up at the step's first write) look to the step as they
/// are on disk: mode (setgid bit included), owner and modification time, as unsandboxed. (The
/// bound view makes them anew in its tmpfs: docs/sandbox.md says so.)
#[test]
fn the_folders_above_an_output_look_as_they_are_on_disk() {
    let yaml = y(r#"
        targets:
          look:
            outputs: [out/sub/seen.txt]
            run: stat -c '%a %u %g %Y' out out/sub > "$TMPDIR/seen"; cp "$TMPDIR/seen" out/sub/seen.txt
        "#);
    let mut seen = Vec::new();
    for view in ["lazy", "off"] {
        let p = Project::new().file("gevulot.yaml", &yaml).file("out/sub/old.txt", "old\n");
        mode_and_time(&p, "out", 0o2750, 1_500_000_000);
        mode_and_time(&p, "out/sub", 0o700, 1_500_000_001);
        build_in_view(&p, "look", view);
        let text = p.read("out/sub/seen.txt");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{view}: {text}");
        assert!(lines[0].starts_with("2750 ") && lines[0].ends_with(" 1500000000"), "{view}: {text}");
        // Its times as on disk too, although the output's mark is made in it (before its times).
        assert!(lines[1].starts_with("700 ") && lines[1].ends_with(" 1500000001"), "{view}: {text}");
        seen.push(text);
    }
    assert_eq!(seen[0], seen[1], "lazy view against unsandboxed");
}

/// Give project path `rel` of `p` permission bits `mode` and modification (and access) time
/// `mtime` (seconds since the epoch).
fn mode_and_time(p: &Project, rel: &str, mode: u32, mtime: i64) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    let at = rustix::fs::Timespec { tv_sec: mtime, tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: at, last_modification: at };
    rustix::fs::utimensat(rustix::fs::CWD, p.path(rel), &times, rustix::fs::AtFlags::empty()).unwrap();
}

/// Build `target` of `p` with every view `view` (`lazy`, `bind`), or unsandboxed (`off`); it
/// must succeed.
fn build_in_view(p: &Project, target: &str, view: &str) {
    let mut cmd = p.command(&[target]);
    cmd.env("GVBUILD_SANDBOX_VIEW", view);
    if view == "off" {
        cmd.arg("--no-sandbox");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{view}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A step sees the outputs of every step it depends on, directly or not, so its key covers them
/// all: when a step two links down changes its outputs and the one between reruns to the same
/// bytes, the step that reads both runs again, and the cache never hands back its old result.
#[test]
fn a_change_two_steps_down_reaches_a_step_that_sees_it() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        vars: {v: one}
        targets:
          a:
            outputs: [a.txt]
            run: echo ${v} > a.txt
          b:
            deps: [a]
            outputs: [b.txt]
            run: echo fixed > b.txt
          c:
            deps: [b]
            outputs: [c.txt]
            run: cat a.txt b.txt > c.txt
        "#),
    );
    p.gvbuild(&["c"]).success();
    assert_eq!(p.read("c.txt"), "one\nfixed\n");
    let run = p.gvbuild(&["--set", "v=two", "c"]).success();
    assert!(run.stdout().contains("ran       c"), "{}", run.stdout());
    assert_eq!(p.read("c.txt"), "two\nfixed\n");
    // From the cache, with no state: the result of the same inputs, never the older one.
    fs::remove_dir_all(p.path(".gvbuild")).unwrap();
    fs::remove_file(p.path("c.txt")).unwrap();
    p.gvbuild(&["--set", "v=two", "c"]).success();
    assert_eq!(p.read("c.txt"), "two\nfixed\n");
}

/// A lazy step reads its small input files and its direct dependencies' outputs from a copy
/// (its view's near layer) and the rest from the view: both look as they are on disk (mode,
/// size, modification time, content), a folder whose every file is copied lists what the view
/// lists, and an output folder does not list the marks that keep the overlay from asking the
/// view for the step's outputs (a copied folder's size is the tmpfs's: not compared). The copy
/// is really used: its files show another device than a file the view serves.
#[test]
fn a_lazy_steps_copied_files_look_as_they_are_on_disk() {
    let yaml = y(r#"
        targets:
          dep:
            outputs: [gen/d.txt]
            run: printf 'from dep\n' > gen/d.txt
          look:
            deps: [dep]
            inputs: [src/]
            outputs: [out/seen.txt, out/dev.txt]
            run: |
              stat -c '%n %a %Y' src src/more > "$TMPDIR/s"
              stat -c '%n %a %s %Y' src/tool.sh src/data.txt src/big.bin src/more/a.txt >> "$TMPDIR/s"
              stat -c '%n %s' gen/d.txt >> "$TMPDIR/s"
              ls -a src src/more out >> "$TMPDIR/s"
              src/tool.sh >> "$TMPDIR/s"
              cat gen/d.txt src/more/a.txt >> "$TMPDIR/s"
              cksum < src/big.bin >> "$TMPDIR/s"
              cp "$TMPDIR/s" out/seen.txt
              stat -c %d src/data.txt src/big.bin > out/dev.txt
        "#);
    let mut seen = Vec::new();
    for view in ["lazy", "off"] {
        let big: String = (0..40_000).map(|i| format!("{i:07}\n")).collect();
        let p = Project::new()
            .file("gevulot.yaml", &yaml)
            .file("src/tool.sh", "#!/bin/sh\necho tool ran\n")
            .file("src/data.txt", "data\n")
            .file("src/big.bin", &big)
            .file("src/more/a.txt", "more\n");
        for (f, mode, mtime) in [
            ("src/tool.sh", 0o751, 1_500_000_000),
            ("src/data.txt", 0o640, 1_500_000_001),
            ("src/more/a.txt", 0o604, 1_500_000_002),
            ("src/big.bin", 0o644, 1_500_000_005),
            ("src/more", 0o750, 1_500_000_003),
            ("src", 0o2755, 1_500_000_004),
        ] {
            mode_and_time(&p, f, mode, mtime);
        }
        build_in_view(&p, "look", view);
        let text = p.read("out/seen.txt");
        assert!(text.contains("src/tool.sh 751 24 1500000000\n"), "{view}: {text}");
        assert!(text.contains("tool ran\nfrom dep\nmore\n"), "{view}: {text}");
        if view == "lazy" {
            let devs: Vec<String> = p.read("out/dev.txt").lines().map(str::to_string).collect();
            assert_eq!(devs.len(), 2, "{devs:?}");
            assert_ne!(devs[0], devs[1], "a small input is read from the copy, a big one from the view");
        }
        seen.push(text);
    }
    assert_eq!(seen[0], seen[1], "lazy view against unsandboxed");
}

/// In a lazy view the overlay is told up front that a step's outputs are not in the view (a
/// whiteout in its upper layer): an output the step did not write is still reported as not
/// created, and nothing of the mark reaches the project.
#[test]
fn an_output_a_lazy_step_did_not_write_is_missing_not_a_mark() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          half:
            outputs: [out/a.txt, out/b.txt, top.txt]
            run: echo a > out/a.txt
        "#),
    );
    let out = p.command(&["half"]).env("GVBUILD_SANDBOX_VIEW", "lazy").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`out/b.txt` was not created"), "{err}");
    assert!(fs::symlink_metadata(p.path("out/b.txt")).is_err(), "{err}");
    assert!(fs::symlink_metadata(p.path("top.txt")).is_err(), "{err}");
}

/// A step whose command succeeds but leaves one of its declared outputs unwritten has failed:
/// none of the outputs it did write reaches the project, in either view.
#[test]
fn a_step_that_left_an_output_unwritten_keeps_none_of_them() {
    for view in ["lazy", "bind"] {
        let p = Project::new()
            .file(
                "gevulot.yaml",
                &y(r#"
                targets:
                  t:
                    outputs: [out.txt, od/]
                    run: echo NEW > out.txt
                "#),
            )
            .file("out.txt", "OLD\n");
        let out = p.command(&["t"]).env("GVBUILD_SANDBOX_VIEW", view).output().unwrap();
        assert!(!out.status.success(), "{view}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("`od` was not created"), "{view}: {err}");
        // (The old one was removed before the step, as for any step that runs.)
        assert!(fs::symlink_metadata(p.path("out.txt")).is_err(), "{view}: {err}");
    }
}

/// `GVBUILD_SANDBOX_VIEW=lazy` where the lazy view cannot be had says so once, naming why, and
/// the build goes on with bound views; without the variable nothing is said. Run as root, the
/// build runs as `nobody`, to whom `/dev/fuse` is closed on this project's machines (mode
/// 0600); where it is open, or `setpriv` is missing, there is nothing to check.
#[test]
fn an_asked_lazy_view_that_cannot_be_had_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let fuse_closed = fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0);
    if !rustix::process::geteuid().is_root() || !fuse_closed || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root, setpriv, and /dev/fuse closed to other users");
        return;
    }
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              t:
                inputs: [in.txt]
                outputs: [out.txt]
                run: cat in.txt > out.txt
            "#),
        )
        .file("in.txt", "one\n");
    for dir in [p.root(), p.cache.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(p.path("in.txt"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(p.path("gevulot.yaml"), fs::Permissions::from_mode(0o666)).unwrap();
    let warning = "GVBUILD_SANDBOX_VIEW=lazy asks for the lazy view, which this machine cannot give";
    for (asked, content) in [(false, "one\n"), (true, "two\n")] {
        fs::write(p.path("in.txt"), content).unwrap();
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "t"])
            .current_dir(p.root())
            .env("GVBUILD_CACHE_DIR", p.cache.path())
            .env("HOME", p.cache.path())
            .env("NO_COLOR", "1");
        if asked {
            c.env("GVBUILD_SANDBOX_VIEW", "lazy");
        } else {
            c.env_remove("GVBUILD_SANDBOX_VIEW");
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "asked {asked}: {err}");
        assert_eq!(p.read("out.txt"), content, "asked {asked}: {err}");
        assert_eq!(err.matches(warning).count(), usize::from(asked), "asked {asked}: {err}");
        assert!(!err.contains("the sandbox is not available"), "{err}");
    }
}

/// `--trace-undeclared` runs every `run:` step unsandboxed under strace and lists, for each,
/// the project paths it read or wrote undeclared, with the key that would declare them; a
/// step that did is not cached (the sandbox would have refused it), and the build exits 1.
/// What it calls undeclared is what the sandbox hides: the same step fails there.
#[test]
fn trace_undeclared_lists_what_each_step_touched_undeclared_and_caches_none_of_those() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [declared.txt]
                outputs: [out/a.txt]
                run: cat declared.txt secret.txt > out/a.txt
              b:
                deps: [a]
                outputs: [out/b.txt]
                run: cat out/a.txt other.txt > out/b.txt && echo x > stray.txt
              c:
                deps: [a]
                inputs: [src/x.c]
                outputs: [out/c.txt]
                depfile: out/c.d
                run: "cat src/x.c src/x.h out/a.txt > out/c.txt && printf 'out/c.txt: src/x.h\\n' > out/c.d"
              app:
                inputs: [main.c]
                outputs: [build/app]
                run: cc -MD -MF build/app.d -o build/app main.c
                depfile: build/app.d
                env: { CPATH: hidden }
              d:
                inputs: [declared.txt]
                outputs: [out/d.txt]
                run: cat declared.txt > out/d.txt
              lib:
                inputs: [f.c]
                outputs: [out/libf.a, out/v.txt]
                run: "cc -c f.c -o $TMPDIR/f.o && ar rcs out/libf.a $TMPDIR/f.o && echo 1 > v.tmp && mv v.tmp out/v.txt"
              ver:
                inputs: [src/x.c]
                outputs: [out/ver.txt, out/ver.d]
                depfile: out/ver.d
                run: "cat src/x.c src/version.txt > out/ver.txt && printf 'out/ver.txt: src/x.c\\n' > out/ver.d"
              rw:
                inputs: [data.db]
                outputs: [out/rw.txt]
                run: "python3 -c \"open('data.db', 'r+').read()\" && echo ok > out/rw.txt"
              gen:
                outputs: [gen.txt]
                run: echo g > gen.txt
              late:
                outputs: [out/late.txt]
                run: cat gen.txt > out/late.txt
            "#),
        )
        .file("f.c", "int f(void) { return 1; }\n")
        .file("src/version.txt", "v1\n")
        .file("data.db", "db\n")
        .file("declared.txt", "d\n")
        .file("secret.txt", "s\n")
        .file("other.txt", "o\n")
        .file("src/x.c", "c\n")
        .file("src/x.h", "h\n")
        .file("main.c", "#include \"x.h\"\nint main(void) { return X; }\n")
        .file("hidden/x.h", "#define X 0\n");
    let run = p.gvbuild(&["--trace-undeclared", "a", "b", "c", "app", "d", "lib", "ver", "rw"]).failure();
    let err = run.stderr();
    assert!(err.contains("`a` touched what it did not declare"), "{err}");
    assert!(
        err.contains("read  secret.txt (undeclared: the sandbox hides it; add it to `inputs:`)"),
        "{err}"
    );
    // `b` ran although `a` read undeclared: every step is traced.
    assert!(err.contains("read  other.txt (undeclared"), "{err}");
    assert!(err.contains("wrote stray.txt (none of its outputs"), "{err}");
    // A header found through CPATH, which no include folder of the command names.
    assert!(err.contains("read  hidden/x.h (undeclared"), "{err}");
    // Its inputs, its dependency's output and a header in its input's folder are declared;
    // the compiler's own files, its TMPDIR, a file made and renamed over an output are not
    // the project's.
    // A file beside a depfile step's input, which the sandbox shows it, that its depfile does
    // not list: the key does not cover it.
    assert!(err.contains("read  src/version.txt (a file its depfile step may discover, which the sandbox shows, but its depfile does not list it"), "{err}");
    // Opened for reading and writing, only read: no change.
    for clean in ["`c`", "`d`", "`lib`", "`rw`"] {
        assert!(!err.contains(&format!("{clean} touched")), "{err}");
    }
    assert!(err.contains("4 steps touched paths they did not declare"), "{err}");
    // Its outputs are what an unsandboxed build gives, kept.
    assert_eq!(p.read("out/b.txt"), "d\ns\no\n");
    // Only the steps that kept to their set were recorded and cached: built again, the others
    // run, and fail, since the sandbox hides what the trace named.
    let (again, build) = p.build_any(&["-k", "a", "b", "c", "app", "d", "lib"]);
    let err = again.failure().stderr();
    assert_eq!(build.fresh(), names(&["d", "lib"]), "{err}");
    assert_eq!(build.with("failed"), names(&["a", "app"]), "{err}");
    assert!(err.contains("read  secret.txt (hidden by the sandbox"), "{err}");
    assert!(err.contains("x.h: No such file or directory"), "{err}");
    // Traced again, a step runs, fresh or not.
    assert_eq!(p.build(&["--trace-undeclared", "d"]).ran(), names(&["d"]));
    // A file another target writes, read before it was there: a missing dependency.
    let run = p.gvbuild(&["--trace-undeclared", "late"]).failure();
    let err = run.stderr();
    assert!(
        err.contains(
            "read  gen.txt (undeclared: the sandbox hides it; written by target `gen`: add `gen` to `deps:`)"
        ),
        "{err}"
    );
}

/// A step that removes a file it reads is told it removed it, in either view (bound: the
/// removal is refused; lazy: the overlay records it), and under `--trace-undeclared`; the input
/// stays.
#[test]
fn a_step_that_removes_an_input_is_said_to_remove_it() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              r:
                inputs: [in.txt]
                outputs: [o.txt]
                run: cat in.txt > o.txt && rm -f in.txt
            "#),
        )
        .file("in.txt", "a\n");
    for view in ["bind", "lazy"] {
        let mut cmd = p.command(&["r"]);
        cmd.env("GVBUILD_SANDBOX_VIEW", view);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{view}: {err}");
        assert!(
            err.contains("removed in.txt (something it reads, which is read-only for it"),
            "{view}: {err}"
        );
        assert_eq!(p.read("in.txt"), "a\n", "{view}");
    }
    let err = p.gvbuild(&["--trace-undeclared", "r"]).failure().stderr();
    assert!(err.contains("removed in.txt (something it reads"), "{err}");
}
