// Builds restrictd-ebpf's BPF object (nightly, -Z build-std=core, BTF) into
// OUT_DIR; src/bpf.rs embeds it. scripts/setup.sh installs what this needs.
fn main() {
    let ebpf = aya_build::Package {
        name: "restrictd-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../restrictd-ebpf"),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([ebpf], aya_build::Toolchain::default()) {
        panic!("building the BPF programs failed: {e:#}\nrun scripts/setup.sh to install nightly rust-src and bpf-linker");
    }
}
