//! Generates the gRPC code for `proto/spore/v1/control.proto` (needs `protoc`: Debian's
//! `protobuf-compiler`, or `PROTOC` pointing at one).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let control = proto_root.join("spore/v1/control.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", control.display());
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("spore_v1_descriptor.bin"))
        .compile_protos(&[control], &[proto_root])?;
    Ok(())
}
