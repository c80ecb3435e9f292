//! JSON-lines output: one `model::Record` per line on stdout (or any writer), flushed
//! whenever the queue runs dry so a reader sees records promptly. Flows and listeners are
//! written by [`json`] (serde's bytes, without serde), the rest by serde.

use crossbeam_channel::RecvError;
use std::io::{self, Write};

use super::RecordRx;

mod json;

/// Bytes gathered before a write.
const WRITE_AT: usize = 64 * 1024;

/// Writes every record from `rx` until all senders are gone. Returns how many were written.
pub fn write_json_lines(rx: &RecordRx, mut writer: impl Write) -> io::Result<u64> {
    let mut out = Vec::with_capacity(WRITE_AT + 4096);
    let mut written = 0u64;
    loop {
        // Blocking: the output is flushed whenever the queue runs dry, so nothing waits in
        // the buffer and an idle collector does not wake this thread.
        match rx.rx.recv() {
            Ok(record) => {
                json::push_record_line(&mut out, &record)?;
                written += 1;
                let dry = rx.rx.is_empty();
                if dry || out.len() >= WRITE_AT {
                    writer.write_all(&out)?;
                    out.clear();
                }
                if dry {
                    writer.flush()?;
                }
            }
            Err(RecvError) => {
                writer.write_all(&out)?;
                writer.flush()?;
                return Ok(written);
            }
        }
    }
}
