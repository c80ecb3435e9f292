//! What a crash, a power cut or a damaged disk leaves behind, against real processes and
//! files: a corrupt or empty rule-state file, a damaged database page, a torn spool file.
//! Each is recovered from (or fails only what it must, saying what and where), logged and
//! counted.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use procflow::codec::EncodedBatch;
use procflow::pipeline::exporter::{self, EXPORT_STATS};
use procflow::pipeline::spool::Spool;
use procflow::proto::v1 as pb;

use crate::pipeline::{
    batch, exporter_config, free_ports, http_get, identity, ingest, times_of, Aggregator,
};
use crate::util::procflow_bin;

fn aggregator(extra: &[&str]) -> (Aggregator, u16) {
    let [grpc, metrics] = free_ports::<2>();
    let listen = format!("127.0.0.1:{metrics}");
    let mut args = vec!["--metrics-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (Aggregator::start_on(grpc, &args), metrics)
}

fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_corrupt_or_empty_rule_state_is_set_aside_and_the_rules_start_fresh() {
    for (case, damage) in [
        ("empty", &b""[..]),
        ("torn", &b"{\"windows\":{\"X\":[1,2"[..]),
    ] {
        let (mut agg, metrics) = aggregator(&[]);
        agg.stop();
        let state = agg.dir.path().join("rule-state.json");
        assert!(state.exists(), "{case}: a clean stop saves the rule state");
        std::fs::write(&state, damage).expect("damage");
        let leftover = agg.dir.path().join("rule-state.tmp");
        std::fs::write(&leftover, b"{\"half").expect("leftover");
        // It starts (it refused to before), with the damaged file set aside.
        agg.restart();
        assert_eq!(
            metric(metrics, "procflow_rule_state_quarantined_total"),
            1.0,
            "{case}"
        );
        let aside: Vec<_> = std::fs::read_dir(agg.dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("rule-state.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "{case}");
        assert_eq!(std::fs::read(aside[0].path()).expect("kept"), damage);
        assert!(
            !leftover.exists(),
            "{case}: the interrupted save is removed"
        );
        assert!(agg.log().contains("rule state is corrupt"), "{case}");
        let acks = ingest(
            &agg.url(),
            None,
            vec![batch(&identity("state-after"), 1, 0, 5)],
        )
        .expect("ingest");
        assert!(!acks[0].rejected);
        // The fresh state is saved whole at the next stop.
        agg.stop();
        let saved = std::fs::read(&state).expect("saved again");
        serde_json::from_slice::<serde_json::Value>(&saved).expect("valid JSON");
    }
}

/// Overwrites the header of a table leaf page near the middle of a SQLite file: the rows
/// on it can no longer be read ("database disk image is malformed").
fn damage_a_leaf_page(db: &std::path::Path) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db)
        .expect("open db");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read db");
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        n => usize::from(n),
    };
    let pages = bytes.len() / page_size;
    // Page 1 is the schema; every other table leaf (0x0D) belongs to `segments`, the only
    // table with rowids.
    let victim = (pages / 2..pages)
        .chain(1..pages / 2)
        .find(|p| bytes[p * page_size] == 0x0D)
        .expect("a table leaf page");
    file.seek(SeekFrom::Start((victim * page_size + 1) as u64))
        .expect("seek");
    file.write_all(&[0xAB; 63]).expect("damage");
    file.sync_all().expect("sync");
}

#[test]
fn a_damaged_page_fails_its_query_with_data_loss_logged_with_its_range() {
    let (mut agg, metrics) = aggregator(&["--no-detection"]);
    let id = identity("damaged");
    let acks = ingest(
        &agg.url(),
        None,
        (1..=200).map(|s| batch(&id, s, s * 500, 500)).collect(),
    )
    .expect("ingest");
    assert_eq!(acks.len(), 200);
    agg.stop();
    let db = agg.dir.path().join("procflow.db");
    {
        // Everything into the main file, so the damage is what readers read.
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    damage_a_leaf_page(&db);
    agg.restart();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (read, status) = rt.block_on(async {
        let mut client = pb::query_client::QueryClient::connect(agg.url())
            .await
            .expect("connect");
        let mut answer = client
            .records(pb::QueryRequest::default())
            .await
            .expect("query")
            .into_inner();
        let mut read = 0usize;
        loop {
            match answer.message().await {
                Ok(Some(_)) => read += 1,
                Ok(None) => break (read, None),
                Err(status) => break (read, Some(status)),
            }
        }
    });
    let status = status.expect("the query fails: it does not end quietly short");
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(read < 100_000, "{read}");
    assert!(
        status
            .message()
            .contains("received in [0, 18446744073709551615] ns failed"),
        "{status:?}"
    );
    assert_eq!(metric(metrics, "procflow_store_read_errors_total"), 1.0);
    let log = agg.log();
    assert!(
        log.contains("reading the store failed") && log.contains("malformed"),
        "{log}"
    );
    // The command says so too, and fails.
    let out = std::process::Command::new(procflow_bin())
        .args(["query", "--aggregator", &agg.url(), "--since", "1h"])
        .args(["--limit", "100000"])
        .output()
        .expect("query");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        agg.is_running(),
        "one damaged page fails reads, not the server"
    );
}

#[test]
fn a_torn_spool_file_is_skipped_and_counted_and_the_rest_delivered() {
    let (agg, _) = aggregator(&["--no-detection"]);
    let id = identity("torn-spool");
    // An earlier run's spool: four batches, the third torn by a crash, and a file it was
    // writing when it died.
    let spool = tempfile::tempdir().expect("spool");
    {
        let mut s = Spool::open(spool.path(), 64 << 20).expect("spool");
        for seq in 1..=4 {
            s.push(&EncodedBatch::encode(&batch(&id, seq, seq * 10, 10)))
                .expect("push");
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(spool.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let third = std::fs::read(&files[2]).expect("read");
    // Cut where a field ends (after the header): what is left still parses, as a batch of
    // no records.
    let header = pb::Batch {
        records: Vec::new(),
        ..batch(&id, 3, 30, 10)
    };
    let cut = prost::Message::encoded_len(&header);
    std::fs::write(&files[2], &third[..cut]).expect("tear");
    let leftover = spool.path().join("00000000000000000004-10.tmp");
    std::fs::write(&leftover, b"\x0a\x02").expect("leftover");

    let dropped_before = EXPORT_STATS.records_dropped.load(Ordering::Relaxed);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(tx);
    rt.block_on(exporter::run(
        exporter_config(agg.url(), Some(spool.path().to_owned()), 16, 64 << 20),
        rx,
    ))
    .expect("replayed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let times = loop {
        let times = times_of(&agg.query("heartbeat"), "torn-spool");
        if times.len() >= 30 || Instant::now() > deadline {
            break times;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let expected: Vec<u64> = [1u64, 2, 4]
        .iter()
        .flat_map(|s| s * 10..s * 10 + 10)
        .collect();
    assert_eq!(times, expected, "the whole batches, each once");
    assert!(
        EXPORT_STATS.records_dropped.load(Ordering::Relaxed) >= dropped_before + 10,
        "the torn batch's ten records are counted"
    );
    assert!(!leftover.exists(), "the half-written file is swept");
    assert_eq!(std::fs::read_dir(spool.path()).expect("list").count(), 0);
}
