use crate::support::*;

/// The committed JSON Schema is generated from the config types; it must not drift from them.
/// Regenerate with `cargo run -- schema > schema/gevulot.schema.json`.
#[test]
fn committed_schema_matches_the_types() {
    let p = Project::new();
    let generated = p.gvbuild(&["schema"]).success().stdout();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/gevulot.schema.json")).unwrap();
    assert!(
        generated == committed,
        "schema/gevulot.schema.json is stale: run `cargo run -- schema > schema/gevulot.schema.json`"
    );
}

/// The same for the manifest JSON the `manifest` step writes.
#[test]
fn committed_manifest_schema_matches_the_type() {
    let p = Project::new();
    let generated = p.gvbuild(&["schema", "manifest"]).success().stdout();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/nanos-manifest.schema.json"))
            .unwrap();
    assert!(
        generated == committed,
        "schema/nanos-manifest.schema.json is stale: run `cargo run -- schema manifest > schema/nanos-manifest.schema.json`"
    );
}

/// Every example project builds, and a second build finds everything fresh.
#[test]
fn hello_example_builds() {
    let p = Project::new();
    copy_tree(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello")), p.root());
    let _ = std::fs::remove_dir_all(p.path("build"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["greeting", "hello", "version"]));
    assert_eq!(p.read("build/greeting.txt"), "Hello from a gvbuild-built program, version 1.0.0\n");
    assert_eq!(p.build(&[]).fresh(), names(&["greeting", "hello", "version"]));
}
