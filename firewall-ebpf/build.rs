//! Fails early, with the fix, when bpf-linker is missing.
fn main() {
    if which::which("bpf-linker").is_err() {
        panic!("bpf-linker is not installed: run `cargo xtask bootstrap`");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
