//! The eBPF observer benchmark. Run through `cargo xtask bench ebpf`; see docs/benchmarks.md.
//!
//! - `pps`: UDP datagrams per second through a veth pair between two fresh namespaces, in
//!   rounds with nothing, a do-nothing reference program, and the flow counter attached at the
//!   receiving side's ingress (watching the destination), in the order off, reference, counter,
//!   counter, reference, off, ... Host only (tcx or netlink, whichever the kernel has).
//! - `run`: the program's own cost per packet, as the kernel times it with `BPF_PROG_TEST_RUN`
//!   (`--repeat` runs of one frame), for the kinds of packet a node sees.
//! - `maps`: the cost of `FlowCounter::counters()` with N watched destinations.
//! - `ipvs`: the cost of `IpvsClient::list_services()` on an N-service table (one destination
//!   each), in a fresh namespace. Needs IPVS: the VM.
//!
//! Timings are wall-clock; nothing is asserted on them. The run fails if the counter misses
//! datagrams the receiver got, or a read returns the wrong number of entries.

use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux::{
    ipvs::{IpvsClient, OnFailure, Op},
    model::{DestKey as IpvsDest, Destination, Forwarding, Protocol, Service, ServiceKey},
    observe::{
        ConnectSide, DestKey, Direction, FlowCounter, IPPROTO_TCP, IPPROTO_UDP, Limits, RunStats,
        enable_run_time_stats,
    },
};
use libraflux_tests::{
    VethPair,
    frames::{self, TCP_ACK, TCP_SYN, arp, frame, tcp, udp},
};

const USAGE: &str = "usage: ebpf-bench pps [--rounds R] [--seconds S] [--payload BYTES] [--pin 1] | run [--repeat N] | maps [--destinations N] [--iterations K] \
                     | ipvs [--services N] [--iterations K]";
const PORT: u16 = 9000;
const PAYLOAD: [u8; 18] = *b"libraflux-bench-18";
/// The largest `--payload`: a datagram that fits a 1500-byte MTU.
const MAX_PAYLOAD: u32 = 1472;

