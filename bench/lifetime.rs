//! lifetime: who owns a connection, by how long it lived. In a pod's network namespace, a
//! server process and client processes make connections held a uniform 0–50 ms before
//! their one-byte exchange (200/s from 8 clients) beside a sub-millisecond churn (600/s from
//! one client process of 4 threads, a beacon, to a second server); every third connection
//! is closed with an RST (`SO_LINGER 0`). Reported per lifetime bucket, client and server
//! side apart: sockets owned by fd by the right process, sockets seen alive, RST-closed
//! client sockets that kept their peer; the wrong pids among every socket given one, and
//! among those whose owner was inferred from their peer (`INFERRED_FROM_PEER`). Then the quiet case: after ≥ 10 s without a socket change,
//! a new process's connection held 100–500 ms, in the pod and on the host.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use procflow::model::{now_ns, Attribution, FlowPhase, FlowRecord, Protocol, Record};

use crate::{enter_pod_netns, ratio, start_collector, ticks_per_sec, Report};

/// The CPU one dump of this network namespace's socket tables takes while they are empty,
/// and the buckets of the connection hash each TCP dump walks. A namespace shares the
/// host's hash unless `tcp_child_ehash_entries` gave it its own, and the kernel sizes the
/// host's by its memory: on a large host even an empty pod's dump walks a large table,
/// which is what bounds how often a churning pod can be dumped (`--churn-cpu`).
fn dump_cost() -> anyhow::Result<(Duration, u64)> {
    const DUMPS: u32 = 200;
    let mut dumper = procflow::sockdiag::Dumper::open()?;
    let mut sockets = Vec::new();
    let cpu_before = procflow::sys::clock::thread_cpu_time();
    for _ in 0..DUMPS {
        sockets.clear();
        dumper.dump_all(&mut sockets)?;
    }
    let cpu = procflow::sys::clock::thread_cpu_time().saturating_sub(cpu_before) / DUMPS;
    // Negative when the namespace shares the host's hash (kernels from 6.1).
    let buckets = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(0, i64::unsigned_abs);
    Ok((cpu, buckets))
}

/// One connection a client made: its local port, when it opened and closed (Unix ns),
/// whether it was reset, and the client's pid.
#[derive(Debug, Clone, Copy)]
struct Made {
    pid: u32,
    port: u16,
    /// The server's port.
    server: u16,
    opened: u64,
    closed: u64,
    rst: bool,
}

impl Made {
    fn lifetime_ms(&self) -> f64 {
        self.closed.saturating_sub(self.opened) as f64 / 1e6
    }
}

const BUCKETS: [(f64, f64, &str); 4] = [
    (0.0, 1.0, "<1ms"),
    (1.0, 10.0, "1-10ms"),
    (10.0, 50.0, "10-50ms"),
    (50.0, f64::MAX, ">=50ms"),
];

