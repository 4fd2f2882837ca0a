use crate::support::*;

#[test]
fn builds_then_nothing_to_do() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  gen:\n    inputs: [a.txt]\n    outputs: [out/b.txt]\n    run: cp a.txt out/b.txt\n",
        )
        .file("a.txt", "hello\n");
    assert_eq!(p.build(&[]).ran(), names(&["gen"]));
    assert_eq!(p.read("out/b.txt"), "hello\n");
    assert_eq!(p.build(&[]).fresh(), names(&["gen"]));
}
