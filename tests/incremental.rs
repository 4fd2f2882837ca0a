//! Incremental builds: what reruns after which change, and what the CLI says about it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn touch(p: &Project, rel: &str) {
    let st = Command::new("touch").arg(p.path(rel)).status().unwrap();
    assert!(st.success(), "touch {rel} failed");
}

fn chmod(p: &Project, rel: &str, mode: u32) {
    fs::set_permissions(p.path(rel), fs::Permissions::from_mode(mode)).unwrap();
}

/// `gvbuild --json ARGS` with extra environment (None: removed); must succeed.
fn build_env(p: &Project, env: &[(&str, Option<&str>)], args: &[&str]) -> Build {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut c = p.command(&all);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let run =
        Run { output: c.output().unwrap(), args: all.iter().map(|s| s.to_string()).collect() }.success();
    Build::parse(&run)
}

/// A diamond a -> {b, c} -> d, plus an unrelated branch x -> y.
fn diamond() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [a.txt]
                outputs: [out/a]
                run: cat a.txt > out/a
              b:
                deps: [a]
                outputs: [out/b]
                run: cksum < out/a > out/b
              c:
                deps: [a]
                outputs: [out/c]
                run: wc -c < out/a > out/c
              d:
                deps: [b, c]
                outputs: [out/d]
                run: cat out/b out/c > out/d
              x:
                inputs: [x.txt]
                outputs: [out/x]
                run: cat x.txt > out/x
              y:
                deps: [x]
                outputs: [out/y]
                run: cksum < out/x > out/y
            "#),
        )
        .file("a.txt", "one\n")
        .file("x.txt", "ex\n")
}

const ALL: &[&str] = &["a", "b", "c", "d", "x", "y"];

#[test]
fn changing_one_input_reruns_exactly_its_downstream_cone() {
    let p = diamond();
    assert_eq!(p.build(&[]).ran(), names(ALL));
    let first_d = p.read("out/d");

    p.write("a.txt", "three\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["a", "b", "c", "d"]));
    assert_eq!(b.fresh(), names(&["x", "y"]));
    assert_eq!(b.summary["ran"], 4);
    assert_eq!(b.summary["fresh"], 2);
    assert_ne!(p.read("out/d"), first_d);
    assert_eq!(p.read("out/a"), "three\n");
    assert!(p.read("out/c").trim() == "6", "wc -c of the new a: {:?}", p.read("out/c"));

    p.write("x.txt", "why\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["x", "y"]));
    assert_eq!(b.fresh(), names(&["a", "b", "c", "d"]));

    assert_eq!(p.build(&[]).fresh(), names(ALL));
}

#[test]
fn touch_without_content_change_reruns_nothing() {
    let p = diamond();
    assert_eq!(p.build(&[]).ran(), names(ALL));

    // At once: the stat cache does not trust racily clean entries, so this rehashes.
    touch(&p, "a.txt");
    touch(&p, "out/b");
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(ALL), "{b:?}");

    // Past the racy window, the stat cache entries are trusted; a touch still changes nothing.
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(p.build(&[]).fresh(), names(ALL));
    std::thread::sleep(Duration::from_millis(120));
    touch(&p, "a.txt");
    touch(&p, "x.txt");
    touch(&p, "out/d");
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(ALL), "{b:?}");
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(p.build(&[]).fresh(), names(ALL));
}

#[test]
fn a_content_change_of_the_same_size_is_seen_past_the_racy_window() {
    let p = diamond();
    p.build(&[]);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(p.build(&[]).fresh(), names(ALL));
    // Same size, new bytes: the stat cache must not hide it.
    p.write("a.txt", "two\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["a", "b", "c", "d"]), "{b:?}");
    assert_eq!(b.fresh(), names(&["x", "y"]));
    assert_eq!(p.read("out/a"), "two\n");
}

#[test]
fn an_output_edited_by_hand_is_restored_and_its_dependents_stay_fresh() {
    let p = diamond();
    p.build(&[]);
    p.write("out/a", "scribbled\n");
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["a"]), "{b:?}");
    assert_eq!(b.fresh(), names(&["b", "c", "d", "x", "y"]));
    assert_eq!(p.read("out/a"), "one\n");
    fs::remove_file(p.path("out/d")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["d"]));
    assert_eq!(p.build(&[]).fresh(), names(ALL));
}