/// `worker-lifetime-server`: accepts on 127.0.0.1, answers one byte per connection and reads
/// to the end; prints its port; exits when stdin closes.
pub fn worker_server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    std::thread::spawn(|| {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            if matches!(s.read(&mut b), Ok(n) if n > 0) {
                let _ = s.write_all(b"r");
            }
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

/// `worker-lifetime-client PORT THREADS RATE SECS MIN_HOLD_US MAX_HOLD_US RST_EVERY`: each
/// thread makes RATE connections/s for SECS, each held a uniform MIN..MAX µs before a
/// one-byte exchange, every RST_EVERY-th closed with an RST (0: none); prints
/// `port opened closed rst` per connection when done.
pub fn worker_client(args: &[String]) -> anyhow::Result<()> {
    let num = |i: usize| -> anyhow::Result<u64> {
        Ok(args
            .get(i)
            .context("worker-lifetime-client argument")?
            .parse()?)
    };
    let (port, threads, rate, secs) = (num(0)? as u16, num(1)?, num(2)?, num(3)?);
    let (min_hold_us, max_hold_us, rst_every) = (num(4)?, num(5)?, num(6)?);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut made = Vec::new();
                for i in 0..rate * secs {
                    // Threads offset within the period, so the clients do not open in step.
                    let at = start
                        + Duration::from_micros((i * 1_000_000 + t * 1_000_000 / threads) / rate);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let rst = rst_every > 0 && (i + t) % rst_every == 0;
                    let hold =
                        min_hold_us + fastrand::u64(0..=max_hold_us.saturating_sub(min_hold_us));
                    if let Ok(m) = one_connection(port, hold, rst) {
                        made.push(m);
                    }
                }
                made
            })
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for w in workers {
        for (port, opened, closed, rst) in w.join().unwrap_or_default() {
            writeln!(out, "{port} {opened} {closed} {}", u8::from(rst))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn one_connection(port: u16, hold_us: u64, rst: bool) -> anyhow::Result<(u16, u64, u64, bool)> {
    let opened = now_ns();
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let local = c.local_addr()?.port();
    if hold_us > 0 {
        std::thread::sleep(Duration::from_micros(hold_us));
    }
    c.write_all(b"q")?;
    c.read_exact(&mut [0u8; 1])?;
    if rst {
        procflow::sys::net::reset_on_close(c.as_fd())?;
    }
    drop(c);
    Ok((local, opened, now_ns(), rst))
}

/// A client worker started with `args`; its pid and, once it exits, what it made.
fn spawn_client(args: &[String]) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .arg("worker-lifetime-client")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?)
}

fn collect_client(child: Child, server: u16) -> anyhow::Result<Vec<Made>> {
    let pid = child.id();
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "client {pid}: {}", out.status);
    let mut made = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [port, opened, closed, rst] = f[..] {
            made.push(Made {
                pid,
                port: port as u16,
                server,
                opened,
                closed,
                rst: rst != 0,
            });
        }
    }
    Ok(made)
}

/// The flow records of one socket (cookie), in order.
struct Socket<'a> {
    records: Vec<&'a FlowRecord>,
}

impl Socket<'_> {
    fn first_seen(&self) -> u64 {
        self.records.iter().map(|f| f.first_seen).min().unwrap_or(0)
    }
    fn seen_alive(&self) -> bool {
        self.records.iter().any(|f| f.phase == FlowPhase::Start)
    }
    fn owned_by(&self, pid: u32) -> bool {
        self.records
            .iter()
            .any(|f| f.attribution == Attribution::Fd && f.pid == Some(pid))
    }
    fn wrong_pid(&self, pid: u32) -> bool {
        self.records.iter().any(|f| f.pid.is_some_and(|p| p != pid))
    }
    fn labelled(&self) -> bool {
        self.records.iter().any(|f| f.pid.is_some())
    }
    fn inferred(&self) -> bool {
        self.records
            .iter()
            .any(|f| f.attribution == Attribution::InferredFromPeer)
    }
    fn end(&self) -> Option<&FlowRecord> {
        self.records
            .iter()
            .copied()
            .find(|f| f.phase == FlowPhase::End)
    }
}

/// Sockets by local port: (local port → sockets whose records carry it, by first sight).
fn sockets_by_port(records: &[Record]) -> HashMap<u16, Vec<Socket<'_>>> {
    let mut by_cookie: HashMap<u64, Vec<&FlowRecord>> = HashMap::new();
    for r in records {
        if let Record::Flow(f) = r {
            if f.protocol == Protocol::Tcp {
                by_cookie.entry(f.cookie).or_default().push(f);
            }
        }
    }
    let mut by_port: HashMap<u16, Vec<Socket<'_>>> = HashMap::new();
    for (_, records) in by_cookie {
        by_port
            .entry(records[0].local_port)
            .or_default()
            .push(Socket { records });
    }
    by_port
}