struct Options {
    mode: String,
    rounds: u32,
    seconds: u64,
    count: u32,
    iterations: u32,
    /// pps: UDP payload bytes.
    payload: usize,
    /// pps: the sender on CPU 0 and the receiver on CPU 1 (`--pin 1`), instead of where the
    /// scheduler puts them.
    pin: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    let mut options = Options {
        mode,
        rounds: 6,
        seconds: 5,
        count: 10_000,
        iterations: 10,
        payload: PAYLOAD.len(),
        pin: false,
    };
    while let Some(arg) = args.next() {
        let text = args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        let number = text.parse::<u32>().map_err(|_| format!("{arg}: {text:?} is not a number"))?;
        match arg.as_str() {
            "--rounds" => options.rounds = number.clamp(1, 100),
            "--seconds" => options.seconds = u64::from(number.clamp(1, 60)),
            "--destinations" | "--services" => options.count = number.clamp(1, 100_000),
            "--iterations" => options.iterations = number.clamp(1, 1000),
            "--repeat" => options.count = number.clamp(1, 100_000_000),
            "--payload" => options.payload = number.clamp(1, MAX_PAYLOAD) as usize,
            "--pin" => options.pin = number != 0,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn enter(netns: &str) -> Result<(), String> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).map_err(|err| format!("{path}: {err}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Binds the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; sched_setaffinity
    // with pid 0 changes only the calling thread and reads `set`.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(format!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One round: the sender floods for `seconds`; returns (sent, received). With `pin`, the
/// sender runs on CPU 0 and the receiver on CPU 1: left to the scheduler on a host with other
/// busy processes, both sometimes share one CPU, which made single rounds differ by up to 20 %
/// (docs/benchmarks.md, issue 22 item 2).
fn round(
    pair: &VethPair,
    receiver: &Arc<UdpSocket>,
    seconds: u64,
    payload: usize,
    pin: bool,
) -> Result<(u64, u64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = {
        let (receiver, stop) = (Arc::clone(receiver), Arc::clone(&stop));
        std::thread::spawn(move || {
            if pin {
                pin_to(1)?;
            }
            let mut buf = [0u8; 2048];
            let mut received = 0u64;
            // Reads until the sender has stopped and the socket has been quiet for 200 ms.
            loop {
                match receiver.recv(&mut buf) {
                    Ok(_) => received += 1,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            Ok::<_, String>(received)
        })
    };
    let datagram: Vec<u8> = PAYLOAD.iter().copied().cycle().take(payload).collect();
    let sender = pair.left.spawn(move || {
        if pin {
            pin_to(0)?;
        }
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        socket.connect((VethPair::RIGHT_V4, PORT)).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut sent = 0u64;
        // Bounded by time; checked every 256 datagrams.
        while Instant::now() < deadline {
            for _ in 0..256 {
                if socket.send(&datagram).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok::<_, String>(sent)
    });
    let sent = sender.join().map_err(|_| "sender panicked")??;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let received = counting.join().map_err(|_| "receiver panicked")??;
    Ok((sent, received))
}

/// What is attached at the receiving side's ingress during a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attached {
    Nothing,
    /// `FlowCounter::load_reference`: a TC program that does nothing.
    Reference,
    Counter,
}

impl Attached {
    const fn name(self) -> &'static str {
        match self {
            Self::Nothing => "off",
            Self::Reference => "reference",
            Self::Counter => "counter",
        }
    }
}

/// The states in a mirrored order, so that a steady drift over a block cancels.
const ROUND_ORDER: [Attached; 6] = [
    Attached::Nothing,
    Attached::Reference,
    Attached::Counter,
    Attached::Counter,
    Attached::Reference,
    Attached::Nothing,
];

fn pps(options: &Options) -> Result<(), String> {
    let pair = VethPair::new();
    // This thread (and the receiver threads it spawns) live in the receiving namespace.
    enter(pair.right.name())?;
    let receiver = UdpSocket::bind((VethPair::RIGHT_V4.parse::<Ipv4Addr>().expect("v4"), PORT))
        .map_err(|err| format!("bind: {err}"))?;
    receiver.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads an int from a valid pointer.
    unsafe {
        libc::setsockopt(
            receiver.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let receiver = Arc::new(receiver);
    let mut counter = FlowCounter::load(Limits::destinations(16)).map_err(|e| format!("{e:#?}"))?;
    let key = DestKey::ipv4(VethPair::RIGHT_V4.parse::<Ipv4Addr>().expect("v4").octets(), PORT, IPPROTO_UDP);
    counter.watch(key).map_err(|e| e.to_string())?;
    let mut reference = FlowCounter::load_reference().map_err(|e| format!("{e:#?}"))?;
    println!(
        "pps: {} rounds of {} s, {}-byte UDP payloads, veth {} -> {}{}",
        options.rounds * 3,
        options.seconds,
        options.payload,
        VethPair::LEFT_IF,
        VethPair::RIGHT_IF,
        if options.pin { ", sender on CPU 0, receiver on CPU 1" } else { "" }
    );
    println!(
        "{:<6} {:<9} {:>12} {:>12} {:>12} {:>8}",
        "round", "program", "sent", "received", "rx pps", "drop %"
    );
    let mut rates: BTreeMap<Attached, Vec<f64>> = BTreeMap::new();
    let mut in_order: Vec<(Attached, f64)> = Vec::new();
    let mut counted_total = 0u64;
    let mut received_with_counter = 0u64;
    for index in 0..options.rounds as usize * 3 {
        // A steady drift of the machine's speed over the run weighs on every state alike.
        let state = ROUND_ORDER[index % ROUND_ORDER.len()];
        let program = match state {
            Attached::Nothing => None,
            Attached::Reference => Some(&mut reference),
            Attached::Counter => Some(&mut counter),
        };
        if let Some(program) = program {
            program.attach(VethPair::RIGHT_IF, Direction::Ingress).map_err(|e| format!("{e:#?}"))?;
        }
        let before = counter.counters().map_err(|e| e.to_string())?.get(&key).map_or(0, |c| c.packets);
        let (sent, received) = round(&pair, &receiver, options.seconds, options.payload, options.pin)?;
        let after = counter.counters().map_err(|e| e.to_string())?.get(&key).map_or(0, |c| c.packets);
        if state == Attached::Counter {
            counted_total += after - before;
            received_with_counter += received;
        } else if after != before {
            return Err(format!("the counter counted {} packets while not attached", after - before));
        }
        counter.detach(VethPair::RIGHT_IF, Direction::Ingress).map_err(|e| e.to_string())?;
        reference.detach(VethPair::RIGHT_IF, Direction::Ingress).map_err(|e| e.to_string())?;
        let rate = received as f64 / options.seconds as f64;
        rates.entry(state).or_default().push(rate);
        in_order.push((state, rate));
        let drop = 100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64;
        println!("{:<6} {:<9} {sent:>12} {received:>12} {rate:>12.0} {drop:>8.2}", index + 1, state.name());
    }
    let mean = |state: Attached| {
        let v = &rates[&state];
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (off, reference_pps, on) =
        (mean(Attached::Nothing), mean(Attached::Reference), mean(Attached::Counter));
    let loss = |with: f64, without: f64| 100.0 * (without - with) / without;
    let (total, hook, own) = (loss(on, off), loss(reference_pps, off), loss(on, reference_pps));
    println!(
        "mean rx pps: nothing attached {off:.0}, reference (a TC program that does nothing) {reference_pps:.0}, counter {on:.0}"
    );
    println!(
        "throughput loss: counter {total:.2} % (any TC program: {hook:.2} %; the counter over it: {own:.2} %)"
    );
    let cycles = CycleShares::of(&in_order);
    if let Some(cycles) = &cycles {
        println!(
            "the counter over the reference, per mirrored cycle ({} cycles): mean {:.2} %, sd {:.2}, 95 % interval \
             of the mean {:.2}..{:.2}, range {:.2}..{:.2}",
            cycles.count, cycles.mean, cycles.sd, cycles.low, cycles.high, cycles.min, cycles.max
        );
    }
    println!(
        "counter saw {counted_total} packets in the attached rounds; the receiver got {received_with_counter}"
    );
    // One more round each for the counter and the reference with the kernel's own accounting of
    // time spent in the program: per-packet costs without the noise of the throughput figures.
    // The accounting (two clock reads per run) is in both figures, and slows packets down, so
    // these rounds are not among the throughput figures.
    let _stats = enable_run_time_stats().map_err(|e| format!("{e:#?}"))?;
    let timed = |program: &mut FlowCounter| -> Result<f64, String> {
        program.attach(VethPair::RIGHT_IF, Direction::Ingress).map_err(|e| format!("{e:#?}"))?;
        let before = program.run_stats().map_err(|e| e.to_string())?;
        round(&pair, &receiver, options.seconds, options.payload, options.pin)?;
        let after = program.run_stats().map_err(|e| e.to_string())?;
        program.detach(VethPair::RIGHT_IF, Direction::Ingress).map_err(|e| e.to_string())?;
        Ok(per_run_ns(before, after))
    };
    let program_ns = timed(&mut counter)?;
    let reference_ns = timed(&mut reference)?;
    println!(
        "run time per packet (kernel statistics, one extra round each): counter {program_ns:.1} ns, \
         reference {reference_ns:.1} ns, the counter's own {:.1} ns",
        program_ns - reference_ns
    );
    println!(
        "EBPF_PPS off_pps={off:.0} reference_pps={reference_pps:.0} on_pps={on:.0} loss_pct={total:.2} \
         reference_loss_pct={hook:.2} own_loss_pct={own:.2} counted={counted_total} received={received_with_counter} \
         program_ns={program_ns:.1} reference_ns={reference_ns:.1}{}",
        cycles.map_or(String::new(), |c| format!(
            " cycle_mean_pct={:.2} cycle_sd={:.2} cycle_low_pct={:.2} cycle_high_pct={:.2}",
            c.mean, c.sd, c.low, c.high
        ))
    );
    if counted_total < received_with_counter {
        return Err("the counter saw fewer packets than the receiver got".to_owned());
    }
    Ok(())
}

/// The counter's share of rx pps over the reference's in each mirrored cycle of
/// [`ROUND_ORDER`] (from the cycle's two rounds of each), summarised over the cycles: a cycle's
/// rounds are minutes apart at most, so the host's drift weighs less on it than on the run's
/// pooled means.
struct CycleShares {
    count: usize,
    mean: f64,
    sd: f64,
    /// The 95 % interval of the mean (Student's t).
    low: f64,
    high: f64,
    min: f64,
    max: f64,
}

impl CycleShares {
    /// `None` with fewer than two whole cycles.
    fn of(rounds: &[(Attached, f64)]) -> Option<Self> {
        let mean_of = |cycle: &[(Attached, f64)], state: Attached| {
            let rates: Vec<f64> = cycle.iter().filter(|(s, _)| *s == state).map(|(_, rate)| *rate).collect();
            rates.iter().sum::<f64>() / rates.len() as f64
        };
        let shares: Vec<f64> = rounds
            .chunks_exact(ROUND_ORDER.len())
            .map(|cycle| {
                let reference = mean_of(cycle, Attached::Reference);
                100.0 * (reference - mean_of(cycle, Attached::Counter)) / reference
            })
            .collect();
        let count = shares.len();
        if count < 2 {
            return None;
        }
        let mean = shares.iter().sum::<f64>() / count as f64;
        let sd = (shares.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1) as f64).sqrt();
        let half = t_975(count - 1) * sd / (count as f64).sqrt();
        let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self { count, mean, sd, low: mean - half, high: mean + half, min, max })
    }
}

/// The 97.5 % quantile of Student's t with `df` degrees of freedom (two-sided 95 %).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    TABLE.get(df.saturating_sub(1)).copied().unwrap_or(1.96)
}

/// Mean nanoseconds per program run between two readings.
fn per_run_ns(before: RunStats, after: RunStats) -> f64 {
    let runs = after.run_count.saturating_sub(before.run_count).max(1);
    after.run_time.saturating_sub(before.run_time).as_nanos() as f64 / runs as f64
}

fn timed<T>(iterations: u32, mut f: impl FnMut() -> Result<T, String>) -> Result<(Vec<Duration>, T), String> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..iterations {
        let started = Instant::now();
        last = Some(f()?);
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok((times, last.expect("at least one iteration")))
}

fn summary(name: &str, count: u32, times: &[Duration]) -> f64 {
    let median = times[times.len() / 2].as_secs_f64();
    println!(
        "{name}: {count} entries, {} reads: min {:.3} ms, median {:.3} ms, max {:.3} ms ({:.2} us per entry)",
        times.len(),
        times[0].as_secs_f64() * 1e3,
        median * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        median * 1e6 / f64::from(count)
    );
    median
}

fn run(options: &Options) -> Result<(), String> {
    let (client4, vip4): (IpAddr, IpAddr) =
        ("192.0.2.10".parse().expect("v4"), "198.51.100.1".parse().expect("v4"));
    let (client6, vip6): (IpAddr, IpAddr) =
        ("2001:db8::10".parse().expect("v6"), "2001:db8:1::1".parse().expect("v6"));
    let mut counter = FlowCounter::load(Limits::destinations(16)).map_err(|e| format!("{e:#?}"))?;
    for (vip, proto) in [(vip4, IPPROTO_UDP), (vip4, IPPROTO_TCP), (vip6, IPPROTO_UDP)] {
        counter.watch(DestKey::new(vip, PORT, proto)).map_err(|e| e.to_string())?;
    }
    let other4: IpAddr = "198.51.100.2".parse().expect("v4");
    let datagram = udp(40000, PORT, &PAYLOAD);
    let tagged = frames::tagged(&frame(client4, vip4, IPPROTO_UDP, &datagram), &[(frames::ETH_P_8021Q, 100)]);
    // A backend's reply through the node: its destination (the client) is not watched.
    let reply = |flags| frame(other4, client4, IPPROTO_TCP, &tcp(PORT, 40000, flags));
    // The same from a NAT backend whose connection outcomes are tracked: counted as answered.
    let backend4: IpAddr = "198.51.100.3".parse().expect("v4");
    counter
        .track(DestKey::new(backend4, PORT, IPPROTO_TCP), ConnectSide::Replies)
        .map_err(|e| e.to_string())?;
    let answer = frame(backend4, client4, IPPROTO_TCP, &tcp(PORT, 40000, TCP_SYN | TCP_ACK));
    let cases: [(&str, Vec<u8>); 10] = [
        ("ARP (not IP: the floor)", arp()),
        ("IPv4 UDP, unwatched destination", frame(client4, other4, IPPROTO_UDP, &datagram)),
        ("IPv4 UDP, watched, known flow", frame(client4, vip4, IPPROTO_UDP, &datagram)),
        ("IPv4 UDP in an 802.1Q tag, watched, known flow", tagged),
        ("IPv4 TCP ACK, watched", frame(client4, vip4, IPPROTO_TCP, &tcp(40000, PORT, TCP_ACK))),
        ("IPv4 TCP ACK, unwatched (a reply)", reply(TCP_ACK)),
        ("IPv4 TCP SYN-ACK, unwatched (a reply)", reply(TCP_SYN | TCP_ACK)),
        ("IPv4 TCP SYN-ACK from a tracked NAT backend", answer),
        ("IPv6 UDP, unwatched destination", frame(client6, client6, IPPROTO_UDP, &datagram)),
        ("IPv6 UDP, watched, known flow", frame(client6, vip6, IPPROTO_UDP, &datagram)),
    ];
    println!(
        "run: BPF_PROG_TEST_RUN, {} runs per case (mean ns per run as the kernel timed it)",
        options.count
    );
    for (name, frame) in &cases {
        counter.test_run(frame, 1).map_err(|e| e.to_string())?;
        let per_run = counter.test_run(frame, options.count).map_err(|e| e.to_string())?;
        println!("{name:<48} {:>6} ns", per_run.as_nanos());
        let tag: String = name.split(',').next().unwrap_or(name).replace([' ', '(', ':', ')'], "_");
        println!("EBPF_RUN case={tag} ns={}", per_run.as_nanos());
    }
    let parse_errors = counter.parse_errors().map_err(|e| e.to_string())?;
    if parse_errors != 0 {
        return Err(format!("{parse_errors} frames were not parsed"));
    }
    Ok(())
}

fn maps(options: &Options) -> Result<(), String> {
    let mut counter =
        FlowCounter::load(Limits::destinations(options.count)).map_err(|e| format!("{e:#?}"))?;
    for index in 0..options.count {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + index + 1);
        counter.watch(DestKey::ipv4(addr.octets(), 8080, IPPROTO_UDP)).map_err(|e| e.to_string())?;
    }
    let (times, read) = timed(options.iterations, || counter.counters().map_err(|e| e.to_string()))?;
    if read.len() != options.count as usize {
        return Err(format!("counters() returned {} entries, not {}", read.len(), options.count));
    }
    let median = summary("FlowCounter::counters()", options.count, &times);
    println!("EBPF_MAPS destinations={} median_s={median:.6}", options.count);
    Ok(())
}

fn ipvs(options: &Options) -> Result<(), String> {
    // SAFETY: unshare moves only this (main) thread, before the runtime's threads exist.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare: {}", std::io::Error::last_os_error()));
    }
    let status = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
    if !status.is_ok_and(|s| s.success()) {
        return Err("ip link set lo up failed".to_owned());
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = IpvsClient::connect().await.map_err(|e| e.to_string())?;
        let mut ops = Vec::new();
        for index in 0..options.count {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + index + 1);
            let rip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + index + 1);
            let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: IpAddr::V4(vip), port: 80 };
            ops.push(Op::AddService(Service {
                key,
                scheduler: "rr".to_owned(),
                persistence: None,
                persistence_netmask: None,
                destinations: BTreeMap::new(),
            }));
            ops.push(Op::AddDest(
                key,
                Destination {
                    key: IpvsDest::new(IpAddr::V4(rip), 8080),
                    weight: 1,
                    forwarding: Forwarding::Nat,
                    upper_threshold: 0,
                    lower_threshold: 0,
                },
            ));
        }
        client.apply_ops(&ops, OnFailure::Stop).await.into_result().map_err(|e| e.to_string())?;
        let mut times = Vec::new();
        for _ in 0..options.iterations {
            let started = Instant::now();
            let listed = client.list_services().await.map_err(|e| e.to_string())?;
            times.push(started.elapsed());
            let dests: usize = listed.iter().map(|s| s.destinations.len()).sum();
            if listed.len() != options.count as usize || dests != options.count as usize {
                return Err(format!("list_services() found {} services, {dests} destinations", listed.len()));
            }
        }
        times.sort_unstable();
        let median = summary("IpvsClient::list_services()", options.count, &times);
        println!("EBPF_IPVS services={} median_s={median:.6}", options.count);
        Ok(())
    })
}

fn main() {
    let options = parse_options().unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    let result = match options.mode.as_str() {
        "pps" => pps(&options),
        "run" => run(&options),
        "maps" => maps(&options),
        "ipvs" => ipvs(&options),
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    };
    if let Err(err) = result {
        eprintln!("ebpf-bench: {err}");
        std::process::exit(1);
    }
}