#[test]
fn a_command_change_reruns_the_step_and_dependents_only_if_its_output_changed() {
    let p = diamond();
    p.build(&[]);
    let yaml = p.read("gevulot.yaml");

    // Same output bytes: only `a` reruns; early cutoff keeps b, c, d fresh.
    p.write("gevulot.yaml", &yaml.replace("run: cat a.txt > out/a", "run: cat a.txt > out/a && true"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["a"]));
    assert_eq!(b.fresh(), names(&["b", "c", "d", "x", "y"]));

    // New output bytes: the cone reruns.
    p.write("gevulot.yaml", &yaml.replace("run: cat a.txt > out/a", "run: cat a.txt a.txt > out/a"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["a", "b", "c", "d"]));
    assert_eq!(p.read("out/a"), "one\none\n");
}

#[test]
fn an_env_value_change_reruns_the_step() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          greet:
            outputs: [out/greet]
            env: { GREETING: hello }
            run: echo "$GREETING" > out/greet
          other:
            outputs: [out/other]
            run: echo other > out/other
        "#),
    );
    assert_eq!(p.build(&[]).ran(), names(&["greet", "other"]));
    assert_eq!(p.read("out/greet"), "hello\n");
    assert_eq!(p.build(&[]).fresh(), names(&["greet", "other"]));

    let yaml = p.read("gevulot.yaml");
    p.write("gevulot.yaml", &yaml.replace("GREETING: hello", "GREETING: bye"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["greet"]));
    assert_eq!(b.fresh(), names(&["other"]));
    assert_eq!(p.read("out/greet"), "bye\n");

    // Back to the old value: the cache has it.
    p.write("gevulot.yaml", &yaml);
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["greet"]));
    assert_eq!(p.read("out/greet"), "hello\n");
}

#[test]
fn a_pass_env_value_change_reruns_the_step_and_other_vars_do_not_leak() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          show:
            outputs: [out/show]
            pass_env: [GVTEST_PASSED]
            run: echo "$${GVTEST_PASSED:-unset} $${GVTEST_NOT_PASSED:-unset}" > out/show
        "#),
    );
    let b = build_env(&p, &[("GVTEST_PASSED", Some("1")), ("GVTEST_NOT_PASSED", Some("x"))], &[]);
    assert_eq!(b.ran(), names(&["show"]));
    assert_eq!(p.read("out/show"), "1 unset\n", "only pass_env vars reach the step");

    // A var that is not passed is not keyed either.
    let b = build_env(&p, &[("GVTEST_PASSED", Some("1")), ("GVTEST_NOT_PASSED", Some("y"))], &[]);
    assert_eq!(b.fresh(), names(&["show"]));

    let b = build_env(&p, &[("GVTEST_PASSED", Some("2")), ("GVTEST_NOT_PASSED", None)], &[]);
    assert_eq!(b.ran(), names(&["show"]));
    assert_eq!(p.read("out/show"), "2 unset\n");

    // Unset is a value of its own.
    let b = build_env(&p, &[("GVTEST_PASSED", None)], &[]);
    assert_eq!(b.ran(), names(&["show"]));
    assert_eq!(p.read("out/show"), "unset unset\n");
    let b = build_env(&p, &[("GVTEST_PASSED", None)], &[]);
    assert_eq!(b.fresh(), names(&["show"]));
}

#[test]
fn the_fixed_pass_through_vars_reach_steps_but_are_not_keyed() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          show:
            outputs: [out/show]
            run: echo "$${LANG:-none} $${LC_ALL:-none}" > out/show
        "#),
    );
    let b = build_env(&p, &[("LANG", Some("C")), ("LC_ALL", Some("C"))], &[]);
    assert_eq!(b.ran(), names(&["show"]));
    assert_eq!(p.read("out/show"), "C none\n", "LANG passes through; LC_ALL does not");
    let b = build_env(&p, &[("LANG", Some("C.UTF-8")), ("LC_ALL", Some("POSIX"))], &[]);
    assert_eq!(b.fresh(), names(&["show"]), "neither is keyed");
}

#[test]
fn a_var_change_through_set_reruns_the_step() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        vars:
          word: hello
        targets:
          say:
            outputs: [out/say]
            run: echo ${word} > out/say
          other:
            outputs: [out/other]
            run: echo other > out/other
        "#),
    );
    assert_eq!(p.build(&[]).ran(), names(&["say", "other"]));
    assert_eq!(p.read("out/say"), "hello\n");

    let b = p.build(&["--set", "word=bye"]);
    assert_eq!(b.ran(), names(&["say"]));
    assert_eq!(b.fresh(), names(&["other"]));
    assert_eq!(p.read("out/say"), "bye\n");
    assert_eq!(p.build(&["--set", "word=bye"]).fresh(), names(&["say", "other"]));

    // Without --set again: the file's value, which the cache still holds.
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["say"]));
    assert_eq!(p.read("out/say"), "hello\n");
}

