//! The hostile-client scenario: ingest through the collector's real path into SQLite with
//! the managed rules, alone and then beside a client that holds a valid credential and
//! does what the attacker did, plus the most the admission bounds still allow it:
//! - a `Query` with a huge `limit` (refused), then as many largest-allowed queries as the
//!   bound admits, each read once and then left stalled (they pin the store's snapshot
//!   until their deadline);
//! - a `Subscribe` whose filter lists 150,000 pods (refused), then as many subscriptions as
//!   the bound admits, 10,000 names each (one with no filter), none ever read;
//! - 1,000 idle ingest streams, from enough addresses (identities) that all are admitted,
//!   and a 1,001st from an address already at its bound (refused).
//!
//! Each phase runs against a fresh aggregator, baseline and attack alternating twice; the
//! figures are the ingest rate under attack over the baseline's, and the aggregator's
//! peak RSS under attack.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use procflow::proto::v1 as pb;

use crate::pipeline::{drive, exporter_config, Aggregator};
use crate::Report;

/// The documented bound on the aggregator's memory under this attack (BENCHMARKS.md).
const RSS_BOUND_MIB: f64 = 512.0;

/// What the attacker asked for and what it got.
#[derive(Debug, Default)]
struct Attack {
    huge_query_refused: bool,
    huge_filter_refused: bool,
    stalled_queries: usize,
    queries_refused: usize,
    subscriptions: usize,
    subscriptions_refused: usize,
    idle_streams: usize,
    idle_streams_refused: usize,
    /// Everything the attacker holds open, dropped when the phase ends.
    held: Vec<Box<dyn std::any::Any + Send>>,
}

/// The bounds the attack probes: the aggregator's defaults.
const READS_PER_IDENTITY: usize = 4;
const SUBSCRIBERS_PER_IDENTITY: usize = 16;
const STREAMS_PER_IDENTITY: usize = 8;

/// A connection of its own: a stream the attacker never reads fills its connection's
/// HTTP/2 window, which would stall the attacker's own later requests on it.
async fn connect(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?)
}

async fn attack(url: String, idle_streams: usize) -> anyhow::Result<Attack> {
    let mut attack = Attack::default();

    // Queries.
    let mut query = pb::query_client::QueryClient::new(connect(&url).await?);
    attack.huge_query_refused = query
        .records(pb::QueryRequest {
            limit: u32::MAX,
            ..pb::QueryRequest::default()
        })
        .await
        .is_err();
    for _ in 0..=READS_PER_IDENTITY {
        let mut query = pb::query_client::QueryClient::new(connect(&url).await?);
        match query.records(pb::QueryRequest::default()).await {
            Ok(answer) => {
                let mut answer = answer.into_inner();
                // One event read, then never again.
                let _ = answer.message().await;
                attack.stalled_queries += 1;
                attack.held.push(Box::new(answer));
            }
            Err(_) => attack.queries_refused += 1,
        }
    }
    // Subscriptions.
    let mut subscribe = pb::subscribe_client::SubscribeClient::new(connect(&url).await?);
    attack.huge_filter_refused = subscribe
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::Filter {
                pods: (0..150_000).map(|i| format!("pod-{i:08}")).collect(),
                ..pb::Filter::default()
            }),
        })
        .await
        .is_err();
    for i in 0..=SUBSCRIBERS_PER_IDENTITY {
        let filter = (i > 0).then(|| pb::Filter {
            pods: (0..10_000).map(|p| format!("sub{i}-pod-{p:05}")).collect(),
            ..pb::Filter::default()
        });
        let mut subscribe = pb::subscribe_client::SubscribeClient::new(connect(&url).await?);
        match subscribe.subscribe(pb::SubscribeRequest { filter }).await {
            Ok(live) => {
                attack.subscriptions += 1;
                attack.held.push(Box::new(live.into_inner()));
            }
            Err(_) => attack.subscriptions_refused += 1,
        }
    }
    // Idle ingest streams: each address of 127.0.1.0/24 and up is an identity of its own
    // (the bound is per identity), so all of them are admitted.
    let addresses = idle_streams.div_ceil(STREAMS_PER_IDENTITY);
    for a in 0..addresses {
        let local: IpAddr = [127, 0, 1 + (a / 250) as u8, 1 + (a % 250) as u8].into();
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?
            .local_address(Some(local))
            .connect()
            .await?;
        let wanted = (idle_streams - a * STREAMS_PER_IDENTITY).min(STREAMS_PER_IDENTITY);
        // The first address asks for one more than its bound.
        let asks = wanted + usize::from(a == 0);
        for _ in 0..asks {
            let mut client = pb::ingest_client::IngestClient::new(channel.clone());
            match client.stream(tokio_stream::pending::<pb::Batch>()).await {
                Ok(acks) => {
                    attack.idle_streams += 1;
                    attack.held.push(Box::new(acks.into_inner()));
                }
                Err(_) => attack.idle_streams_refused += 1,
            }
        }
        attack.held.push(Box::new(channel));
    }
    Ok(attack)
}