/// The socket among `candidates` first seen within the connection's life: of those, the
/// first seen. A port is reused across a run (loopback reuses even ports in TIME_WAIT), and a
/// later connection on the same port — the beacon's, whose RST-scrubbed END shows remote port
/// 0 — also falls in the window: taking any match, in hash order, judged some connections by
/// another one's socket.
fn find<'s, 'a>(
    candidates: Option<&'s Vec<Socket<'a>>>,
    m: &Made,
    remote: Option<u16>,
) -> Option<&'s Socket<'a>> {
    candidates?
        .iter()
        .filter(|s| {
            let t = s.first_seen();
            t + 5_000_000 >= m.opened
                && t <= m.closed + 3_000_000_000
                && remote.is_none_or(|r| {
                    s.records
                        .iter()
                        .any(|f| f.remote_port == Some(r) || f.remote_port == Some(0))
                })
        })
        .min_by_key(|s| s.first_seen())
}

#[derive(Default, Clone, Copy)]
struct Tally {
    n: u64,
    alive: u64,
    owned: u64,
    rst: u64,
    rst_peer: u64,
}

/// The buckets of a pod's own connection hash: what the kernel of a 2 GiB microVM sizes for
/// itself (one per 128 KiB of memory). A Fargate pod is such a VM; a namespace on this host
/// shares the host's hash, sized by the host's memory, unless it was made with one of its own.
pub const POD_HASH_BUCKETS: u64 = 16_384;

/// Enters a new network namespace with a connection hash of its own of `buckets`
/// (`net.ipv4.tcp_child_ehash_entries`, set for the unshare and put back at once). Fails
/// where that cannot be set: not root, or a kernel before 6.1.
fn enter_pod_netns_with_hash(buckets: u64) -> anyhow::Result<procflow::sys::ns::NetnsGuard> {
    use std::os::unix::fs::FileExt;
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_child_ehash_entries";
    // Opened in the host's namespace: writes through it stay the host's after the unshare.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(SYSCTL)
        .with_context(|| format!("{SYSCTL} (a namespace with a hash of its own needs root)"))?;
    let mut before = String::new();
    (&file).read_to_string(&mut before)?;
    file.write_at(buckets.to_string().as_bytes(), 0)?;
    // Put back at once: only the namespace made here gets the small hash.
    let entered = procflow::sys::ns::NetnsGuard::enter_new();
    file.write_at(before.trim().as_bytes(), 0)
        .with_context(|| format!("putting {SYSCTL} back to {}", before.trim()))?;
    let entered = entered.context("unshare(CLONE_NEWNET)")?;
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(up.success(), "ip link set lo up: {up}");
    Ok(entered)
}

