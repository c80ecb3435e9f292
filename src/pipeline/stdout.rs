//! JSON-lines output: one `model::Record` per line on stdout (or any writer), flushed
//! whenever the queue runs dry so a reader sees records promptly.

use std::io::{self, Write};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::RecordRx;

/// Writes every record from `rx` until all senders are gone. Returns how many were written.
pub fn write_json_lines(rx: &RecordRx, writer: impl Write) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, writer);
    let mut written = 0u64;
    loop {
        match rx.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(record) => {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
                written += 1;
                if rx.rx.is_empty() {
                    out.flush()?;
                }
            }
            Err(RecvTimeoutError::Timeout) => out.flush()?,
            Err(RecvTimeoutError::Disconnected) => {
                out.flush()?;
                return Ok(written);
            }
        }
    }
}
