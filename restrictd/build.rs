// Builds restrictd-ebpf's BPF object (the pinned nightly, -Z build-std=core,
// BTF) into OUT_DIR; src/bpf.rs embeds it. scripts/setup.sh installs what
// this needs; BPF_NIGHTLY is the one place the nightly's date is written.
fn main() {
    let nightly = include_str!("../BPF_NIGHTLY").trim();
    println!("cargo:rerun-if-changed=../BPF_NIGHTLY");
    // The VM tests' second build (another map layout, restrictd-ebpf's follow.rs).
    println!("cargo:rerun-if-env-changed=RESTRICTD_TEST_LAYOUT");
    // The object is built from the eBPF crate and the ABI crate it uses;
    // aya-build watches only the former.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../restrictd-common")
    );
    let ebpf = aya_build::Package {
        name: "restrictd-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../restrictd-ebpf"),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(nightly)) {
        panic!("building the BPF programs failed: {e:#}\nrun scripts/setup.sh to install {nightly} with rust-src, and bpf-linker");
    }
}