/// The lifetime scenario in a pod whose connection hash is the host's (`own_hash` None:
/// every dump walks the host's table) or one of its own of that many buckets.
pub fn scenario_lifetime(
    report: &mut Report,
    secs: u64,
    own_hash: Option<u64>,
) -> anyhow::Result<()> {
    let scenario = if own_hash.is_some() {
        "lifetime-pod"
    } else {
        "lifetime"
    };
    // The pod: its own network namespace (the connection hash walks stay the pod's own).
    let _netns = match own_hash {
        Some(buckets) => enter_pod_netns_with_hash(buckets)?,
        None => enter_pod_netns()?,
    };
    let (dump_cpu, hash_buckets) = dump_cost()?;
    if let Some(buckets) = own_hash {
        anyhow::ensure!(
            hash_buckets == buckets,
            "the namespace walks {hash_buckets} buckets, not its own {buckets}"
        );
    }
    report.add(
        scenario,
        "one dump of the pod's (empty) socket tables, CPU",
        dump_cpu.as_secs_f64() * 1e6,
        "us",
        None,
    );
    report.add(
        scenario,
        "connection hash buckets each TCP dump walks (net.ipv4.tcp_ehash_entries)",
        hash_buckets as f64,
        "buckets",
        None,
    );
    let collector = start_collector(&["--output", "stdout", "--queue-capacity", "65536"])?;
    let (mut server, server_pid, port) = spawn_server()?;
    let (mut beacon_server, beacon_server_pid, beacon_port) = spawn_server()?;
    let server_of = |p: u16| {
        if p == port {
            server_pid
        } else {
            beacon_server_pid
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = collector.cpu_ticks();
    let started = Instant::now();
    let arg = |v: u64| v.to_string();
    let mut clients = Vec::new();
    // 8 clients × 2 threads × 12.5/s: 200 connections/s held 0–50 ms; 4 × 150/s sub-ms.
    for _ in 0..8 {
        clients.push((
            port,
            spawn_client(&[
                arg(u64::from(port)),
                arg(2),
                arg(12),
                arg(secs),
                arg(0),
                arg(50_000),
                arg(3),
            ])?,
        ));
    }
    clients.push((
        beacon_port,
        spawn_client(&[
            arg(u64::from(beacon_port)),
            arg(4),
            arg(150),
            arg(secs),
            arg(0),
            arg(0),
            arg(3),
        ])?,
    ));
    let mut made = Vec::new();
    for (server_port, c) in clients {
        made.extend(collect_client(c, server_port)?);
    }
    std::thread::sleep(Duration::from_millis(1500)); // TIME_WAIT entry events + vanish grace
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (collector.cpu_ticks() - cpu0) as f64 / ticks_per_sec() / elapsed * 100.0;
    for s in [&mut server, &mut beacon_server] {
        drop(s.stdin.take());
        let _ = s.wait();
    }
    let records = collector.stop()?;
    let by_port = sockets_by_port(&records);
    let mut client = [Tally::default(); 4];
    let mut served = [Tally::default(); 4];
    let (mut labelled, mut wrong) = (0u64, 0u64);
    let (mut inferred, mut inferred_wrong) = (0u64, 0u64);
    for m in &made {
        let b = BUCKETS
            .iter()
            .position(|(lo, hi, _)| m.lifetime_ms() >= *lo && m.lifetime_ms() < *hi)
            .unwrap_or(0);
        let c = &mut client[b];
        c.n += 1;
        if let Some(s) = find(by_port.get(&m.port), m, Some(m.server)) {
            c.alive += u64::from(s.seen_alive());
            c.owned += u64::from(s.owned_by(m.pid));
            labelled += u64::from(s.labelled());
            wrong += u64::from(s.wrong_pid(m.pid));
            if s.inferred() {
                inferred += 1;
                inferred_wrong += u64::from(s.wrong_pid(m.pid));
            }
            if m.rst {
                c.rst += 1;
                c.rst_peer += u64::from(s.end().is_some_and(|e| e.remote_port == Some(m.server)));
            }
        } else if m.rst {
            c.rst += 1;
        }
        let sv = &mut served[b];
        sv.n += 1;
        let accepted = by_port.get(&m.server).and_then(|list| {
            list.iter()
                .filter(|s| {
                    s.records.iter().any(|f| f.remote_port == Some(m.port))
                        && s.first_seen() + 5_000_000 >= m.opened
                        && s.first_seen() <= m.closed + 3_000_000_000
                })
                .min_by_key(|s| s.first_seen())
        });
        if let Some(s) = accepted {
            sv.alive += u64::from(s.seen_alive());
            sv.owned += u64::from(s.owned_by(server_of(m.server)));
            labelled += u64::from(s.labelled());
            wrong += u64::from(s.wrong_pid(server_of(m.server)));
        }
    }
    report.add(
        scenario,
        "connections made",
        made.len() as f64,
        "conns",
        None,
    );
    for (i, (_, _, label)) in BUCKETS.iter().enumerate() {
        let (c, s) = (client[i], served[i]);
        if c.n == 0 {
            continue;
        }
        report.add(
            scenario,
            &format!("client sockets, lifetime {label}"),
            c.n as f64,
            "sockets",
            None,
        );
        let fd = ratio(c.owned, c.n);
        let target = match *label {
            "1-10ms" => Some((">=80%", fd >= 80.0)),
            "10-50ms" => Some((">=99.5%", fd >= 99.5)),
            _ => None,
        };
        report.add(
            scenario,
            &format!("client owned by fd (right pid), lifetime {label}"),
            fd,
            "%",
            target,
        );
        report.add(
            scenario,
            &format!("client seen alive, lifetime {label}"),
            ratio(c.alive, c.n),
            "%",
            None,
        );
        report.add(
            scenario,
            &format!("server owned by fd (right pid), lifetime {label}"),
            ratio(s.owned, s.n),
            "%",
            None,
        );
        report.add(
            scenario,
            &format!("server seen alive, lifetime {label}"),
            ratio(s.alive, s.n),
            "%",
            None,
        );
        if c.rst > 0 {
            let kept = ratio(c.rst_peer, c.rst);
            let target = match *label {
                "1-10ms" => Some((">=80%", kept >= 80.0)),
                "10-50ms" | ">=50ms" => Some((">=99.5%", kept >= 99.5)),
                _ => None,
            };
            report.add(
                scenario,
                &format!(
                    "RST-closed client sockets keeping their peer, lifetime {label} (of {})",
                    c.rst
                ),
                kept,
                "%",
                target,
            );
        }
    }
    let wrong_share = ratio(wrong, labelled);
    report.add(
        scenario,
        "wrong pids among sockets given one",
        wrong_share,
        "%",
        Some(("<=0.1%", wrong_share <= 0.1)),
    );
    report.add(
        scenario,
        "client sockets owned by inference from their peer",
        inferred as f64,
        "sockets",
        None,
    );
    let inferred_share = ratio(inferred_wrong, inferred);
    report.add(
        scenario,
        "wrong pids among those inferred from their peer",
        inferred_share,
        "%",
        Some(("<=0.1%", inferred_share <= 0.1)),
    );
    report.add(scenario, "collector CPU", cpu, "% core", None);
    Ok(())
}

/// A `worker-lifetime-server`: the child, its pid and its port.
fn spawn_server() -> anyhow::Result<(Child, u32, u16)> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("worker-lifetime-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("server port")?;
    Ok((server, pid, port))
}

/// After ≥ 10 s without a socket change, `n` times a new process's connection held
/// 100–500 ms: seen alive and owned by fd. In a new network namespace (`pod`) or the host's.
pub fn scenario_quiet(report: &mut Report, n: usize) -> anyhow::Result<()> {
    let pod = std::thread::spawn(move || quiet_spells(true, n));
    let host = quiet_spells(false, n)?;
    let pod = pod
        .join()
        .map_err(|_| anyhow::anyhow!("pod thread panicked"))??;
    for (name, (made, owned)) in [("pod", pod), ("host", host)] {
        let share = ratio(owned, made);
        report.add(
            "quiet",
            &format!(
                "after 10 s quiet, held 100-500 ms: seen alive and owned by fd ({name}, of {made})"
            ),
            share,
            "%",
            Some(("100%", owned == made)),
        );
    }
    Ok(())
}

fn quiet_spells(pod: bool, n: usize) -> anyhow::Result<(u64, u64)> {
    let _netns = if pod { Some(enter_pod_netns()?) } else { None };
    let collector = start_collector(&["--output", "stdout"])?;
    let server = TcpListener::bind("127.0.0.1:0")?;
    let port = server.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 16];
                if matches!(s.read(&mut b), Ok(k) if k > 0) {
                    let _ = s.write_all(b"r");
                }
                while matches!(s.read(&mut b), Ok(k) if k > 0) {}
            });
        }
    });
    let mut made = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(10_500));
        // One connection held 100–500 ms, no RST.
        let args = [port.into(), 1, 1, 1, 100_000, 500_000, 0].map(|v: u64| v.to_string());
        let child = spawn_client(&args)?;
        made.extend(collect_client(child, port)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    let records = collector.stop()?;
    let by_port = sockets_by_port(&records);
    let owned = made
        .iter()
        .filter(|m| {
            find(by_port.get(&m.port), m, Some(port))
                .is_some_and(|s| s.seen_alive() && s.owned_by(m.pid))
        })
        .count();
    Ok((made.len() as u64, owned as u64))
}
