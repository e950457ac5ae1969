//! Generates the message types for `proto/spore/idm/v1/idm.proto` with prost (no gRPC: the
//! guest links these). Needs `protoc`: Debian's `protobuf-compiler`, or `PROTOC` pointing at one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let idm = proto_root.join("spore/idm/v1/idm.proto");
    println!("cargo:rerun-if-changed={}", idm.display());
    prost_build::Config::new().compile_protos(&[idm], &[proto_root])?;
    Ok(())
}