/// One phase: a fresh aggregator (SQLite + managed rules), ingest for `secs`, with the
/// attack started one second in when `hostile`. Returns (rec/s, peak RSS MiB, attack).
fn phase(secs: u64, hostile: Option<usize>) -> anyhow::Result<(f64, f64, Option<Attack>)> {
    let agg = Aggregator::start(&[])?;
    let url = agg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let attacker = hostile.map(|idle| {
        let url = url.clone();
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            attack(url, idle).await
        })
    });
    let started = Instant::now();
    let (sent, seconds, _) = drive(exporter_config(&url), u64::MAX, Duration::from_secs(secs))?;
    let rss = crate::peak_rss_kib_of(agg.pid()) as f64 / 1024.0;
    let mut attack = match attacker {
        Some(task) => Some(runtime.block_on(task)??),
        None => None,
    };
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(secs + 120),
        "the phase overran"
    );
    if let Some(attack) = &mut attack {
        attack.held.clear();
    }
    let _ = agg.stop();
    drop(runtime);
    Ok((sent as f64 / seconds, rss, attack))
}

pub fn scenario_hostile(report: &mut Report, secs: u64, idle_streams: usize) -> anyhow::Result<()> {
    crate::machine_speed(report, "before the hostile-client run");
    let (mut base, mut under, mut base_rss, mut under_rss) = (Vec::new(), Vec::new(), 0f64, 0f64);
    let mut last = None;
    for _ in 0..2 {
        let (rate, rss, _) = phase(secs, None)?;
        base.push(rate);
        base_rss = base_rss.max(rss);
        let (rate, rss, attack) = phase(secs, Some(idle_streams))?;
        under.push(rate);
        under_rss = under_rss.max(rss);
        last = attack;
    }
    let attack = last.ok_or_else(|| anyhow::anyhow!("no attack ran"))?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (base_rate, under_rate) = (mean(&base), mean(&under));
    let scenario = format!("hostile {idle_streams} idle");
    for (i, (b, u)) in base.iter().zip(&under).enumerate() {
        report.add(
            &scenario,
            &format!("round {}: ingest beside the attacker / alone", i + 1),
            u / b,
            "ratio",
            None,
        );
        report.add(
            &scenario,
            &format!("round {}: ingest alone", i + 1),
            *b,
            "rec/s",
            None,
        );
        report.add(
            &scenario,
            &format!("round {}: ingest beside the attacker", i + 1),
            *u,
            "rec/s",
            None,
        );
    }
    let kept = under_rate / base_rate;
    report.add(
        &scenario,
        "ingest kept under attack (mean of rounds)",
        kept,
        "ratio",
        Some((">=0.9", kept >= 0.9)),
    );
    report.add(
        &scenario,
        "aggregator peak RSS, alone",
        base_rss,
        "MiB",
        None,
    );
    report.add(
        &scenario,
        "aggregator peak RSS under attack",
        under_rss,
        "MiB",
        Some(("<=512 MiB", under_rss <= RSS_BOUND_MIB)),
    );
    let succeeded = usize::from(!attack.huge_query_refused)
        + usize::from(!attack.huge_filter_refused)
        + usize::from(attack.queries_refused == 0)
        + usize::from(attack.subscriptions_refused == 0)
        + usize::from(attack.idle_streams_refused == 0);
    report.add(
        &scenario,
        "attacks past a bound that succeeded (huge limit, huge filter, reads, subscriptions, streams over the per-identity bound)",
        succeeded as f64,
        "attacks",
        Some(("==0", succeeded == 0)),
    );
    for (what, n) in [
        ("largest queries held stalled", attack.stalled_queries),
        ("subscriptions held unread", attack.subscriptions),
        ("idle ingest streams held", attack.idle_streams),
    ] {
        report.add(&scenario, &format!("attacker: {what}"), n as f64, "", None);
    }
    crate::machine_speed(report, "after the hostile-client run");
    Ok(())
}
