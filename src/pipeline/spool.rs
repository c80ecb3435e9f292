//! The on-disk spool: one file per batch (`<seq>-<records>.batch`, encoded protobuf) in a
//! directory such as an `emptyDir`, oldest first, within a size cap. When the cap is reached
//! the oldest batch is deleted and its records counted as dropped. Files of an earlier run
//! are replayed in order (their batches keep their own collector id and seq, so the
//! aggregator deduplicates them correctly).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::pipeline::exporter::drop_batch;
use crate::pipeline::EncodedBatch;
use crate::proto::v1 as pb;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// (file name, size), oldest first.
    files: VecDeque<(String, u64)>,
    bytes: u64,
    /// Orders files across runs even when seqs restart.
    counter: u64,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut files: Vec<(String, u64)> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.ends_with(".batch")
                    .then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
            })
            .collect();
        files.sort();
        let counter = files
            .last()
            .and_then(|(n, _)| n.split('-').next()?.parse::<u64>().ok())
            .map_or(0, |c| c + 1);
        let bytes = files.iter().map(|(_, s)| s).sum();
        if !files.is_empty() {
            tracing::info!(
                batches = files.len(),
                bytes,
                "replaying the spool of an earlier run"
            );
        }
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            files: files.into(),
            bytes,
            counter,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a batch; drops (and counts) the oldest ones while over the size cap.
    pub fn push(&mut self, batch: &EncodedBatch) -> io::Result<()> {
        let name = format!("{:020}-{}.batch", self.counter, batch.records);
        self.counter += 1;
        let body = &batch.bytes;
        write_file(&self.dir.join(&name), body)?;
        self.bytes += body.len() as u64;
        self.files.push_back((name, body.len() as u64));
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            if let Some(oldest) = self.pop()? {
                drop_batch(&oldest, "spool full: oldest batch dropped");
            }
        }
        Ok(())
    }

    /// Puts batches back in front of the spool (shutdown with unacknowledged batches),
    /// newest first while they fit under the cap: the oldest that do not fit are dropped
    /// and counted, as `push` drops the oldest.
    pub fn push_front_all(&mut self, batches: &[EncodedBatch]) -> io::Result<()> {
        // Names sort before every existing file: reuse the counter space below the oldest.
        let first = self
            .files
            .front()
            .and_then(|(n, _)| n.split('-').next()?.parse::<u64>().ok())
            .unwrap_or(self.counter);
        let base = first.saturating_sub(batches.len() as u64);
        for (i, batch) in batches.iter().enumerate().rev() {
            let body = &batch.bytes;
            if self.bytes + body.len() as u64 > self.max_bytes {
                drop_batch(batch, "spool full at shutdown: oldest batch dropped");
                continue;
            }
            let name = format!("{:020}-{}.batch", base + i as u64, batch.records);
            write_file(&self.dir.join(&name), body)?;
            self.bytes += body.len() as u64;
            self.files.push_front((name, body.len() as u64));
        }
        Ok(())
    }

    /// Removes and returns the oldest batch.
    pub fn pop(&mut self) -> io::Result<Option<EncodedBatch>> {
        let Some((name, size)) = self.files.pop_front() else {
            return Ok(None);
        };
        self.bytes = self.bytes.saturating_sub(size);
        let path = self.dir.join(&name);
        let body = fs::read(&path);
        let _ = fs::remove_file(&path);
        let body = body?;
        // The whole batch is checked once here, so a corrupt file is an error now and not a
        // rejection at the aggregator; its bytes are then sent as they are.
        let batch = pb::Batch::decode(body.as_slice())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}")))?;
        Ok(Some(EncodedBatch {
            seq: batch.seq,
            records: batch.records.len(),
            bytes: body.into(),
        }))
    }
}

/// Writes via a temporary name so a crash never leaves a half-written batch under a real name.
fn write_file(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, body)?;
    fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, records: usize) -> EncodedBatch {
        EncodedBatch::encode(&pb::Batch {
            identity: None,
            seq,
            sent_at: 0,
            records: vec![pb::Record::default(); records],
        })
    }

    #[test]
    fn keeps_order_across_reopen_and_drops_oldest_when_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = batch(1, 10).bytes.len() as u64;
        let mut spool = Spool::open(dir.path(), one * 3).expect("open");
        for seq in 1..=5 {
            spool.push(&batch(seq, 10)).expect("push");
        }
        assert_eq!(spool.len(), 3, "two oldest dropped to stay under the cap");
        drop(spool);
        // Shutdown puts the unacknowledged (older) batches back in front, newest first,
        // while they fit: of 1 and 2, only 2 fits under a cap of four.
        let mut spool = Spool::open(dir.path(), one * 4).expect("reopen");
        let dropped = || {
            crate::pipeline::exporter::EXPORT_STATS
                .records_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = dropped();
        spool
            .push_front_all(&[batch(1, 10), batch(2, 10)])
            .expect("push front");
        assert!(spool.bytes() <= one * 4, "the cap holds at shutdown too");
        assert!(dropped() >= before + 10, "the batch left out is counted");
        let seqs: Vec<u64> = std::iter::from_fn(|| spool.pop().expect("pop"))
            .map(|b| b.seq)
            .collect();
        assert_eq!(seqs, vec![2, 3, 4, 5]);
        assert!(spool.is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("00000000000000000000-1.batch"),
            b"\xff\xff\xff garbage",
        )
        .expect("write");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        assert!(spool.pop().is_err());
        assert!(spool.is_empty());
    }
}
