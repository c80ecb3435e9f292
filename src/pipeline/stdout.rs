//! JSON-lines output: one `model::Record` per line on stdout (or any writer), flushed
//! whenever the queue runs dry so a reader sees records promptly.

use crossbeam_channel::RecvError;
use std::io::{self, Write};

use super::RecordRx;

/// Writes every record from `rx` until all senders are gone. Returns how many were written.
pub fn write_json_lines(rx: &RecordRx, writer: impl Write) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, writer);
    let mut written = 0u64;
    loop {
        // Blocking: the output is flushed whenever the queue runs dry, so nothing waits in
        // the buffer and an idle collector does not wake this thread.
        match rx.rx.recv() {
            Ok(record) => {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
                written += 1;
                if rx.rx.is_empty() {
                    out.flush()?;
                }
            }
            Err(RecvError) => {
                out.flush()?;
                return Ok(written);
            }
        }
    }
}
