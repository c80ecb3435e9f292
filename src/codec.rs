//! gRPC codecs. Messages are decoded from one contiguous slice whenever the frame is
//! contiguous (it nearly always is): prost's field and varint loops run much faster on a
//! plain `&[u8]` than through tonic's layered buffer. The collector's batches are encoded
//! once, in the batcher thread, and go out as bytes: a resend after a reconnect or a replay
//! from the spool is never encoded again, and the exporter's runtime thread only copies.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::pipeline::EncodedBatch;
use crate::proto::v1 as pb;

/// The codec of every generated service (`codec_path` in build.rs): prost encoding,
/// slice decoding.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = MessageEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MessageEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for MessageEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding: {e}")))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let message = if buf.chunk().len() == len {
            let message = U::decode(buf.chunk());
            buf.advance(len);
            message
        } else {
            U::decode(buf)
        };
        message
            .map(Some)
            // An INTERNAL status for unparsable protobuf, as gRPC's status-code guide says.
            .map_err(|e| Status::internal(format!("decoding: {e}")))
    }
}

/// The collector's side of `Ingest.Stream`: pre-encoded batches out, acknowledgements in.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedBatchCodec;

impl Codec for EncodedBatchCodec {
    type Encode = EncodedBatch;
    type Decode = pb::Ack;
    type Encoder = EncodedBatchCodec;
    type Decoder = SliceDecoder<pb::Ack>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedBatchCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

impl Encoder for EncodedBatchCodec {
    type Item = EncodedBatch;
    type Error = Status;

    fn encode(&mut self, item: EncodedBatch, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item.bytes);
        Ok(())
    }
}
