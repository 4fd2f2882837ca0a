//! The command line around the build: list, graph, help, verbose output, exit codes.
use crate::support::*;

fn project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            "default: all\ntargets:\n  gen:\n    description: Make a file\n    inputs: [a.txt]\n    outputs: [out/gen.txt]\n    run: echo generating; cat a.txt > out/gen.txt\n  use:\n    deps: [gen]\n    inputs: [out/gen.txt]\n    outputs: [out/use.txt]\n    run: cp out/gen.txt out/use.txt\n  all:\n    description: Everything\n    deps: [use]\n",
        )
        .file("a.txt", "a\n")
}

#[test]
fn list_shows_kinds_descriptions_and_the_default() {
    let out = project().gvbuild(&["list"]).success().stdout();
    assert_eq!(out, "gen  step   Make a file\nuse  step\nall  group  Everything (default)\n");
}

#[test]
fn graph_prints_dot_and_json() {
    let p = project();
    let dot = p.gvbuild(&["graph"]).success().stdout();
    assert!(dot.starts_with("digraph gvbuild {"), "{dot}");
    assert!(dot.contains("\"use\" -> \"gen\";"), "{dot}");
    assert!(dot.contains("\"all\" [shape=ellipse];"), "{dot}");
    let json: serde_json::Value =
        serde_json::from_str(&p.gvbuild(&["graph", "--format", "json"]).success().stdout()).unwrap();
    assert_eq!(json["default"], "all");
    assert_eq!(json["targets"][1]["deps"][0], "gen");
    assert_eq!(json["targets"][0]["outputs"][0], "out/gen.txt");
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let out = project().gvbuild(&["--help"]).success().stdout();
    assert!(out.contains("Examples:"), "{out}");
    assert!(out.contains("gvbuild --target stage-libs"), "{out}");
    assert!(out.contains("Exit status: 0 success, 1 a step failed, 2 bad usage"), "{out}");
}

#[test]
fn verbose_shows_step_output_live_and_keeps_the_log() {
    let p = project();
    let r = p.gvbuild(&["-v", "gen"]).success();
    assert!(r.stderr().contains("[gen] generating"), "{}", r.stderr());
    assert_eq!(p.read(".gvbuild/logs/gen.log"), "generating\n");
    // Off a terminal, without -v: one plain line per step that did something, and a summary.
    p.write("a.txt", "b\n");
    let out = p.gvbuild(&[]).success().stdout();
    assert!(out.contains("ran       gen ("), "{out}");
    assert!(out.contains("gvbuild: 2 ran, 0 restored, 0 fresh, 0 failed, 0 skipped"), "{out}");
}

#[test]
fn a_quiet_step_leaves_no_stale_log() {
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  t:\n    inputs: [a.txt]\n    outputs: [o]\n    run: if grep -q loud a.txt; then echo LOUD; fi; cp a.txt o\n")
        .file("a.txt", "loud\n");
    p.build(&[]);
    assert_eq!(p.read(".gvbuild/logs/t.log"), "LOUD\n");
    p.write("a.txt", "quiet\n");
    p.build(&[]);
    assert!(!p.exists(".gvbuild/logs/t.log"), "the log of the last run, which printed nothing");
}

#[test]
fn a_step_that_leaves_a_process_holding_its_output_ends_with_its_shell() {
    // The background `sleep` keeps the step's stdout open long after the shell exits: the
    // build must end when the shell does and stop the sleeper, with both steps' output logged.
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    outputs: [o]\n    run: echo before; sleep 300 & echo $! > ctl/sleeper.pid; echo after; echo > o\n    scratch: [ctl]\n  u:\n    deps: [t]\n    outputs: [u]\n    run: printf 'no newline at the end'; echo > u\n",
    );
    let (code, text) = gvbuild_in_time(&p, &["-v", "u"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(p.read(".gvbuild/logs/t.log"), "before\nafter\n");
    assert!(text.contains("[t] before\n[t] after\n"), "{text}");
    // Live output ends an unfinished last line; the log keeps the bytes as printed.
    assert!(text.contains("[u] no newline at the end\n"), "{text}");
    assert_eq!(p.read(".gvbuild/logs/u.log"), "no newline at the end");
    let pid = p.read("ctl/sleeper.pid").trim().to_string();
    wait_until("the step's leftover sleep to be killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
    });
}

