//! churn: short-lived connections with known bytes (2,000 TCP/s with lifetimes spread
//! 0–500 ms, plus UDP exchanges), the collector as a separate process; every socket must end
//! once with its exact payload bytes.

use std::time::{Duration, Instant};

use procflow::model::Record;

use crate::score::{self, ratio, TruthConn};
use crate::{start_collector, ticks_per_sec, Report, Sizes};

pub fn scenario_churn(report: &mut Report, sizes: &Sizes) -> anyhow::Result<()> {
    let scenario = format!("churn {}/s", sizes.churn_rate);
    let collector = start_collector(&["--output", "stdout", "--queue-capacity", "65536"])?;
    let cpu0 = collector.cpu_ticks();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (truth, udp_ports) = runtime.block_on(churn_workload(
        sizes.churn_rate,
        sizes.churn_secs,
        sizes.udp_rate,
    ))?;
    std::thread::sleep(Duration::from_millis(1500)); // TIME_WAIT entry events + vanish grace
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (collector.cpu_ticks() - cpu0) as f64 / ticks_per_sec() / elapsed * 100.0;
    let rss = collector.peak_rss_kib();
    let records = collector.stop()?;
    let s = score::score_flows(&truth, &records);
    report.add(
        &scenario,
        "TCP connections made",
        truth.len() as f64,
        "conns",
        None,
    );
    report.add(
        &scenario,
        "sockets with exactly one END",
        ratio(s.one_end, s.sockets),
        "%",
        Some(("100%", s.one_end == s.sockets)),
    );
    report.add(
        &scenario,
        "sockets with duplicate ENDs",
        s.duplicate_ends as f64,
        "sockets",
        Some(("0", s.duplicate_ends == 0)),
    );
    report.add(
        &scenario,
        "ENDs with exact payload bytes",
        ratio(s.exact_bytes, s.one_end),
        "%",
        Some(("100%", s.exact_bytes == s.one_end)),
    );
    report.add(
        &scenario,
        "ENDs without peer (reset before any dump)",
        s.without_peer as f64,
        "sockets",
        None,
    );
    report.add(
        &scenario,
        "sockets seen alive in a dump (START)",
        ratio(s.started, s.sockets),
        "%",
        None,
    );
    for (label, n, fd) in &s.attribution_by_lifetime {
        if *n > 0 {
            report.add(
                &scenario,
                &format!("attributed by fd, lifetime {label}"),
                ratio(*fd, *n),
                "%",
                None,
            );
        }
    }
    let udp_ended = records
        .iter()
        .filter(|r| matches!(r, Record::Flow(f) if f.protocol == procflow::model::Protocol::Udp && f.phase == procflow::model::FlowPhase::End && udp_ports.contains(&f.local_port)))
        .count();
    report.add(
        &scenario,
        "UDP exchanges made",
        udp_ports.len() as f64,
        "sockets",
        None,
    );
    report.add(
        &scenario,
        "UDP sockets with an END",
        ratio(udp_ended as u64, udp_ports.len() as u64),
        "%",
        Some(("100%", udp_ended == udp_ports.len())),
    );
    report.add(&scenario, "collector CPU", cpu, "% core", None);
    report.add(
        &scenario,
        "collector peak RSS",
        rss as f64 / 1024.0,
        "MiB",
        None,
    );
    Ok(())
}

async fn churn_workload(
    rate: u64,
    secs: u64,
    udp_rate: u64,
) -> anyhow::Result<(Vec<TruthConn>, Vec<u16>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = listener.local_addr()?;
    let deadline = Instant::now() + Duration::from_secs(secs + 10);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut header = [0u8; 4];
                if s.read_exact(&mut header).await.is_err() {
                    return;
                }
                let mut sink = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s
                    .write_all(&vec![b'd'; u32::from_be_bytes(header) as usize])
                    .await;
            });
        }
    });
    let udp_server = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp_addr = udp_server.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp_server.recv_from(&mut buf).await {
            let _ = udp_server.send_to(&buf[..n], from).await;
        }
    });
    let total = rate * secs;
    let mut tasks = Vec::with_capacity(total as usize);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let at = start + Duration::from_micros(i * 1_000_000 / rate);
        let up = fastrand::u64(0..20_000);
        let down = fastrand::u64(0..20_000);
        let hold = Duration::from_millis(fastrand::u64(0..=500));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let opened = Instant::now();
            let mut c = tokio::net::TcpStream::connect(server_addr).await.ok()?;
            let client_port = c.local_addr().ok()?.port();
            c.write_all(&(down as u32).to_be_bytes()).await.ok()?;
            c.write_all(&vec![b'u'; up as usize]).await.ok()?;
            tokio::time::sleep(hold).await;
            c.shutdown().await.ok()?;
            let mut reply = Vec::new();
            c.read_to_end(&mut reply).await.ok()?;
            Some(TruthConn {
                client_port,
                server_port: server_addr.port(),
                up: up + 4,
                down,
                lifetime_ms: opened.elapsed().as_millis() as u64,
            })
        }));
    }
    let mut udp_tasks = Vec::new();
    for i in 0..udp_rate * secs {
        let at = start + Duration::from_micros(i * 1_000_000 / udp_rate.max(1));
        udp_tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
            let port = s.local_addr().ok()?.port();
            s.send_to(b"ping", udp_addr).await.ok()?;
            let mut buf = [0u8; 16];
            tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            Some(port)
        }));
    }
    let mut truth = Vec::new();
    for t in tasks {
        if Instant::now() > deadline {
            break;
        }
        if let Ok(Some(c)) = t.await {
            truth.push(c);
        }
    }
    let mut udp = Vec::new();
    for t in udp_tasks {
        if let Ok(Some(p)) = t.await {
            udp.push(p);
        }
    }
    Ok((truth, udp))
}