#[test]
fn a_tool_is_keyed_by_its_content_and_version_output_not_by_path() {
    let tools = tempfile::Builder::new().prefix("gvtools").tempdir().unwrap();
    let write_tool = |dir: &std::path::Path, body: &str, version: &str| {
        fs::create_dir_all(dir).unwrap();
        let exe = dir.join("mytool");
        fs::write(&exe, format!("#!/bin/sh\n# {body}\nif [ \"$1\" = --version ]; then cat \"$(dirname \"$0\")/version.txt\"; exit 0; fi\necho \"tool $*\"\n")).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("version.txt"), version).unwrap();
    };
    let one = tools.path().join("one");
    let two = tools.path().join("two");
    write_tool(&one, "a", "mytool 1.0\n");
    let path_with =
        |dir: &std::path::Path| format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          use:
            outputs: [out/use]
            tools: [mytool]
            run: mytool hello > out/use
        "#),
    );
    let build = |dir: &std::path::Path, args: &[&str]| {
        let path = path_with(dir);
        build_env(&p, &[("PATH", Some(path.as_str()))], args)
    };
    assert_eq!(build(&one, &[]).ran(), names(&["use"]));
    assert_eq!(p.read("out/use"), "tool hello\n");
    assert_eq!(build(&one, &[]).fresh(), names(&["use"]));

    // The same tool found elsewhere on PATH: same identity, nothing reruns.
    write_tool(&two, "a", "mytool 1.0\n");
    assert_eq!(build(&two, &[]).fresh(), names(&["use"]), "PATH is not keyed");

    // Same binary, new --version output (a rustup-style proxy switching toolchains).
    fs::write(one.join("version.txt"), "mytool 2.0\n").unwrap();
    let b = build(&one, &["--explain"]);
    assert_eq!(b.ran(), names(&["use"]));
    let reasons = b.events[0]["reasons"].to_string();
    assert!(reasons.contains("tool mytool changed (--version output)"), "{reasons}");

    // New binary content.
    write_tool(&one, "b", "mytool 2.0\n");
    let b = build(&one, &["--explain"]);
    assert_eq!(b.ran(), names(&["use"]));
    let reasons = b.events[0]["reasons"].to_string();
    assert!(reasons.contains("tool mytool changed (binary)"), "{reasons}");
    assert_eq!(build(&one, &[]).fresh(), names(&["use"]));
}

#[test]
fn an_identical_output_rerun_stops_at_the_early_cutoff() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              first:
                inputs: [a.txt]
                outputs: [out/first]
                run: head -n 1 a.txt > out/first
              use:
                deps: [first]
                outputs: [out/use]
                run: cksum < out/first > out/use
              last:
                deps: [use]
                outputs: [out/last]
                run: cat out/use > out/last
            "#),
        )
        .file("a.txt", "keep\nchange me\n");
    assert_eq!(p.build(&[]).ran(), names(&["first", "use", "last"]));
    let k_use = p.build(&[]).key("use");

    p.write("a.txt", "keep\nchanged\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["first"]));
    assert_eq!(b.fresh(), names(&["last", "use"]));
    assert_eq!(b.key("use"), k_use, "a dependent's key follows its dependency's outputs, not its key");

    p.write("a.txt", "new first line\nchanged\n");
    assert_eq!(p.build(&[]).ran(), names(&["first", "use", "last"]));
}

fn c_project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              prog:
                inputs: [src/main.c]
                outputs: [build/main]
                depfile: build/main.d
                run: cc -Iinc -MD -MF build/main.d -o build/main src/main.c
            "#),
        )
        .file("src/main.c", "#include <stdio.h>\n#include \"config.h\"\nint main(void) { printf(\"%d\\n\", VALUE); return 0; }\n")
        .file("inc/config.h", "#define VALUE 1\n")
}

