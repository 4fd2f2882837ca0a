//! `fetch: { git, rev }`: a repository checked out at a pinned commit, without `.git`.
use std::process::Command;

use crate::support::*;

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits; returns (its folder, the first commit's id).
fn repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    std::fs::write(dir.path().join("a.txt"), "first\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/b.txt"), "b\n").unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "one"]);
    let first = git(dir.path(), &["rev-parse", "HEAD"]);
    std::fs::write(dir.path().join("a.txt"), "second\n").unwrap();
    git(dir.path(), &["commit", "-qam", "two"]);
    (dir, first)
}

fn yaml(url: &str, rev: &str) -> String {
    format!("targets:\n  src:\n    fetch:\n      git: {url}\n      rev: {rev}\n      into: vendor/src\n")
}

#[test]
fn checks_out_the_pinned_commit_without_dot_git_and_restores_it_in_a_clone() {
    let (r, first) = repo();
    let url = format!("file://{}", r.path().display());
    let p = Project::new().file("gevulot.yaml", &yaml(&url, &first));
    assert_eq!(p.build(&[]).ran(), names(&["src"]));
    assert_eq!(p.read("vendor/src/a.txt"), "first\n");
    assert_eq!(p.read("vendor/src/sub/b.txt"), "b\n");
    assert!(!p.exists("vendor/src/.git"));
    assert_eq!(p.build(&[]).fresh(), names(&["src"]));

    // The key is the commit, not the URL: a clone whose repository moved restores it.
    let c = p.clone_to_new_folder();
    c.write("gevulot.yaml", &yaml("file:///nonexistent/moved.git", &first));
    std::fs::remove_dir_all(c.path("vendor")).unwrap();
    assert_eq!(c.build(&[]).restored(), names(&["src"]));
    assert_eq!(c.read("vendor/src/a.txt"), "first\n");
}

#[test]
fn branch_names_and_short_ids_are_refused_as_unpinned() {
    let (r, first) = repo();
    let url = format!("file://{}", r.path().display());
    for rev in ["main", "master", "v1.0", &first[..12]] {
        let p = Project::new().file("gevulot.yaml", &yaml(&url, rev));
        let err = p.gvbuild(&[]).exit(2).stderr();
        assert!(err.contains("is not a full commit id"), "{rev}: {err}");
        assert!(err.contains("git rev-parse"), "{rev}: {err}");
    }
}

#[test]
fn an_unknown_commit_fails_with_git_s_reason_and_leaves_nothing() {
    let (r, _) = repo();
    let url = format!("file://{}", r.path().display());
    let p = Project::new().file("gevulot.yaml", &yaml(&url, &"0".repeat(40)));
    let run = p.gvbuild(&[]).exit(1);
    assert!(run.stderr().contains("git could not check out 0000000000"), "{}", run.stderr());
    assert!(!p.exists("vendor/src"));
    let leftovers: Vec<_> = std::fs::read_dir(p.path("vendor")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "no staging folder left behind: {leftovers:?}");
}
