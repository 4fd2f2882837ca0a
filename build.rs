//! Build script: only cfgs for the test suite. Where no CUDA toolkit is named for the tests
//! (`GVBUILD_TEST_CUDA`), or no clang is on PATH, and this is not CI, the tests that need them are
//! marked ignored with their reason, so `cargo test` shows them as ignored rather than passing
//! silently. Under CI they always run, and fail without the tool.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_cuda)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_clang)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_nginx)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_reapi_python)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_buildgrid09)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_not_root)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_qemu)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_nanos)");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_NANOS");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_PG_BIN");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_NGINX");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_REAPI_PYTHON");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_BUILDGRID09_PYTHON");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=GVBUILD_TEST_CUDA");
    println!("cargo::rerun-if-env-changed=CI");
    let cuda = std::env::var_os("GVBUILD_TEST_CUDA").is_some_and(|v| !v.is_empty());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if !cuda && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_cuda");
    }
    // The same for clang, whose depfiles are among the compilers' vectors.
    let clang = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("clang").is_file()));
    if !clang && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_clang");
    }
    // nginx serves the shared-cache tests (GVBUILD_TEST_NGINX, /usr/sbin/nginx or PATH); a Python
    // with BuildGrid's REAPI protos (GVBUILD_TEST_REAPI_PYTHON, which .ci/run sets up) decodes
    // what lands on it, and the `bgd` beside that Python serves the gRPC tests.
    let nginx = std::env::var_os("GVBUILD_TEST_NGINX").is_some_and(|v| !v.is_empty())
        || std::path::Path::new("/usr/sbin/nginx").is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()));
    if !nginx && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_nginx");
    }
    let python = std::env::var_os("GVBUILD_TEST_REAPI_PYTHON").is_some_and(|v| !v.is_empty());
    if !python && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_reapi_python");
    }
    // BuildGrid 0.9.x, the current release, needs Python 3.13, which not every machine has:
    // .ci/run sets GVBUILD_TEST_BUILDGRID09_PYTHON up where pyenv has one and says so where it
    // has not; without it the tests against 0.9 are listed as ignored, in CI too.
    if std::env::var_os("GVBUILD_TEST_BUILDGRID09_PYTHON").is_none_or(|v| v.is_empty()) {
        println!("cargo::rustc-cfg=gvbuild_no_buildgrid09");
    }
    // docs/remote-execution.md's PostgreSQL set-up runs as root (it hands the cluster to the `postgres` user); CI
    // runs as root. Elsewhere the tests that run it are listed as ignored.
    let root =
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root && !ci {
        println!("cargo::rustc-cfg=gvbuild_not_root");
    }
    // PostgreSQL holds BuildGrid's scheduler in the remote-execution tests: Debian's
    // /usr/lib/postgresql/N/bin (which .ci/run installs), or GVBUILD_TEST_PG_BIN.
    let pg = std::env::var_os("GVBUILD_TEST_PG_BIN").is_some_and(|v| !v.is_empty())
        || std::fs::read_dir("/usr/lib/postgresql")
            .is_ok_and(|r| r.flatten().any(|e| e.path().join("bin/initdb").is_file()));
    if !pg && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_postgres");
    }
    // QEMU boots images in the runner's tests (qemu-system-x86_64 on PATH; .ci/run installs it).
    let qemu = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !qemu && !ci {
        println!("cargo::rustc-cfg=gvbuild_no_qemu");
    }
    // A real Nanos release cannot be downloaded where the tests run, nor be built by the project:
    // the tests that boot real Nanos run only where GVBUILD_TEST_NANOS names an extracted one,
    // in CI too, and are listed as ignored elsewhere.
    if std::env::var_os("GVBUILD_TEST_NANOS").is_none_or(|v| v.is_empty()) {
        println!("cargo::rustc-cfg=gvbuild_no_nanos");
    }
}