fn run_prog(p: &Project) -> String {
    let out = Command::new(p.path("build/main")).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_depfile_discovered_header_change_reruns_its_step_also_in_a_fresh_clone() {
    let p = c_project();
    assert_eq!(p.build(&[]).ran(), names(&["prog"]));
    assert_eq!(run_prog(&p), "1\n");
    assert!(p.exists("build/main.d"));
    assert_eq!(p.build(&[]).fresh(), names(&["prog"]));

    p.write("inc/config.h", "#define VALUE 2\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["prog"]), "the discovered header changed");
    assert_eq!(run_prog(&p), "2\n");
    assert_eq!(p.build(&[]).fresh(), names(&["prog"]));
    touch(&p, "inc/config.h");
    assert_eq!(p.build(&[]).fresh(), names(&["prog"]), "a touched header changes nothing");
    p.write("inc/config.h", "#define VALUE 5\n");
    p.gvbuild(&["--explain"]).success().stdout_has("discovered input inc/config.h changed");
    p.write("inc/config.h", "#define VALUE 2\n");
    assert_eq!(p.build(&[]).restored(), names(&["prog"]));
    assert_eq!(run_prog(&p), "2\n");

    // A fresh checkout (no build folder) with the header unchanged: restored, nothing runs.
    let c1 = p.clone_to_new_folder();
    fs::remove_dir_all(c1.path("build")).unwrap();
    let b = c1.build(&[]);
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(b.restored(), names(&["prog"]));
    assert_eq!(run_prog(&c1), "2\n");
    assert_eq!(c1.build(&[]).fresh(), names(&["prog"]));

    // A clone whose header differs from every cached entry: it must run, even though the
    // stale outputs copied along match a cache entry.
    let c2 = p.clone_to_new_folder();
    c2.write("inc/config.h", "#define VALUE 3\n");
    let b = c2.build(&[]);
    assert_eq!(b.ran(), names(&["prog"]), "not restored from the stale entry: {b:?}");
    assert_eq!(run_prog(&c2), "3\n");

    // A clone with the first header again: that entry is still in the cache.
    let c3 = p.clone_to_new_folder();
    fs::remove_dir_all(c3.path("build")).unwrap();
    c3.write("inc/config.h", "#define VALUE 1\n");
    let b = c3.build(&[]);
    assert_eq!(b.restored(), names(&["prog"]));
    assert_eq!(run_prog(&c3), "1\n");

    // And in a fresh clone, changing the header after a restore reruns the step there.
    c1.write("inc/config.h", "#define VALUE 4\n");
    let b = c1.build(&[]);
    assert_eq!(b.ran(), names(&["prog"]));
    assert_eq!(run_prog(&c1), "4\n");
}

#[test]
fn a_clone_in_another_folder_with_the_same_cache_runs_nothing() {
    let p = diamond();
    assert_eq!(p.build(&[]).ran(), names(ALL));
    let keys: Vec<Option<String>> = {
        let b = p.build(&[]);
        ALL.iter().map(|t| b.key(t)).collect()
    };

    // As a fresh checkout: no outputs.
    let c = p.clone_to_new_folder();
    fs::remove_dir_all(c.path("out")).unwrap();
    let b = c.build(&[]);
    assert_eq!(b.ran(), Vec::<String>::new(), "{b:?}");
    assert_eq!(b.restored(), names(ALL));
    assert_eq!(ALL.iter().map(|t| b.key(t)).collect::<Vec<_>>(), keys, "keys do not depend on the location");
    for t in ALL {
        let rel = format!("out/{t}");
        assert_eq!(fs::read(c.path(&rel)).unwrap(), fs::read(p.path(&rel)).unwrap(), "{rel} differs");
    }
    assert_eq!(c.build(&[]).fresh(), names(ALL));

    // Nor on the cache location: the same project with another cache computes the same keys.
    let other = Project::new();
    copy_tree(p.root(), other.root());
    let b = other.build(&[]);
    assert_eq!(b.ran(), names(ALL), "a new, empty cache");
    assert_eq!(
        ALL.iter().map(|t| b.key(t)).collect::<Vec<_>>(),
        keys,
        "keys do not depend on the cache location"
    );

    // With the outputs copied along too.
    let c2 = p.clone_to_new_folder();
    let b = c2.build(&[]);
    assert_eq!(b.ran(), Vec::<String>::new(), "{b:?}");
    for t in ALL {
        let rel = format!("out/{t}");
        assert_eq!(fs::read(c2.path(&rel)).unwrap(), fs::read(p.path(&rel)).unwrap(), "{rel} differs");
    }
}

#[test]
fn a_clone_restores_folder_outputs_with_modes_links_and_empty_folders() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          tree:
            outputs: [out/tree]
            run: mkdir -p out/tree/sub out/tree/empty && echo 1 > out/tree/sub/f && printf 'echo x\n' > out/tree/run.sh && chmod +x out/tree/run.sh && ln -s sub/f out/tree/link
        "#),
    );
    assert_eq!(p.build(&[]).ran(), names(&["tree"]));
    let c = p.clone_to_new_folder();
    fs::remove_dir_all(c.path("out")).unwrap();
    assert_eq!(c.build(&[]).restored(), names(&["tree"]));
    assert_eq!(c.read("out/tree/sub/f"), "1\n");
    assert_ne!(
        fs::metadata(c.path("out/tree/run.sh")).unwrap().permissions().mode() & 0o111,
        0,
        "exec bit kept"
    );
    assert_eq!(fs::metadata(c.path("out/tree/sub/f")).unwrap().permissions().mode() & 0o111, 0);
    assert_eq!(fs::read_link(c.path("out/tree/link")).unwrap(), std::path::PathBuf::from("sub/f"));
    assert!(c.path("out/tree/empty").is_dir(), "empty folders kept");
    assert_eq!(c.build(&[]).fresh(), names(&["tree"]));
}

