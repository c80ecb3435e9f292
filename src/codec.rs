//! gRPC codecs. Messages are decoded from one contiguous slice whenever the frame is
//! contiguous (it nearly always is): prost's field and varint loops run much faster on a
//! plain `&[u8]` than through tonic's layered buffer. The collector's batches are encoded
//! once, in the batcher thread, and go out as bytes: a resend after a reconnect or a replay
//! from the spool is never encoded again, and the exporter's runtime thread only copies.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::proto::v1 as pb;

/// A `procflow.v1.Batch` encoded once by the batcher; what the exporter buffers, resends and
/// spools.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub seq: u64,
    pub records: usize,
    pub bytes: bytes::Bytes,
}

impl EncodedBatch {
    pub fn encode(batch: &crate::proto::v1::Batch) -> Self {
        EncodedBatch {
            seq: batch.seq,
            records: batch.records.len(),
            bytes: prost::Message::encode_to_vec(batch).into(),
        }
    }
}

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

/// The method of the hand-written ends of `Ingest.Stream` (the collector's exporter and the
/// aggregator's route), named after the generated service; it is the proto's `rpc Stream`,
/// and the pipeline integration tests fail if the two part.
pub const INGEST_METHOD: &str = "Stream";

/// `Ingest.Stream`'s HTTP/2 path.
pub fn ingest_stream_path() -> tonic::codegen::http::uri::PathAndQuery {
    let path = format!("/{}/{INGEST_METHOD}", pb::ingest_server::SERVICE_NAME);
    tonic::codegen::http::uri::PathAndQuery::try_from(path)
        .expect("a proto service and method name form a valid path")
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

/// An ingest batch as it arrived: the header decoded, each record left as a range of the
/// frame (shared, not copied), so the service decodes records one at a time straight into
/// its events instead of first building a vector of generated `pb::Record`s.
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub identity: Option<pb::CollectorIdentity>,
    pub seq: u64,
    pub sent_at: u64,
    frame: Bytes,
    records: Vec<std::ops::Range<usize>>,
    /// Records in the frame; beyond the parse's bound only counted, never kept.
    count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    #[error("a record runs past the end of the batch")]
    Truncated,
}

/// `procflow.v1.Batch`'s field numbers; records are the one the batcher and the store
/// write by hand.
const BATCH_IDENTITY: u32 = 1;
const BATCH_SEQ: u32 = 2;
const BATCH_SENT_AT: u32 = 3;
pub const BATCH_RECORDS_FIELD: u32 = 4;

impl RawBatch {
    /// Parses a `procflow.v1.Batch` with the generated decoder's rules for the header
    /// (unknown fields skipped, a repeated identity merged); records are checked only for
    /// framing here and decoded by [`RawBatch::records`]' caller.
    pub fn parse(frame: Bytes) -> Result<RawBatch, FrameError> {
        Self::parse_bounded(frame, usize::MAX)
    }

    /// [`RawBatch::parse`] that keeps the ranges of at most `max_records` records: a frame
    /// of more (a 16 MiB frame holds eight million empty ones) costs no memory beyond
    /// itself, and its [`len`](RawBatch::len) says how many it held so the batch can be
    /// refused.
    pub fn parse_bounded(frame: Bytes, max_records: usize) -> Result<RawBatch, FrameError> {
        use prost::encoding::{check_wire_type, decode_key, decode_varint, skip_field};
        use prost::encoding::{uint64, DecodeContext, WireType};
        let mut batch = RawBatch {
            identity: None,
            seq: 0,
            sent_at: 0,
            frame: frame.clone(),
            records: Vec::new(),
            count: 0,
        };
        let mut rest: &[u8] = &frame;
        while !rest.is_empty() {
            let (field, wire_type) = decode_key(&mut rest)?;
            let context = DecodeContext::default();
            match field {
                BATCH_IDENTITY => prost::encoding::message::merge(
                    wire_type,
                    batch.identity.get_or_insert_with(Default::default),
                    &mut rest,
                    context,
                )?,
                BATCH_SEQ => uint64::merge(wire_type, &mut batch.seq, &mut rest, context)?,
                BATCH_SENT_AT => uint64::merge(wire_type, &mut batch.sent_at, &mut rest, context)?,
                BATCH_RECORDS_FIELD => {
                    check_wire_type(WireType::LengthDelimited, wire_type)?;
                    let len = usize::try_from(decode_varint(&mut rest)?)
                        .ok()
                        .filter(|&len| len <= rest.len())
                        .ok_or(FrameError::Truncated)?;
                    let start = frame.len() - rest.len();
                    batch.count += 1;
                    if batch.count <= max_records {
                        batch.records.push(start..start + len);
                    }
                    rest = &rest[len..];
                }
                _ => skip_field(wire_type, field, &mut rest, context)?,
            }
        }
        Ok(batch)
    }

