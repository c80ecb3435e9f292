//! The on-disk spool: one file per batch (`<seq>-<records>.batch`, encoded protobuf) in a
//! directory such as an `emptyDir`, oldest first, within a size cap. When the cap is reached
//! the oldest batch is deleted and its records counted as dropped. Files of an earlier run
//! are replayed in order (their batches keep their own collector id and seq, so the
//! aggregator deduplicates them correctly). Each file is written durably
//! ([`crate::durable`]); what a crash leaves anyway is cleaned up, counted: temporary files
//! are swept at open, a batch file that does not parse is skipped and its records counted
//! as dropped.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::codec::EncodedBatch;
use crate::durable;
use crate::pipeline::exporter::drop_batch;
use crate::proto::v1 as pb;
use crate::telemetry::collector::{SpoolCorrupt, SpoolTempSwept};
use crate::telemetry::InternalEvent;

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
        let swept = durable::sweep_temp_files(dir)?;
        if swept > 0 {
            SpoolTempSwept { files: swept, dir }.emit();
        }
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

    /// Removes and returns the oldest batch. A file that cannot be read or does not parse
    /// (torn by a crash or a disk) is skipped: removed, its records counted as dropped.
    pub fn pop(&mut self) -> io::Result<Option<EncodedBatch>> {
        while let Some((name, size)) = self.files.pop_front() {
            self.bytes = self.bytes.saturating_sub(size);
            let path = self.dir.join(&name);
            let body = fs::read(&path);
            let _ = fs::remove_file(&path);
            // The name says how many records the batch held (`<n>-<records>.batch`).
            let named = name
                .trim_end_matches(".batch")
                .rsplit('-')
                .next()
                .and_then(|r| r.parse::<usize>().ok());
            // The whole batch is checked once here, so a corrupt file is dropped now and not
            // a rejection at the aggregator; its bytes are then sent as they are. A file cut
            // where a field ends still parses: its record count tells it apart.
            let error = match body.map(|b| (pb::Batch::decode(b.as_slice()), b)) {
                Ok((Ok(batch), body)) if named.is_none_or(|n| n == batch.records.len()) => {
                    return Ok(Some(EncodedBatch {
                        seq: batch.seq,
                        records: batch.records.len(),
                        bytes: body.into(),
                    }))
                }
                Ok((Ok(batch), _)) => format!("{} of its records left (torn)", batch.records.len()),
                Ok((Err(e), _)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            SpoolCorrupt.emit();
            let records = named.unwrap_or(1);
            drop_batch(
                &EncodedBatch {
                    seq: 0,
                    records,
                    bytes: Default::default(),
                },
                &format!("unreadable spool file {name}: {error}"),
            );
        }
        Ok(None)
    }
}

/// Writes via a temporary name, synced, so a crash never leaves a half-written batch under
/// a real name.
fn write_file(path: &Path, body: &[u8]) -> io::Result<()> {
    durable::write_atomic(path, body)
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
    fn torn_files_are_skipped_and_counted_and_leftovers_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for seq in 1..=3 {
            spool.push(&batch(seq, 10)).expect("push");
        }
        drop(spool);
        // A crash tore the middle batch (cut short) and left a half-written file.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        let torn = fs::read(&names[1]).expect("read");
        fs::write(&names[1], &torn[..torn.len() / 2]).expect("tear");
        // Cut where a field ends, it still parses: as a batch of fewer records.
        let fewer = batch(4, 3).bytes;
        fs::write(dir.path().join("00000000000000000008-10.batch"), &fewer).expect("short");
        fs::write(dir.path().join("00000000000000000009-10.tmp"), b"half").expect("leftover");
        fs::write(
            dir.path().join("00000000000000000010-7.batch"),
            b"\xff\xff\xff garbage",
        )
        .expect("garbage");
        let dropped = || {
            crate::pipeline::exporter::EXPORT_STATS
                .records_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = dropped();
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert!(
            !dir.path().join("00000000000000000009-10.tmp").exists(),
            "the leftover is swept at open"
        );
        let seqs: Vec<u64> = std::iter::from_fn(|| spool.pop().expect("pop"))
            .map(|b| b.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3], "the whole batches are replayed in order");
        assert!(spool.is_empty());
        assert!(
            dropped() >= before + 27,
            "the torn batches' 10 + 10 records and the garbage's 7 are counted"
        );
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
