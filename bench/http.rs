//! Application impact: an HTTP/1.0 server (one connection per request, the churn a collector
//! pays for most) under a loopback load generator, measured without and with the collector
//! running as a separate process. Throughput and p99 latency, same run, side by side.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Report;

const BODY: usize = 1024;

/// `procflow-bench worker-http PORT-FILE`: the server as its own process (threads per
/// connection), so the collector attributes its sockets like an app's.
pub fn worker_http() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let response = {
        let mut r = format!("HTTP/1.0 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
        r.extend(std::iter::repeat_n(b'x', BODY));
        Arc::new(r)
    };
    // Bounded: the parent ends this process by pid; an orphan exits after 10 minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    for conn in listener.incoming() {
        if Instant::now() > deadline {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        let response = response.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = conn.write_all(&response);
                    return;
                }
            }
        });
    }
    Ok(())
}

fn load(port: u16, clients: usize, secs: f64) -> (f64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut buf = vec![0u8; BODY + 256];
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                if c.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
                    continue;
                }
                let mut got = 0;
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                if got > BODY {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    all.sort_unstable();
    let p99 = all
        .get(((all.len() as f64) * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    (all.len() as f64 / secs, p99)
}

pub fn scenario_http(report: &mut Report, secs: f64) -> anyhow::Result<()> {
    let mut server: Child = Command::new(std::env::current_exe()?)
        .arg("worker-http")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(
            server
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("stdout"))?,
        ),
        &mut line,
    )?;
    let port: u16 = line.trim().parse()?;
    let clients = 8;
    let result = (|| -> anyhow::Result<()> {
        load(port, clients, 1.0); // warm-up
        let (rps_without, p99_without) = load(port, clients, secs);
        let collector = crate::start_collector(&["--output", "stdout"])?;
        let cpu0 = collector.cpu_ticks();
        let (rps_with, p99_with) = load(port, clients, secs);
        let cpu = (collector.cpu_ticks() - cpu0) as f64 / crate::ticks_per_sec() / secs * 100.0;
        let records = collector.stop()?.len();
        report.add(
            "http",
            "requests/s without collector",
            rps_without,
            "req/s",
            None,
        );
        report.add("http", "requests/s with collector", rps_with, "req/s", None);
        report.add(
            "http",
            "throughput kept with collector",
            rps_with / rps_without * 100.0,
            "%",
            None,
        );
        report.add(
            "http",
            "p99 latency without collector",
            p99_without.as_secs_f64() * 1e3,
            "ms",
            None,
        );
        report.add(
            "http",
            "p99 latency with collector",
            p99_with.as_secs_f64() * 1e3,
            "ms",
            None,
        );
        report.add("http", "collector CPU under this load", cpu, "% core", None);
        report.add(
            "http",
            "records the collector emitted",
            records as f64,
            "records",
            None,
        );
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}