#[test]
fn a_step_whose_leftover_floods_its_output_ends_with_its_shell() {
    // `yes` outruns the reader (with -v each line is also printed, prefixed): the shell's exit
    // must stop it, not the end of its output, which never comes.
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  t:\n    outputs: [o]\n    run: yes & sleep 0.3; echo > o\n");
    let stderr = std::fs::File::create(p.path("stderr.txt")).unwrap();
    let mut child =
        p.command(&["-v", "t"]).stdout(std::process::Stdio::null()).stderr(stderr).spawn().unwrap();
    let status = wait_child(&mut child, "gvbuild");
    assert!(status.success(), "{}", p.read(".gvbuild/logs/t.log").len());
    assert!(p.exists("o"));
}

#[test]
fn a_step_printing_more_than_fits_in_memory_keeps_all_of_it_in_its_log() {
    // 3 MiB of output: past the 1 MiB kept in memory, so the log is streamed to its file, and
    // far past what a pipe holds, so the step blocks unless it is read while it runs.
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    outputs: [o]\n    run: head -c 3145728 /dev/zero | tr '\\0' x; echo > o\n",
    );
    let (code, text) = gvbuild_in_time(&p, &["t"]);
    assert_eq!(code, 0, "{text}");
    let log = std::fs::read(p.path(".gvbuild/logs/t.log")).unwrap();
    assert_eq!(log.len(), 3 << 20);
    assert!(log.iter().all(|&b| b == b'x'));
}

#[test]
fn inspect_of_a_missing_image_names_it() {
    let r = project().gvbuild(&["inspect", "build/app.img"]).exit(1);
    assert!(r.stderr().contains("error: build/app.img: cannot open build/app.img"), "{}", r.stderr());
}

#[test]
fn flags_before_and_after_build_combine() {
    let p = project();
    let b = Build::parse(&p.gvbuild(&["--json", "build", "-n", "gen"]).success());
    assert_eq!(b.ran(), names(&["gen"]));
    assert!(!p.exists("out/gen.txt"), "-n after `build` is a dry run too");
}

#[test]
fn libs_prints_the_closure_and_names_what_is_missing() {
    let p = project();
    let out = p.gvbuild(&["libs", "/bin/ls"]).success().stdout();
    assert!(out.starts_with("interpreter /lib64/ld-linux-x86-64.so.2\n"), "{out}");
    assert!(out.contains("libc.so.6 => "), "{out}");
    let r = p.gvbuild(&["libs", "a.txt"]).exit(1);
    assert!(r.stderr().contains("a.txt is not an ELF file"), "{}", r.stderr());
}

#[test]
fn gvbuild_timings_reports_each_phase_on_stderr() {
    let p = project();
    let r = p.command(&["gen"]).env("GVBUILD_TIMINGS", "1").output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    for phase in ["load graph", "load state", "build", "save state"] {
        assert!(err.contains(&format!("timing: {phase}")), "{phase}: {err}");
    }
    let quiet = p.gvbuild(&["gen"]).success();
    assert!(!quiet.stderr().contains("timing:"), "{}", quiet.stderr());
}

