//! The backends: one TCP listener per port on one address, in a child process (the driver's own
//! binary, mode `listen`) that accepts and closes every connection. Some backends may flap on a
//! fixed schedule: their listener goes away (connections are refused) for half of a period and
//! comes back for the other half, each at its own offset, so that the transitions are spread
//! evenly over time rather than arriving in bursts.

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::Ipv4Addr,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{net::TcpListener, sync::watch, time::Instant};

/// The listener exits on its own after this long, whatever happens to its parent.
const LIFETIME: Duration = Duration::from_secs(3600);

/// `count` TCP backends on `address`, ports from `first_port` up.
#[derive(Clone, Copy, Debug)]
pub struct Backends {
    pub address: Ipv4Addr,
    pub first_port: u16,
    pub count: u32,
}

impl Backends {
    pub fn port(&self, index: u32) -> u16 {
        self.first_port + u16::try_from(index).expect("backend index fits a port")
    }
}

/// Which backends flap, and when: every `every`-th of the first `count` backends (index 0,
/// every, 2 x every, ...); the one of rank r goes away at r / flappers of the period after the flapping starts, then
/// every period, and comes back half a period after each going away.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flapping {
    pub count: u32,
    pub every: u32,
    pub period: Duration,
    pub flappers: u32,
}

/// Where a flapping backend is in its schedule: up or down, and for how long already.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    pub up: bool,
    pub since: Duration,
}

impl Flapping {
    /// Every `every`-th of the first `count` backends flaps with `period`.
    pub fn new(count: u32, every: u32, period: Duration) -> Self {
        let every = every.max(1);
        Self { count, every, period, flappers: count.div_ceil(every) }
    }

    /// The flapping rank of backend `index`, if it flaps.
    pub fn rank(&self, index: u32) -> Option<u32> {
        (index < self.count && index.is_multiple_of(self.every)).then_some(index / self.every)
    }

    fn offset(&self, rank: u32) -> Duration {
        self.period.mul_f64(f64::from(rank) / f64::from(self.flappers.max(1)))
    }

    /// Where the backend of `rank` is `elapsed` after the flapping started. Before its first
    /// going away it has been up since long before the start.
    pub fn phase(&self, rank: u32, elapsed: Duration) -> Phase {
        let offset = self.offset(rank);
        let Some(into) = elapsed.checked_sub(offset) else {
            return Phase { up: true, since: Duration::from_secs(86_400) + elapsed };
        };
        let within =
            Duration::from_nanos(u64::try_from(into.as_nanos() % self.period.as_nanos()).unwrap_or(0));
        let half = self.period / 2;
        match within.checked_sub(half) {
            None => Phase { up: false, since: within },
            Some(since) => Phase { up: true, since },
        }
    }
}

/// The listener child; killed when dropped.
#[derive(Debug)]
pub struct Listener {
    child: Child,
    stdin: ChildStdin,
}