#[test]
fn a_new_or_deleted_file_matching_a_glob_reruns_its_step() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              cat:
                inputs: ["src/**/*.txt"]
                outputs: [out/all]
                run: find src -name '*.txt' | LC_ALL=C sort | xargs cat > out/all
            "#),
        )
        .file("src/a.txt", "a\n")
        .file("src/sub/b.txt", "b\n");
    assert_eq!(p.build(&[]).ran(), names(&["cat"]));
    assert_eq!(p.read("out/all"), "a\nb\n");

    p.write("src/sub/deep/c.txt", "c\n");
    assert_eq!(p.build(&[]).ran(), names(&["cat"]), "a new file matching the glob");
    assert_eq!(p.read("out/all"), "a\nb\nc\n");

    p.write("src/notes.md", "not matched\n");
    assert_eq!(p.build(&[]).fresh(), names(&["cat"]), "a file the glob does not match");

    fs::remove_file(p.path("src/a.txt")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["cat"]), "a deleted file matching the glob");
    assert_eq!(p.read("out/all"), "b\nc\n");
    assert_eq!(p.build(&[]).fresh(), names(&["cat"]));
}

#[test]
fn folder_inputs_stand_for_every_file_below_them() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              pack:
                inputs: [data/]
                outputs: [out/pack]
                run: find data -type f | LC_ALL=C sort | xargs cat > out/pack
            "#),
        )
        .file("data/one", "1\n")
        .file("data/sub/two", "2\n");
    assert_eq!(p.build(&[]).ran(), names(&["pack"]));
    assert_eq!(p.read("out/pack"), "1\n2\n");

    p.write("data/sub/two", "22\n");
    assert_eq!(p.build(&[]).ran(), names(&["pack"]), "a file below changed");
    assert_eq!(p.read("out/pack"), "1\n22\n");

    touch(&p, "data/one");
    assert_eq!(p.build(&[]).fresh(), names(&["pack"]), "touched only");

    p.write("data/sub/deeper/three", "3\n");
    assert_eq!(p.build(&[]).ran(), names(&["pack"]), "a new file below");
    assert_eq!(p.read("out/pack"), "1\n3\n22\n");

    fs::remove_file(p.path("data/one")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["pack"]), "a file below removed");
    assert_eq!(p.read("out/pack"), "3\n22\n");
}

#[test]
fn an_input_whose_exec_bit_changes_reruns_its_step() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              mode:
                inputs: [tool.sh]
                outputs: [out/mode]
                run: if [ -x tool.sh ]; then echo exec; else echo plain; fi > out/mode
            "#),
        )
        .file("tool.sh", "echo hi\n");
    chmod(&p, "tool.sh", 0o644);
    assert_eq!(p.build(&[]).ran(), names(&["mode"]));
    assert_eq!(p.read("out/mode"), "plain\n");
    assert_eq!(p.build(&[]).fresh(), names(&["mode"]));

    chmod(&p, "tool.sh", 0o755);
    assert_eq!(p.build(&[]).ran(), names(&["mode"]), "chmod +x is an input change");
    assert_eq!(p.read("out/mode"), "exec\n");

    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(p.build(&[]).fresh(), names(&["mode"]));
    // A chmod past the racy window (only the ctime changes) is still seen.
    chmod(&p, "tool.sh", 0o644);
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["mode"]), "back to the cached non-executable variant: {b:?}");
    assert_eq!(p.read("out/mode"), "plain\n");
}