/// Like cargo and just: gevulot.yaml is found in the nearest parent, and the build runs
/// relative to that folder.
#[test]
fn the_build_file_is_found_in_a_parent_folder() {
    let p = project();
    std::fs::create_dir_all(p.path("deep/er")).unwrap();
    let mut c = p.command(&["--json", "gen"]);
    c.current_dir(p.path("deep/er"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.read("out/gen.txt"), "a\n");
    assert!(!p.exists("deep/er/out"), "outputs are relative to the project folder");
}

/// `-C DIR` runs as if started in DIR: a relative `--cache-dir` (or `GVBUILD_CACHE_DIR`) is
/// taken from DIR too, as `-f` is.
#[test]
fn a_relative_cache_dir_is_taken_from_dash_c() {
    let p = project();
    let outside = tempfile::tempdir().unwrap();
    let root = p.root().to_str().unwrap().to_string();
    let mut c = p.command(&["-C", &root, "--cache-dir", "relcache", "gen"]);
    c.current_dir(outside.path()).env_remove("GVBUILD_CACHE_DIR");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(p.exists("relcache/ac"), "the cache is in the project folder given by -C");
    assert!(!outside.path().join("relcache").exists(), "not where gvbuild was started");
    let mut c = p.command(&["-C", &root, "gen", "-B"]);
    c.current_dir(outside.path()).env("GVBUILD_CACHE_DIR", "envcache");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(p.exists("envcache/ac"));
}

/// `-j0` means no limit, as in ninja; a negative or non-numeric `-j` says what it takes.
#[test]
fn jobs_zero_is_no_limit_and_bad_jobs_say_what_j_takes() {
    let p = project();
    assert_eq!(p.build(&["-j0"]).ran(), names(&["gen", "use"]));
    for bad in ["-1", "many"] {
        let r = p.gvbuild(&["-j", bad]).exit(2);
        assert!(
            r.stderr()
                .contains("-j takes the number of commands to run at once: 1 or more, or 0 for no limit"),
            "{}",
            r.stderr()
        );
    }
}

/// `--rebuild` of a group reruns its members; `-B` reruns every selected step without reading
/// the cache, and stores what it ran.
#[test]
fn rebuild_takes_groups_and_rebuild_all_runs_everything() {
    let p = project();
    p.build(&[]);
    assert_eq!(p.build(&["--rebuild", "all"]).ran(), names(&["use"]));
    assert_eq!(p.build(&["-B"]).ran(), names(&["gen", "use"]));
    assert_eq!(p.build(&["--rebuild-all", "gen"]).ran(), names(&["gen"]));
    let q = p.clone_to_new_folder();
    std::fs::remove_dir_all(q.path("out")).unwrap();
    assert_eq!(q.build(&[]).restored(), names(&["gen", "use"]));
}

/// `-q` prints only failures.
#[test]
fn quiet_prints_only_failures() {
    let p = project();
    let r = p.gvbuild(&["-q"]).success();
    assert_eq!(r.stdout(), "", "nothing on success");
    p.write("gevulot.yaml", "targets:\n  bad:\n    outputs: [o]\n    run: echo broken >&2; exit 3\n  good:\n    outputs: [g]\n    run: echo > g\n");
    let r = p.gvbuild(&["-q", "-k"]).exit(1);
    assert!(!r.stdout().contains("ran       good"), "{}", r.stdout());
    assert!(r.stdout().contains("FAILED    bad"), "{}", r.stdout());
    assert!(
        r.stderr().contains("the command exited with status 3") && r.stderr().contains("| broken"),
        "{}",
        r.stderr()
    );
}

/// `-n` prints each step's expanded command, or a one-line summary for built-in steps, and
/// writes nothing at all: no .gvbuild/, no lock, no parse cache, no cache folder.
#[test]
fn dry_run_prints_commands_and_writes_nothing() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
            vars: { greeting: hello }
            targets:
              gen:
                outputs: [out/gen.txt]
                run: echo ${greeting} > out/gen.txt
              fetched:
                fetch:
                  url: https://example.com/assets.tar.gz
                  sha256: 0000000000000000000000000000000000000000000000000000000000000000
                  extract: {}
                  into: build/assets
            "#),
    );
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("never-made");
    let out = p.command(&["-n", "--cache-dir", cache_dir.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("would run     gen: "), "{text}");
    assert!(text.contains("  $ echo hello > out/gen.txt"), "{text}");
    assert!(text.contains("  $ fetch https://example.com/assets.tar.gz -> build/assets"), "{text}");
    assert!(text.contains("gvbuild (dry run): 2 would run, 0 would restore, 0 fresh"), "{text}");
    assert!(!text.contains(" ran,"), "{text}");
    assert!(!p.exists(".gvbuild"), "a dry run writes no state folder");
    assert!(!cache_dir.exists(), "a dry run makes no cache");
    let json = Build::parse(&p.gvbuild(&["-n", "--json"]).success());
    let gen = json.events.iter().find(|e| e["target"] == "gen").unwrap();
    assert_eq!(gen["command"], "echo hello > out/gen.txt");
    assert_eq!(json.summary["dry_run"], true);
    assert!(!p.exists(".gvbuild"));
}

/// Under `--json`, a failed step's event carries the error, its command and its log's path.
#[test]
fn json_failure_events_carry_the_error_and_the_log() {
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  bad:\n    outputs: [o]\n    run: echo oops; exit 4\n");
    let (run, b) = p.build_any(&[]);
    assert_eq!(run.code(), 1);
    let ev = &b.events[0];
    assert_eq!(ev["outcome"], "failed");
    assert_eq!(ev["error"], "the command exited with status 4");
    assert_eq!(ev["command"], "echo oops; exit 4");
    assert_eq!(ev["log"], ".gvbuild/logs/bad.log");
    assert_eq!(p.read(".gvbuild/logs/bad.log"), "oops\n");
}