impl Listener {
    /// Starts `EXE listen ...` and waits until every port is bound.
    pub fn start(backends: Backends, flapping: Option<Flapping>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|err| err.to_string())?;
        let mut args = vec![
            "listen".to_owned(),
            backends.address.to_string(),
            backends.first_port.to_string(),
            backends.count.to_string(),
        ];
        if let Some(flapping) = flapping {
            args.extend([
                flapping.count.to_string(),
                flapping.every.to_string(),
                flapping.period.as_millis().to_string(),
            ]);
        }
        let mut child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| format!("start the listener: {err}"))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).map_err(|err| err.to_string())? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line);
        if line != format!("LISTENING {}", backends.count) {
            return Err(format!("the listener did not start: {line:?}"));
        }
        println!(
            "listener: {} ports bound on {} from {}",
            backends.count, backends.address, backends.first_port
        );
        let stdin = child.stdin.take().expect("piped stdin");
        Ok(Self { child, stdin })
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Starts the flapping schedule now; returns when it started, as the listener counts it.
    pub fn start_flapping(&mut self) -> Result<std::time::Instant, String> {
        let now = std::time::Instant::now();
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis();
        writeln!(self.stdin, "flap {unix_ms}").map_err(|err| format!("tell the listener to flap: {err}"))?;
        self.stdin.flush().map_err(|err| err.to_string())?;
        Ok(now)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `listen` mode: `ADDRESS FIRST_PORT COUNT [FLAP_COUNT EVERY PERIOD_MS]` (see [`Flapping`]). Binds every port, prints
/// `LISTENING COUNT`, and serves until stdin closes (the parent is gone) or the lifetime ends.
/// A line `flap UNIX_MS` on stdin starts the flapping schedule from that time.
pub fn serve(args: &[String]) -> Result<(), String> {
    let number = |index: usize| -> Result<u64, String> {
        let text = args.get(index).ok_or("listen ADDRESS FIRST_PORT COUNT [FLAP_COUNT EVERY PERIOD_MS]")?;
        text.parse().map_err(|_| format!("listen: {text:?} is not a number"))
    };
    let address: Ipv4Addr =
        args.first().ok_or("listen needs an address")?.parse().map_err(|e| format!("{e}"))?;
    let first_port = u16::try_from(number(1)?).map_err(|e| e.to_string())?;
    let count = u32::try_from(number(2)?).map_err(|e| e.to_string())?;
    let backends = Backends { address, first_port, count };
    let flapping = match args.len() {
        6 => {
            let flap_count = u32::try_from(number(3)?).map_err(|e| e.to_string())?;
            let every = u32::try_from(number(4)?).map_err(|e| e.to_string())?;
            Some(Flapping::new(flap_count, every, Duration::from_millis(number(5)?)))
        }
        _ => None,
    };
    super::raise_nofile()?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(listen(backends, flapping))?;
    // The blocking stdin reader may still be parked; leave without waiting for it.
    std::process::exit(0);
}

async fn listen(backends: Backends, flapping: Option<Flapping>) -> Result<(), String> {
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    for index in 0..backends.count {
        let port = backends.port(index);
        let listener = TcpListener::bind((backends.address, port))
            .await
            .map_err(|err| format!("bind {}:{port}: {err}", backends.address))?;
        let rank = flapping.and_then(|f| f.rank(index));
        match (flapping, rank) {
            (Some(flapping), Some(rank)) => {
                tokio::spawn(flap(listener, (backends.address, port), flapping, rank, start_rx.clone()));
            }
            _ => {
                tokio::spawn(serve_until(listener, std::future::pending()));
            }
        }
    }
    println!("LISTENING {}", backends.count);
    std::io::stdout().flush().map_err(|err| err.to_string())?;
    let commands = tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let Some(ms) = line.strip_prefix("flap ").and_then(|ms| ms.trim().parse::<u64>().ok()) else {
                continue;
            };
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let start = Instant::now() - Duration::from_millis(now_ms.saturating_sub(ms));
            start_tx.send_replace(Some(start));
        }
    });
    let _ = tokio::time::timeout(LIFETIME, commands).await;
    Ok(())
}

/// Accepts and closes connections until `until` completes; gives the listener back.
async fn serve_until(listener: TcpListener, until: impl Future<Output = ()>) -> TcpListener {
    tokio::pin!(until);
    loop {
        tokio::select! {
            accepted = listener.accept() => drop(accepted),
            () = &mut until => return listener,
        }
    }
}

/// One flapping backend: serves until the schedule starts, then goes away and comes back.
async fn flap(
    listener: TcpListener,
    address: (Ipv4Addr, u16),
    flapping: Flapping,
    rank: u32,
    mut start: watch::Receiver<Option<Instant>>,
) {
    let listener = serve_until(listener, async {
        let _ = start.wait_for(Option::is_some).await;
    })
    .await;
    let Some(start) = *start.borrow() else {
        // The parent went away before the schedule started: serve until the process ends.
        serve_until(listener, std::future::pending()).await;
        return;
    };
    let mut listener = Some(listener);
    for cycle in 0u32.. {
        let down_at = start + flapping.offset(rank) + flapping.period * cycle;
        let up_at = down_at + flapping.period / 2;
        let bound = match listener.take() {
            Some(bound) => bound,
            None => rebind(address).await,
        };
        drop(serve_until(bound, tokio::time::sleep_until(down_at)).await);
        tokio::time::sleep_until(up_at).await;
        listener = Some(rebind(address).await);
    }
}

/// Binds the port again; a failure is retried, never fatal (the schedule goes on).
async fn rebind(address: (Ipv4Addr, u16)) -> TcpListener {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(err) => {
                eprintln!("listener: rebind {}:{}: {err}; retrying", address.0, address.1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flappers_go_down_at_their_offset_and_alternate_each_half_period() {
        let flapping = Flapping::new(10_000, 20, Duration::from_secs(20));
        assert_eq!(flapping.flappers, 500);
        assert_eq!(flapping.rank(40), Some(2));
        assert_eq!(flapping.rank(41), None);
        // Rank 250 starts at 10 s.
        assert!(flapping.phase(250, Duration::from_secs(9)).up);
        let down = flapping.phase(250, Duration::from_secs(11));
        assert_eq!(down, Phase { up: false, since: Duration::from_secs(1) });
        let up = flapping.phase(250, Duration::from_secs(23));
        assert_eq!(up, Phase { up: true, since: Duration::from_secs(3) });
        assert_eq!(
            flapping.phase(0, Duration::from_secs(41)),
            Phase { up: false, since: Duration::from_secs(1) }
        );
    }
}
