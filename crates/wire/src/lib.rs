//! Cohort's wire types: the protobuf messages and the tonic gRPC clients and servers
//! generated from the `.proto` files under `proto/`.
//!
//! - `proto/mpc/router/v1/message_router.proto` (package `mpc.router.v1`, module
//!   [`router`]) is written from the MPC wallet message router's interface document
//!   (`shared/specs/mpc-router.proto.txt`), so Cohort serves that API wire-compatibly.
//! - `proto/cohort/v1/cohort.proto` (package `cohort.v1`, module [`cohort`]) is Cohort's
//!   own API for what the router lacks: login, session creation, encryption keys, admin,
//!   and `Mailbox`, one bidirectional stream per connection for batched sends, deliveries
//!   under credit-based flow control and cumulative acknowledgements.
//!
//! Message names, field names and field numbers are a wire contract: changing one breaks
//! existing peers. `tests/wire_contract.rs` checks the router proto against the spec.
//!
//! Code is generated at build time with `tonic-prost-build`, using the protoc binary from
//! `protoc-bin-vendored`.

#![forbid(unsafe_code)]

/// `mpc.router.v1`: the MPC router API (`MessageRouter` service and its messages).
///
/// Server: [`router::message_router_server::MessageRouterServer`]; client:
/// [`router::message_router_client::MessageRouterClient`].
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod router {
    tonic::include_proto!("mpc.router.v1");
}

/// `cohort.v1`: Cohort's own services (`Auth`, `Sessions`, `Keys`, `Admin`, `Mailbox`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod cohort {
    tonic::include_proto!("cohort.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of both protos, for gRPC reflection
/// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cohort_wire_descriptor.bin"));

/// The protobuf codec every generated client and server uses: prost's, with 1 KiB buffers
/// instead of tonic's 8 KiB default. Tonic allocates a buffer per call and per stream; a
/// relay holding 10,000 subscription streams holds 10,000 of them, while its messages are
/// mostly far smaller. Buffers still grow to fit any message.
pub struct SmallBufferCodec<T, U>(std::marker::PhantomData<fn(T) -> U>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(std::marker::PhantomData)
    }
}

/// Start size and growth step of [`SmallBufferCodec`]'s buffers, and tonic's yield threshold.
const CODEC_BUFFER: usize = 1024;
const CODEC_YIELD: usize = 32 * 1024;

impl<T, U> tonic::codec::Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(tonic::codec::BufferSettings::new(
            CODEC_BUFFER,
            CODEC_YIELD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(tonic::codec::BufferSettings::new(
            CODEC_BUFFER,
            CODEC_YIELD,
        ))
    }
}
