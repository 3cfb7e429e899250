//! The IPVS programming benchmark: LibraFlux's netlink client against `ipvsadm` on the same
//! table, in the same boot. Run inside the VM (real IPVS, root) through
//! `cargo xtask bench ipvs`; see docs/benchmarks.md.
//!
//! Each side works in a fresh network namespace (IPVS tables are per namespace): this process
//! unshares its network namespace before each side, and the `ipvsadm` children inherit it.
//! The table is N services `tcp:VIP:80`, scheduler `wrr`, each with M NAT destinations
//! `RIP:8080` of weights 1..=100; every VIP and RIP is distinct.
//!
//! Timings are wall-clock (`Instant`) around our client's calls and around whole `ipvsadm`
//! processes. Correctness is checked in the same run; a mismatch makes the run fail.

use std::{
    fmt::Write as _,
    fs::File,
    net::{IpAddr, Ipv4Addr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::bench::{check, sorted_lines};

use libraflux::{
    ipvs::{IpvsClient, OnFailure, Op},
    model::{DestKey, Destination, Forwarding, Protocol, Service, ServiceKey},
};

const USAGE: &str = "usage: ipvs-bench [--services N] [--backends M] [--max-requests R] [--max-bytes B] \
                     [--max-dumps D] [--no-reference] [--work-dir DIR]";

#[derive(Debug)]
struct Options {
    services: u32,
    backends: u32,
    max_requests: Option<usize>,
    max_bytes: Option<usize>,
    max_dumps: Option<usize>,
    reference: bool,
    work_dir: String,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        services: 10_000,
        backends: 10,
        max_requests: None,
        max_bytes: None,
        max_dumps: None,
        reference: true,
        work_dir: "/tmp".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        let number =
            |text: String| text.parse::<usize>().map_err(|_| format!("{arg}: {text:?} is not a number"));
        match arg.as_str() {
            "--services" => {
                options.services = number(value()?)?.try_into().map_err(|_| "too many services")?
            }
            "--backends" => {
                options.backends = number(value()?)?.try_into().map_err(|_| "too many backends")?
            }
            "--max-requests" => options.max_requests = Some(number(value()?)?),
            "--max-bytes" => options.max_bytes = Some(number(value()?)?),
            "--max-dumps" => options.max_dumps = Some(number(value()?)?),
            "--no-reference" => options.reference = false,
            "--work-dir" => options.work_dir = value()?,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    if options.services == 0 || options.backends == 0 {
        return Err("--services and --backends must be at least 1".to_owned());
    }
    // VIPs come from 10.0.0.0/8 and RIPs from 172.16.0.0/12, one address each.
    if options.services >= 1 << 24 || u64::from(options.services) * u64::from(options.backends) >= 1 << 20 {
        return Err("at most 2^24 services and 2^20 destinations in all".to_owned());
    }
    Ok(options)
}

/// The benchmark table, as our ops and as an `ipvsadm -R` file, from the same numbers.
struct Table {
    services: Vec<Service>,
}

impl Table {
    fn new(services: u32, backends: u32) -> Self {
        let services = (0..services)
            .map(|index| {
                let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + index + 1);
                let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: IpAddr::V4(vip), port: 80 };
                let destinations = (0..backends)
                    .map(|backend| {
                        let serial = index * backends + backend;
                        let rip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + serial + 1);
                        let dest = Destination {
                            key: DestKey::new(IpAddr::V4(rip), 8080),
                            weight: serial % 100 + 1,
                            forwarding: Forwarding::Nat,
                            upper_threshold: 0,
                            lower_threshold: 0,
                        };
                        (dest.key, dest)
                    })
                    .collect();
                Service {
                    key,
                    scheduler: "wrr".to_owned(),
                    persistence: None,
                    persistence_netmask: None,
                    destinations,
                }
            })
            .collect();
        Self { services }
    }

    fn destinations(&self) -> usize {
        self.services.iter().map(|service| service.destinations.len()).sum()
    }

    fn program_ops(&self) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.services.len() + self.destinations());
        for service in &self.services {
            ops.push(Op::AddService(Service { destinations: Default::default(), ..service.clone() }));
            ops.extend(service.destinations.values().map(|dest| Op::AddDest(service.key, *dest)));
        }
        ops
    }

    fn delete_ops(&self) -> Vec<Op> {
        self.services.iter().map(|service| Op::DeleteService(service.key)).collect()
    }

    /// `ipvsadm -R` input; also exactly what `ipvsadm-save -n` prints for this table.
    fn restore_file(&self) -> String {
        let mut text = String::new();
        for service in &self.services {
            let vip = vip_port(&service.key);
            let _ = writeln!(text, "-A -t {vip} -s {}", service.scheduler);
            for dest in service.destinations.values() {
                let _ = writeln!(text, "-a -t {vip} -r {} -m -w {}", dest.key, dest.weight);
            }
        }
        text
    }

    fn delete_file(&self) -> String {
        self.services.iter().map(|service| format!("-D -t {}\n", vip_port(&service.key))).collect()
    }
}