/// Ctrl-C: the steps it stopped are `interrupted`, in text and in `--json`, not `failed`.
#[test]
fn interrupted_steps_are_reported_as_interrupted() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  slow:\n    outputs: [o]\n    run: touch ctl/started; sleep 30; echo > o\n    scratch: [ctl]\n",
    );
    for json in [false, true] {
        let _ = std::fs::remove_file(p.path("ctl/started"));
        let mut args = vec![];
        if json {
            args.push("--json");
        }
        let child = p
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !p.exists("ctl/started") {
            assert!(std::time::Instant::now() < deadline, "the step never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let st = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if json {
            assert!(stdout.contains("\"outcome\":\"interrupted\""), "{stdout}");
            assert!(stdout.contains("\"interrupted\":1"), "{stdout}");
        } else {
            assert!(stdout.contains("INTERRUPTED slow"), "{stdout}");
            assert!(stdout.contains("1 interrupted"), "{stdout}");
        }
        assert!(!stdout.contains("\"outcome\":\"failed\"") && !stdout.contains("FAILED"), "{stdout}");
    }
}

/// A step's reported time is its own run time, not the time it waited for a job slot: with
/// `-j1`, the second of two one-second steps reports about one second, not two.
#[test]
fn step_time_excludes_waiting_for_a_slot() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  a:\n    outputs: [a]\n    run: sleep 1; echo > a\n  b:\n    outputs: [b]\n    run: sleep 1; echo > b\n",
    );
    let start = std::time::Instant::now();
    let b = p.build(&["-j1"]);
    assert!(start.elapsed() >= std::time::Duration::from_secs(2), "the steps ran one after the other");
    for ev in &b.events {
        let ms = ev["ms"].as_u64().unwrap();
        assert!((1000..1900).contains(&ms), "{ev}");
    }
}

/// An input glob that matches no file (nor, so, another target's output) is a warning naming
/// the glob and the target; one that matches is not.
#[test]
fn an_input_glob_matching_nothing_is_a_warning() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  t:\n    inputs: [\"src/**/*.cu\", \"src/*.c\"]\n    outputs: [o]\n    run: echo > o\n",
        )
        .file("src/a.c", "");
    let r = p.gvbuild(&[]).success();
    assert!(
        r.stderr().contains("warning: input glob `src/**/*.cu` of target `t` matches no file"),
        "{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("`src/*.c`"), "{}", r.stderr());
    assert_eq!(r.stderr().matches("matches no file").count(), 1, "{}", r.stderr());
}

/// The long options in a `--help` text or a Markdown page (`--jobs`, `--cache-dir`, ...), `--help`
/// and `--version` aside.
fn long_options(help: &str) -> std::collections::BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || ",[]<=`()|\";:.".contains(c))
        .filter(|w| {
            w.starts_with("--")
                && w[2..].starts_with(|c: char| c.is_ascii_lowercase())
                && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .filter(|w| *w != "--help" && *w != "--version")
        .map(str::to_string)
        .collect()
}

/// A file of this repository, as text.
fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The part of `text` from the line `heading` to the next heading of the same level, or the end.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no `{heading}`")) + 1;
    let level = heading.split(' ').next().unwrap();
    let end = text[start + heading.len()..]
        .find(&format!("\n{level} "))
        .map_or(text.len(), |i| start + heading.len() + i + 1);
    &text[start..end]
}

/// The subcommands a `--help` lists under "Commands:", `help` aside.
fn subcommands(help: &str) -> Vec<String> {
    let Some(list) = help.split("\nCommands:\n").nth(1) else { return Vec::new() };
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand, as its words (`["cache", "gc"]`), read from the `--help` texts themselves,
/// so that a subcommand added later is one the docs must name.
fn every_subcommand(p: &Project) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for cmd in subcommands(&p.gvbuild(&["--help"]).success().stdout()) {
        let nested = subcommands(&p.gvbuild(&[&cmd, "--help"]).success().stdout());
        if nested.is_empty() {
            all.push(vec![cmd]);
        } else {
            all.extend(nested.into_iter().map(|sub| vec![cmd.clone(), sub]));
        }
    }
    let names: Vec<String> = all.iter().map(|c| c.join(" ")).collect();
    for known in ["build", "list", "cache gc", "cache verify", "run", "worker"] {
        assert!(names.iter().any(|n| n == known), "no `{known}` among the subcommands read: {names:?}");
    }
    all
}

