//! Build script: only cfgs for the test suite. Where no CUDA toolkit is named for the tests
//! (`GVBUILD_TEST_CUDA`), or no clang is on PATH, and this is not CI, the tests that need them are
//! marked ignored with their reason, so `cargo test` shows them as ignored rather than passing
//! silently. Under CI they always run, and fail without the tool.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_cuda)");
    println!("cargo::rustc-check-cfg=cfg(gvbuild_no_clang)");
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
}