#[test]
fn explain_names_the_changed_input_env_var_and_dependency() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              gen:
                inputs: [a.txt]
                outputs: [out/gen]
                run: cat a.txt > out/gen
              use:
                deps: [gen]
                outputs: [out/use]
                env: { X: one }
                pass_env: [GVTEST_EXPLAIN]
                run: cat out/gen > out/use && echo "$X" >> out/use
            "#),
        )
        .file("a.txt", "a\n");
    p.gvbuild(&["--explain"]).success().stdout_has("no previous build");

    p.write("a.txt", "b\n");
    let r = p.gvbuild(&["--explain"]).success();
    let out = r.stdout();
    assert!(out.contains("input a.txt changed"), "{out}");
    assert!(out.contains("dependency gen produced new outputs"), "{out}");

    let yaml = p.read("gevulot.yaml");
    p.write("gevulot.yaml", &yaml.replace("X: one", "X: two"));
    let r = p.gvbuild(&["--explain"]).success();
    let out = r.stdout();
    assert!(out.contains("env X changed"), "{out}");
    assert!(!out.contains("ran       gen"), "gen is fresh: {out}");

    let mut c = p.command(&["--explain"]);
    c.env("GVTEST_EXPLAIN", "on");
    let r = Run { output: c.output().unwrap(), args: vec!["--explain".into()] }.success();
    assert!(r.stdout().contains("pass_env GVTEST_EXPLAIN changed"), "{}", r.stdout());

    p.write(
        "gevulot.yaml",
        &yaml.replace("X: one", "X: two").replace("cat a.txt > out/gen", "cat a.txt > out/gen && true"),
    );
    p.gvbuild(&["--explain"]).success().stdout_has("the command changed");

    // --json --explain puts the reasons in the events.
    p.write("a.txt", "c\n");
    let b = p.build(&["--explain"]);
    let gen = b.events.iter().find(|e| e["target"] == "gen").unwrap();
    let reasons: Vec<&str> = gen["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.contains(&"input a.txt changed"), "{reasons:?}");
}

fn cache_entries(p: &Project) -> usize {
    walkdir::WalkDir::new(p.cache.path().join("ac"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

#[test]
fn dry_run_prints_what_would_run_and_touches_nothing() {
    let p = diamond();
    // On a project never built: nothing is created.
    let r = p.gvbuild(&["-n"]).success();
    assert!(r.stdout().contains("would run"), "{}", r.stdout());
    assert!(!p.exists("out"), "a dry run creates no outputs");
    assert_eq!(cache_entries(&p), 0);

    assert_eq!(p.build(&[]).ran(), names(ALL));
    let before: Vec<Vec<u8>> = ALL.iter().map(|t| fs::read(p.path(&format!("out/{t}"))).unwrap()).collect();
    let entries = cache_entries(&p);

    p.write("a.txt", "changed\n");
    let r = p.gvbuild(&["-n"]).success();
    let out = r.stdout();
    assert!(
        out.contains("would run") && out.contains(" a: ") && out.contains("input a.txt changed"),
        "{out}"
    );
    assert!(!out.contains(" x: "), "x would not run: {out}");
    // What reads a's outputs runs only if a's run changes them: a dry run cannot know.
    assert!(
        out.contains("dependency a would run first, and this step reads its outputs: it runs if they change"),
        "{out}"
    );
    assert!(!out.contains("produced new outputs"), "nothing has run yet: {out}");
    let b = p.build(&["--dry-run"]);
    assert!(b.events.iter().all(|e| e["dry_run"] == true), "{b:?}");
    assert!(b.ran().contains(&"a".to_string()));
    assert_eq!(b.fresh(), names(&["x", "y"]));

    let after: Vec<Vec<u8>> = ALL.iter().map(|t| fs::read(p.path(&format!("out/{t}"))).unwrap()).collect();
    assert_eq!(before, after, "a dry run changes no output");
    assert_eq!(cache_entries(&p), entries, "a dry run stores nothing");

    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["a", "b", "c", "d"]), "the real build still runs what the dry run listed");
    assert_eq!(p.read("out/a"), "changed\n");
}

#[test]
fn rebuild_forces_a_target_and_cache_false_runs_every_build() {
    let p = diamond();
    p.build(&[]);
    let b = p.build(&["--rebuild", "b"]);
    assert_eq!(b.ran(), names(&["b"]), "forced, not restored; its identical output keeps d fresh");
    assert_eq!(b.fresh(), names(&["a", "c", "d", "x", "y"]));
    let b = p.build(&["--rebuild", "a", "--rebuild", "x"]);
    assert_eq!(b.ran(), names(&["a", "x"]));
    p.gvbuild(&["--json", "--rebuild", "nope"]).exit(2);

    let q = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              stamp:
                inputs: [a.txt]
                outputs: [out/stamp]
                cache: false
                run: cat a.txt > out/stamp && echo run >> ctl/runs.log
                scratch: [ctl]
              use:
                deps: [stamp]
                outputs: [out/use]
                run: cksum < out/stamp > out/use
            "#),
        )
        .file("a.txt", "a\n");
    assert_eq!(q.build(&[]).ran(), names(&["stamp", "use"]));
    let b = q.build(&[]);
    assert_eq!(b.ran(), names(&["stamp"]));
    assert_eq!(b.fresh(), names(&["use"]));
    assert_eq!(q.build(&[]).ran(), names(&["stamp"]));
    assert_eq!(q.read("ctl/runs.log"), "run\nrun\nrun\n");
    // Nor is it restored in a clone.
    let c = q.clone_to_new_folder();
    fs::remove_dir_all(c.path("out")).unwrap();
    let b = c.build(&[]);
    assert_eq!(b.ran(), names(&["stamp"]));
    assert_eq!(b.restored(), names(&["use"]));
}