/// docs/cli.md's command-line block lists every subcommand and every option, and the page names
/// no option that does not exist; README's short reference names every subcommand, and no option
/// that does not exist; each subcommand's `--help` lists only the options it takes.
#[test]
fn readme_cli_section_matches_help() {
    let page = repo_file("docs/cli.md");
    let block = page
        .split("\n```\n")
        .nth(1)
        .unwrap_or_else(|| panic!("docs/cli.md has no command-line block"))
        .to_string();
    let readme = repo_file("README.md");
    let reference = section(&readme, "## Reference");
    let p = project();
    let mut commands = vec![Vec::new()];
    commands.extend(every_subcommand(&p));
    let mut all = std::collections::BTreeSet::new();
    for cmd in &commands {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let help = p.gvbuild(&args).success().stdout();
        if !cmd.is_empty() {
            let usage = format!("gvbuild {}", cmd.join(" "));
            let listed = usage
                .replace("cache stats", "cache stats|verify")
                .replace("cache verify", "cache stats|verify");
            assert!(
                block.lines().any(|l| l == listed || l.starts_with(&format!("{listed} "))),
                "docs/cli.md's command-line block lacks a line for `{usage}`"
            );
            // `gvbuild list`, or a nested one in its parent's row: `gvbuild cache stats`, `gc`.
            let named = match cmd.as_slice() {
                [one] => {
                    reference.contains(&format!("`gvbuild {one}`"))
                        || reference.contains(&format!("`gvbuild {one} "))
                }
                [one, two] => reference.lines().any(|l| {
                    l.contains(&format!("`gvbuild {one} {two}`"))
                        || (l.contains(&format!("`gvbuild {one} ")) && l.contains(&format!("`{two}`")))
                }),
                _ => false,
            };
            assert!(named, "README's reference does not name `{usage}`");
        }
        all.extend(long_options(&help));
    }
    for opt in &all {
        assert!(block.contains(opt.as_str()), "docs/cli.md's command-line block lacks {opt}");
    }
    for opt in long_options(&page) {
        assert!(all.contains(&opt), "docs/cli.md names {opt}, which no --help lists");
    }
    for opt in long_options(reference) {
        assert!(all.contains(&opt), "README's reference names {opt}, which no --help lists");
    }
    // Only what each takes: `libs` takes no project options, `list` no build options.
    let libs = p.gvbuild(&["libs", "--help"]).success().stdout();
    assert!(
        !libs.contains("--directory") && !libs.contains("--cache-dir") && !libs.contains("--jobs"),
        "{libs}"
    );
    let list = p.gvbuild(&["list", "--help"]).success().stdout();
    assert!(
        list.contains("--directory") && !list.contains("--jobs") && !list.contains("--cache-dir"),
        "{list}"
    );
}

