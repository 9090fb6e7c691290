//! Builds the template components the end-to-end tests load, so `cargo test` tests what the
//! templates' sources say now.

fn main() {
    let root = xtask::workspace_root();
    for dir in ["templates", "tests/fixtures", "sdk", "manifest"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    match xtask::build_templates(&root) {
        Ok(dir) => println!("cargo:rustc-env=SLUICE_TEMPLATES={}", dir.display()),
        Err(e) => panic!("{e}"),
    }
}