const FAILING: &str = r#"
targets:
  bad:
    outputs: [out/bad]
    run: echo "some diagnostic from bad" >&2; touch bad-started; exit 3
  after_bad:
    deps: [bad]
    outputs: [out/after_bad]
    run: echo x > out/after_bad
  slow:
    outputs: [out/slow]
    run: i=0; while [ ! -e bad-started ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; sleep 1; echo s > out/slow
  after_slow:
    deps: [slow]
    outputs: [out/after_slow]
    run: echo t > out/after_slow
"#;

#[test]
fn a_failing_step_with_keep_going_skips_only_its_dependents() {
    let p = Project::new().file("gevulot.yaml", FAILING.trim_start());
    let (r, b) = p.build_any(&["-j2", "-k"]);
    let r = r.exit(1);
    let err = r.stderr();
    assert!(err.contains("bad") && err.contains("exited with status 3"), "{err}");
    assert!(err.contains("echo \"some diagnostic from bad\" >&2"), "the failing command is shown: {err}");
    assert!(err.contains("some diagnostic from bad"), "its output is shown: {err}");
    assert_eq!(b.with("failed"), names(&["bad"]));
    assert_eq!(b.with("skipped"), names(&["after_bad"]));
    assert_eq!(b.ran(), names(&["slow", "after_slow"]));
    assert_eq!(b.summary["failed"], 1);
    assert_eq!(b.summary["skipped"], 1);
    assert!(p.exists("out/after_slow"));

    // Human mode prints the failure too.
    let r = p.gvbuild(&["-j2", "-k"]).exit(1);
    assert!(r.stderr().contains("some diagnostic from bad"), "{}", r.stderr());
    assert!(r.stdout().contains("FAILED") || r.stderr().contains("FAILED"), "{}\n{}", r.stdout(), r.stderr());
}

#[test]
fn a_failing_step_without_keep_going_starts_nothing_new() {
    let p = Project::new().file("gevulot.yaml", FAILING.trim_start());
    let (r, b) = p.build_any(&["-j2"]);
    r.exit(1);
    assert_eq!(b.with("failed"), names(&["bad"]));
    // `slow` was running when `bad` failed: it finishes. `after_slow` would be new: it never starts.
    assert_eq!(b.ran(), names(&["slow"]), "{b:?}");
    assert_eq!(b.with("skipped"), names(&["after_bad", "after_slow"]));
    assert!(!p.exists("out/after_slow"));
    assert_eq!(b.events.len(), 4, "one event per step target: {b:?}");
}

#[test]
fn a_declared_output_not_created_fails_naming_it() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          liar:
            outputs: [out/made, out/promised.txt]
            run: echo made > out/made
        "#),
    );
    let (r, b) = p.build_any(&[]);
    let r = r.exit(1);
    assert_eq!(b.with("failed"), names(&["liar"]));
    assert!(r.stderr().contains("out/promised.txt"), "{}", r.stderr());
    assert!(r.stderr().contains("not created"), "{}", r.stderr());
    // It failed, so it is not recorded: it runs (and fails) again.
    let (r, b) = p.build_any(&[]);
    r.exit(1);
    assert_eq!(b.with("failed"), names(&["liar"]));
}

