//! Generates the prost messages and tonic clients/servers from `proto/`, with protoc from
//! `protoc-bin-vendored` (no system protoc needed), and writes a file descriptor set for
//! gRPC reflection.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/mpc/router/v1/message_router.proto",
    "proto/cohort/v1/cohort.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // The vendored protoc is handed to prost-build for this build only; the process
    // environment (and any PROTOC the user has set) is left alone.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // 1 KiB codec buffers per call and stream instead of 8 KiB (see `SmallBufferCodec`).
        .codec_path("crate::SmallBufferCodec")
        .file_descriptor_set_path(out_dir.join("cohort_wire_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