fn vip_port(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr { addr, port, .. } => DestKey::new(*addr, *port).to_string(),
        ServiceKey::Fwmark { .. } => unreachable!("the benchmark table has address services only"),
    }
}

/// One timed step: what was done, how many items (ops, commands, listed objects), how long.
struct Figure {
    name: &'static str,
    items: usize,
    elapsed: Duration,
}

impl Figure {
    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }

    fn rate(&self) -> f64 {
        self.items as f64 / self.seconds().max(1e-9)
    }
}

fn fresh_namespace() -> Result<(), String> {
    // SAFETY: unshare has no memory-safety preconditions; it moves only this (main) thread,
    // whose children (`ipvsadm`) inherit the new namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {} (run as root)", std::io::Error::last_os_error()));
    }
    // A namespace whose loopback is down has no local routing table, and then the kernel
    // refuses every destination address (inet_addr_type is not unicast): EINVAL.
    let status = Command::new("ip").args(["link", "set", "lo", "up"]).status();
    match status {
        Ok(status) if status.success() => Ok(()),
        other => Err(format!("ip link set lo up: {other:?}")),
    }
}

/// Runs a command with stdin/stdout from/to files, and times the whole process.
fn timed_command(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    stdout: Option<&str>,
) -> Result<Duration, String> {
    let mut command = Command::new(program);
    command.args(args).stderr(Stdio::inherit());
    command.stdin(match stdin {
        Some(path) => File::open(path).map_err(|err| format!("{path}: {err}"))?.into(),
        None => Stdio::null(),
    });
    command.stdout(match stdout {
        Some(path) => File::create(path).map_err(|err| format!("{path}: {err}"))?.into(),
        None => Stdio::null(),
    });
    let started = Instant::now();
    let status = command.status().map_err(|err| format!("cannot run {program}: {err}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(format!("{program} {} failed: {status}", args.join(" ")));
    }
    Ok(elapsed)
}

fn save_sorted(work_dir: &str, name: &str) -> Result<Vec<String>, String> {
    let path = format!("{work_dir}/{name}");
    timed_command("ipvsadm-save", &["-n"], None, Some(&path))?;
    let text = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    Ok(sorted_lines(&text))
}

/// Programs the whole table with our client in one apply; the figure, or the first failure.
async fn program(client: &mut IpvsClient, ops: &[Op], name: &'static str) -> Result<Figure, String> {
    let started = Instant::now();
    let report = client.apply_ops(ops, OnFailure::Stop).await;
    let elapsed = started.elapsed();
    let applied = report.applied();
    report
        .into_result()
        .map_err(|err| format!("{name}: {applied} of {} ops applied, then: {err}", ops.len()))?;
    Ok(Figure { name, items: ops.len(), elapsed })
}

/// Our client, with the batch limits the options override.
async fn connect(options: &Options) -> Result<IpvsClient, String> {
    let mut client = IpvsClient::connect().await.map_err(|err| err.to_string())?;
    let mut limits = client.batch_limits();
    limits.max_requests = options.max_requests.unwrap_or(limits.max_requests);
    limits.max_bytes = options.max_bytes.unwrap_or(limits.max_bytes);
    limits.max_dumps = options.max_dumps.unwrap_or(limits.max_dumps);
    client.set_batch_limits(limits);
    Ok(client)
}

async fn ours(options: &Options, table: &Table, expected: &[String]) -> Result<Vec<Figure>, String> {
    fresh_namespace()?;
    let mut client = connect(options).await?;
    println!("ours: batch limits {:?}", client.batch_limits());
    let program_ops = table.program_ops();
    let delete_ops = table.delete_ops();
    let objects = table.services.len() + table.destinations();
    let mut figures = Vec::new();

    figures.push(program(&mut client, &program_ops, "program").await?);
    {
        let saved = save_sorted(&options.work_dir, "ours.save")?;
        check(saved == expected, || {
            let first = saved.iter().zip(expected).find(|(a, b)| a != b);
            format!(
                "ipvsadm-save -n after our programming differs from the restore file \
                 ({} vs {} lines; first difference {first:?})",
                saved.len(),
                expected.len()
            )
        })?;
        println!("ours: verified, ipvsadm-save -n equals the restore file (both sorted)");
    }

    let started = Instant::now();
    let listed = client.list_services().await.map_err(|err| err.to_string())?;
    let elapsed = started.elapsed();
    figures.push(Figure { name: "dump", items: objects, elapsed });
    let listed_dests: usize = listed.iter().map(|status| status.destinations.len()).sum();
    check(listed.len() == table.services.len() && listed_dests == table.destinations(), || {
        format!("our dump found {} services and {listed_dests} destinations", listed.len())
    })?;
    let same = listed.iter().zip(&table.services).all(|(status, service)| {
        status.service.key == service.key
            && status.service.scheduler == service.scheduler
            && status
                .destinations
                .values()
                .map(|dest| dest.destination)
                .eq(service.destinations.values().copied())
    });
    check(same, || "our dump differs from the programmed table".to_owned())?;
    println!(
        "ours: verified, the dump holds {} services and {listed_dests} destinations as programmed",
        listed.len()
    );

    // What a no-op `libraflux apply` of this table costs beyond config loading: read the
    // table and plan against the identical desired state; the plan must be empty.
    let desired: std::collections::BTreeMap<_, _> =
        table.services.iter().map(|service| (service.key, service.clone())).collect();
    let started = Instant::now();
    let observed = libraflux::ipvs::observed(&mut client).await.map_err(|err| err.to_string())?;
    let noop = libraflux::plan::plan(&desired, &observed, &libraflux::config::Ignore::default());
    let elapsed = started.elapsed();
    check(noop.is_empty(), || "a plan against the identical table is not empty".to_owned())?;
    figures.push(Figure { name: "noop-apply", items: objects, elapsed });
    println!("ours: verified, planning against the identical table yields no changes");

    let started = Instant::now();
    let report = client.apply_ops(&delete_ops, OnFailure::Stop).await;
    let elapsed = started.elapsed();
    report.into_result().map_err(|err| format!("delete: {err}"))?;
    figures.push(Figure { name: "delete", items: delete_ops.len(), elapsed });
    let left = client.list_services().await.map_err(|err| err.to_string())?;
    check(left.is_empty(), || format!("{} services left after deleting them all", left.len()))?;

    // FLUSH needs a full table again, in a fresh namespace: the kernel keeps deleted
    // destinations in a per-namespace trash list for a while and searches it on every add, so
    // refilling the same namespace would be quadratic. Timed too: a second programming sample.
    drop(client);
    fresh_namespace()?;
    let mut client = connect(options).await?;
    figures.push(program(&mut client, &program_ops, "program (again)").await?);
    let started = Instant::now();
    client.flush().await.map_err(|err| err.to_string())?;
    figures.push(Figure { name: "flush", items: 1, elapsed: started.elapsed() });
    let left = client.list_services().await.map_err(|err| err.to_string())?;
    check(left.is_empty(), || format!("{} services left after FLUSH", left.len()))?;
    Ok(figures)
}

async fn reference(options: &Options, table: &Table, expected: &[String]) -> Result<Vec<Figure>, String> {
    fresh_namespace()?;
    let dir = &options.work_dir;
    let restore = format!("{dir}/ipvs-bench.restore");
    let delete = format!("{dir}/ipvs-bench.delete");
    std::fs::write(&restore, table.restore_file()).map_err(|err| format!("{restore}: {err}"))?;
    std::fs::write(&delete, table.delete_file()).map_err(|err| format!("{delete}: {err}"))?;
    let commands = table.services.len() + table.destinations();
    let mut figures = Vec::new();

    let elapsed = timed_command("ipvsadm", &["-R"], Some(&restore), None)?;
    figures.push(Figure { name: "program", items: commands, elapsed });
    let saved_path = format!("{dir}/reference.save");
    let elapsed = timed_command("ipvsadm-save", &["-n"], None, Some(&saved_path))?;
    figures.push(Figure { name: "dump", items: commands, elapsed });
    let saved = sorted_lines(&std::fs::read_to_string(&saved_path).map_err(|err| err.to_string())?);
    check(saved == expected, || "ipvsadm-save -n after ipvsadm -R differs from the restore file".to_owned())?;
    println!("ipvsadm: verified, ipvsadm-save -n equals the restore file (both sorted)");

    let elapsed = timed_command("ipvsadm", &["-R"], Some(&delete), None)?;
    figures.push(Figure { name: "delete", items: table.services.len(), elapsed });
    check(save_sorted(dir, "reference.save")?.is_empty(), || {
        "services left after ipvsadm -R of -D lines".to_owned()
    })?;

    // `ipvsadm -C` needs a full table again: programmed, untimed, by our client (same table),
    // in a fresh namespace (see the trash list above).
    fresh_namespace()?;
    let mut client = IpvsClient::connect().await.map_err(|err| err.to_string())?;
    program(&mut client, &table.program_ops(), "refill").await?;
    drop(client);
    let elapsed = timed_command("ipvsadm", &["-C"], None, None)?;
    figures.push(Figure { name: "flush", items: 1, elapsed });
    check(save_sorted(dir, "reference.save")?.is_empty(), || "services left after ipvsadm -C".to_owned())?;
    Ok(figures)
}

fn print_results(options: &Options, table: &Table, ours: &[Figure], reference: &[Figure]) {
    let find = |figures: &[Figure], name: &str| {
        figures.iter().find(|figure| figure.name == name).map(Figure::seconds)
    };
    println!();
    println!(
        "IPVS programming benchmark: {} services x {} backends ({} services + {} destinations)",
        options.services,
        options.backends,
        table.services.len(),
        table.destinations()
    );
    println!("{:<10} {:<16} {:>10} {:>10} {:>12}", "side", "step", "items", "seconds", "items/s");
    for (side, figures) in [("ours", ours), ("ipvsadm", reference)] {
        for figure in figures {
            println!(
                "{side:<10} {:<16} {:>10} {:>10.3} {:>12.0}",
                figure.name,
                figure.items,
                figure.seconds(),
                figure.rate()
            );
        }
    }
    let mut line = format!("IPVS_BENCH services={} backends={}", options.services, options.backends);
    for (side, figures) in [("ours", ours), ("ipvsadm", reference)] {
        for figure in figures {
            let name = figure.name.replace(" (again)", "_again");
            let _ = write!(line, " {side}_{name}_s={:.3}", figure.seconds());
        }
    }
    if !reference.is_empty() {
        println!();
        for (step, reference_step) in [
            ("program", "program"),
            ("dump", "dump"),
            ("noop-apply", "dump"),
            ("delete", "delete"),
            ("flush", "flush"),
        ] {
            if let (Some(a), Some(b)) = (find(ours, step), find(reference, reference_step)) {
                println!("ratio ours/ipvsadm {step:<10} {:.3}", a / b);
                let _ = write!(line, " ratio_{}={:.3}", step.replace('-', "_"), a / b);
            }
        }
    }
    println!("{line}");
}

fn main() {
    let options = parse_options().unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let table = Table::new(options.services, options.backends);
    let expected = sorted_lines(&table.restore_file());
    let result = runtime.block_on(async {
        let ours = ours(&options, &table, &expected).await?;
        let reference =
            if options.reference { reference(&options, &table, &expected).await? } else { Vec::new() };
        Ok::<_, String>((ours, reference))
    });
    match result {
        Ok((ours, reference)) => print_results(&options, &table, &ours, &reference),
        Err(err) => {
            eprintln!("ipvs-bench: {err}");
            std::process::exit(1);
        }
    }
}