#[test]
fn depending_on_a_group_depends_on_its_members_and_groups_emit_no_event() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [a.txt]
                outputs: [out/a]
                run: cat a.txt > out/a
              b:
                inputs: [b.txt]
                outputs: [out/b]
                run: cat b.txt > out/b
              both:
                description: a group
                deps: [a, b]
              c:
                deps: [both]
                outputs: [out/c]
                run: cat out/a out/b > out/c
              everything:
                deps: [both, c]
            "#),
        )
        .file("a.txt", "a\n")
        .file("b.txt", "b\n");
    let b = p.build(&["c"]);
    assert_eq!(b.ran(), names(&["a", "b", "c"]));
    assert_eq!(b.events.len(), 3, "no event for the group: {b:?}");
    assert_eq!(p.read("out/c"), "a\nb\n");

    p.write("b.txt", "B\n");
    let b = p.build(&["c"]);
    assert_eq!(b.ran(), names(&["b", "c"]), "c depends on b through the group");
    assert_eq!(p.read("out/c"), "a\nB\n");

    let b = p.build(&["both"]);
    assert_eq!(b.fresh(), names(&["a", "b"]));
    assert_eq!(b.events.len(), 2);
    let b = p.build(&["everything"]);
    assert_eq!(b.events.len(), 3);
    assert!(b.events.iter().all(|e| e["target"] != "both" && e["target"] != "everything"));
    assert_eq!(b.summary["fresh"], 3);
}

#[test]
fn target_flag_equals_the_positional_name_and_default_is_used_when_nothing_is_named() {
    let yaml = y(r#"
        targets:
          one:
            outputs: [out/one]
            run: echo 1 > out/one
          two:
            outputs: [out/two]
            run: echo 2 > out/two
          three:
            deps: [two]
            outputs: [out/three]
            run: cat out/two > out/three
        "#);
    let p = Project::new().file("gevulot.yaml", &yaml);
    let b = p.build(&["--target", "one"]);
    assert_eq!(b.ran(), names(&["one"]));
    assert_eq!(b.events.len(), 1);
    let b = p.build(&["one"]);
    assert_eq!(b.fresh(), names(&["one"]));
    assert_eq!(b.events.len(), 1);
    let b = p.build(&["--target", "three"]);
    assert_eq!(b.ran(), names(&["three", "two"]));
    let b = p.build(&["one", "--target", "three"]);
    assert_eq!(b.fresh(), names(&["one", "three", "two"]));
    let b = Build::parse(&p.gvbuild(&["build", "--json", "--target", "one", "three"]).success());
    assert_eq!(b.fresh(), names(&["one", "three", "two"]));
    p.gvbuild(&["--target", "nope"]).exit(2);

    // No default: every target.
    let q = Project::new().file("gevulot.yaml", &yaml);
    assert_eq!(q.build(&[]).ran(), names(&["one", "three", "two"]));

    // `default:` names what a bare `gvbuild` builds.
    let r = Project::new().file("gevulot.yaml", &format!("default: three\n{yaml}"));
    let b = r.build(&[]);
    assert_eq!(b.ran(), names(&["three", "two"]));
    assert!(!r.exists("out/one"));
    assert_eq!(r.build(&["--target", "one"]).ran(), names(&["one"]));
}

/// Bug: flags given before the `build` subcommand (`gvbuild -n build`, `gvbuild --json build`)
/// are accepted and silently dropped: `-n build` really builds.
#[test]
fn flags_before_the_build_subcommand_are_honoured() {
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  one:\n    outputs: [out/one]\n    run: echo 1 > out/one\n");
    p.gvbuild(&["-n", "build"]).success();
    assert!(!p.exists("out/one"), "`gvbuild -n build` must be a dry run, but it built");
    let b = Build::parse(&p.gvbuild(&["--json", "build", "one"]).success());
    assert_eq!(b.events.len(), 1, "`gvbuild --json build` must print JSON events");
}

// Regression (issue 20, field report 3): a `run:` step's input folder was keyed by its files
// only, so an empty folder added to it (which the command sees) left the step fresh.
#[test]
fn an_empty_folder_added_to_an_input_folder_reruns_the_step() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  list:\n    inputs: [in]\n    outputs: [out.txt]\n    run: find in | LC_ALL=C sort > out.txt\n",
        )
        .file("in/a.txt", "a\n");
    assert_eq!(p.build(&[]).ran(), names(&["list"]));
    fs::create_dir(p.path("in/empty")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["list"]));
    assert_eq!(p.read("out.txt"), "in\nin/a.txt\nin/empty\n");
    assert_eq!(p.build(&[]).fresh(), names(&["list"]));
}