/// README's short reference and docs/gevulot-yaml.md name every top-level key and every target
/// key that gevulot.yaml's JSON Schema has, and each step kind has its row in README.
#[test]
fn readme_reference_names_every_gevulot_yaml_key() {
    let schema: serde_json::Value =
        serde_json::from_str(&project().gvbuild(&["schema"]).success().stdout()).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties in {v}"))
            .keys()
            .cloned()
            .collect()
    };
    let top = keys(&schema);
    let target = keys(&schema["definitions"]["RawTarget"]);
    assert!(
        top.contains(&"targets".to_string()) && target.contains(&"run".to_string()),
        "{top:?} {target:?}"
    );
    let readme = repo_file("README.md");
    let reference = section(&readme, "## Reference");
    let page = repo_file("docs/gevulot-yaml.md");
    for key in top.iter().chain(&target) {
        let code = format!("`{key}`");
        assert!(reference.contains(&code), "README's reference does not name {code}");
        assert!(
            page.contains(&code) || page.contains(&format!("`{key}.")),
            "docs/gevulot-yaml.md does not name {code}"
        );
    }
    for kind in ["run", "fetch", "stage", "manifest", "image", "task"] {
        assert!(target.contains(&kind.to_string()), "no step kind `{kind}` in the schema");
        assert!(
            reference.contains(&format!("| [`{kind}`](docs/gevulot-yaml.md")),
            "README's steps lack `{kind}`"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown text outside its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// Every relative link in README.md, docs/ and bench/README.md leads to a file that exists, and
/// every `#anchor` to a heading of that file: text that moves takes its links along.
#[test]
fn docs_links_and_anchors_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md"), root.join("bench/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let anchors = |path: &std::path::Path| -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        prose(&text)
            .iter()
            .filter(|l| l.starts_with('#'))
            .map(|l| anchor(l.trim_start_matches('#')))
            .collect()
    };
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.strip_prefix(root).unwrap().display().to_string();
        for line in prose(&text) {
            for piece in line.split("](").skip(1) {
                let Some(end) = piece.find(')') else { continue };
                let link = &piece[..end];
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
                let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
                assert!(target.exists(), "{name} links to `{link}`, and {} does not exist", target.display());
                if !fragment.is_empty() {
                    assert!(
                        anchors(&target).iter().any(|a| a == fragment),
                        "{name} links to `{link}`, and {} has no heading with that anchor",
                        target.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

/// Subcommands get "did you mean" like targets do, in and outside a project; options a
/// subcommand does not take are refused, also before it.
#[test]
fn subcommands_get_did_you_mean() {
    let p = project();
    let r = p.gvbuild(&["lsit"]).exit(2);
    assert!(
        r.stderr().contains("`lsit` is no target; did you mean the subcommand `gvbuild list`?"),
        "{}",
        r.stderr()
    );
    // A near target name wins over a subcommand.
    let r = p.gvbuild(&["gen2"]).exit(2);
    assert!(r.stderr().contains("did you mean `gen`?"), "{}", r.stderr());
    let outside = tempfile::tempdir().unwrap();
    let r = p.command(&["grpah"]).current_dir(outside.path()).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("did you mean the subcommand `gvbuild graph`?"), "{err}");
    let r = p.gvbuild(&["-j2", "libs", "/bin/ls"]).exit(2);
    assert!(r.stderr().contains("`gvbuild libs` does not take -j 2"), "{}", r.stderr());
    // Options before a subcommand that takes them still work.
    p.gvbuild(&["-C", ".", "list"]).success().stdout_has("gen");
}

/// Shell completions and the man page come from the same clap definitions.
#[test]
fn completions_and_man_page() {
    let p = project();
    for shell in ["bash", "zsh", "fish"] {
        let out = p.gvbuild(&["completions", shell]).success().stdout();
        for word in ["inspect", "rebuild-all", "dry-run"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    p.gvbuild(&["completions", "tcsh"]).exit(2);
    let man = p.gvbuild(&["man"]).success().stdout();
    assert!(man.starts_with(".ie") || man.contains(".TH gvbuild"), "{man}");
    assert!(man.contains("rebuild\\-all"), "{man}");
}

/// `clean GROUP` removes its members' outputs; `clean` and `--rebuild` of an unknown target get
/// "did you mean"; after an explicit `build`, a word is a target, never a subcommand.
#[test]
fn clean_takes_groups_and_unknown_names_get_suggestions() {
    let p = project();
    p.build(&[]);
    p.gvbuild(&["clean", "all"]).success().stdout_has("removed 1 output(s)");
    assert!(!p.exists("out/use.txt") && p.exists("out/gen.txt"), "all's member `use` only");
    p.gvbuild(&["clean", "gn"]).exit(2).stderr_has("did you mean `gen`?");
    p.gvbuild(&["--rebuild", "gn"])
        .exit(2)
        .stderr_has("--rebuild: no target named `gn` in this project; did you mean `gen`?");
    let r = p.gvbuild(&["build", "lst"]).exit(2);
    assert!(!r.stderr().contains("subcommand"), "{}", r.stderr());
}

/// Regression: with a warm cache, `-n` said a dependent "would run" because its dependency
/// would be restored rather than left fresh, though the build then restored everything. A step
/// that does not read its restored dependency's files is now predicted exactly; one that does
/// says so.
#[test]
fn dry_run_predicts_restores_through_dependencies() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  gen:\n    outputs: [out/gen.txt]\n    run: echo gen > out/gen.txt\n  stamp:\n    deps: [gen]\n    outputs: [out/stamp]\n    run: echo stamp > out/stamp\n  use:\n    deps: [gen]\n    inputs: [out/gen.txt]\n    outputs: [out/use.txt]\n    run: cp out/gen.txt out/use.txt\n",
    );
    p.build(&[]);
    let q = p.clone_to_new_folder();
    std::fs::remove_dir_all(q.path("out")).unwrap();
    let dry = Build::parse(&q.gvbuild(&["--json", "-n"]).success());
    assert_eq!(dry.restored(), names(&["gen", "stamp"]), "{:?}", dry.outcomes());
    let reasons = dry.events.iter().find(|e| e["target"] == "use").unwrap()["reasons"].to_string();
    assert!(reasons.contains("dependency gen would be restored first"), "{reasons}");
    assert_eq!(q.build(&[]).restored(), names(&["gen", "stamp", "use"]));
}