    /// How many records the frame holds (all of them, also past the parse's bound).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each record's encoded `procflow.v1.Record` message, in order (at most the parse's
    /// bound of them).
    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.records.iter().map(|range| &self.frame[range.clone()])
    }
}

/// The aggregator's side of `Ingest.Stream`: batches in as [`RawBatch`] (the ranges of at
/// most `max_records` records kept), acks out.
#[derive(Debug, Clone, Copy)]
pub struct RawBatchCodec {
    pub max_records: usize,
}

impl Codec for RawBatchCodec {
    type Encode = pb::Ack;
    type Decode = RawBatch;
    type Encoder = MessageEncoder<pb::Ack>;
    type Decoder = RawBatchCodec;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Decoder for RawBatchCodec {
    type Item = RawBatch;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<RawBatch>, Status> {
        // The frame's own buffer, split off rather than copied.
        let frame = buf.copy_to_bytes(buf.remaining());
        RawBatch::parse_bounded(frame, self.max_records)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Record;

    fn sample() -> pb::Batch {
        pb::Batch {
            identity: Some(pb::CollectorIdentity {
                collector_id: "c1".into(),
                pod_name: "pod".into(),
                ..Default::default()
            }),
            seq: 7,
            sent_at: 99,
            records: vec![
                crate::wire::record_to_proto(&Record::Flow(crate::fixtures::flow(1))),
                crate::wire::record_to_proto(&Record::Process(crate::fixtures::process(3, b"sh"))),
            ],
        }
    }

    #[test]
    fn a_raw_batch_holds_what_the_generated_decoder_decodes() {
        let batch = sample();
        let raw = RawBatch::parse(batch.encode_to_vec().into()).expect("parses");
        assert_eq!(
            (raw.identity.clone(), raw.seq, raw.sent_at),
            (batch.identity.clone(), 7, 99)
        );
        let records: Vec<pb::Record> = raw
            .records()
            .map(|r| pb::Record::decode(r).expect("record"))
            .collect();
        assert_eq!(records, batch.records);
    }

    #[test]
    fn a_raw_batch_skips_unknown_fields_and_refuses_damage() {
        let mut bytes = sample().encode_to_vec();
        prost::encoding::string::encode(40, &"newer".to_owned(), &mut bytes);
        assert_eq!(
            RawBatch::parse(bytes.clone().into()).expect("parses").len(),
            2
        );
        // Every cut inside the last record, and a seq sent with the wrong wire type.
        let good = sample().encode_to_vec();
        for cut in good.len() - 5..good.len() {
            assert!(
                RawBatch::parse(good[..cut].to_vec().into()).is_err(),
                "{cut}"
            );
        }
        // Past the bound, records are counted and not kept.
        let bounded = RawBatch::parse_bounded(good.clone().into(), 1).expect("parses");
        assert_eq!((bounded.len(), bounded.records().count()), (2, 1));
        let mut wrong_type = Vec::new();
        prost::encoding::string::encode(BATCH_SEQ, &"7".to_owned(), &mut wrong_type);
        assert!(RawBatch::parse(wrong_type.into()).is_err());
    }
}
