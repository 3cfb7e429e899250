//! The directives of a whole nginx configuration to services: every `server` of `stream {}`
//! with a `proxy_pass` becomes one group (one output file) with one service per `listen`.
//! `http {}` and `mail {}` are named and left alone; the main context tunes nginx itself.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use super::{
    Options, Warnings,
    directives::{Effect, server_directive, stream_block},
    parser::Directive,
    upstream::{self, Backend, Method, Pool},
    values::{Address, address, time},
};
use crate::{
    convert::{BackendSpec, CheckSpec, Conversion, Group, HealthSpec, Place, ServiceSpec},
    model::{DestKey, Protocol, ServiceKey},
};

/// The shortest health check interval written: nginx's window divided by `max_fails` can be
/// shorter than is sensible to probe.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The health check timeout without a `proxy_connect_timeout` (LibraFlux's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

pub fn map(directives: &[Directive], options: &Options) -> Conversion {
    let mut mapper = Mapper {
        options,
        warnings: Warnings::default(),
        upstreams: HashMap::new(),
        pools: HashMap::new(),
        variables: HashMap::new(),
        inherited: Vec::new(),
        names: BTreeSet::new(),
        keys: BTreeMap::new(),
        groups: Vec::new(),
    };
    for directive in directives {
        let Some(block) = &directive.block else { continue };
        match directive.name.text.as_str() {
            "stream" => mapper.stream(block),
            "http" => mapper.warnings.add(
                directive.place(),
                "http {}: HTTP (L7) proxying is not converted; IPVS balances connections (L4): keep an HTTP proxy \
                 for it",
            ),
            "mail" => mapper.warnings.add(directive.place(), "mail {}: mail proxying is not converted"),
            _ => {}
        }
    }
    let mut files = Vec::new();
    file_order(directives, &mut files);
    Conversion { groups: mapper.groups, warnings: mapper.warnings.into_sorted(&files) }
}

/// The files in the order their first directive appears.
fn file_order<'d>(directives: &'d [Directive], files: &mut Vec<&'d Path>) {
    for directive in directives {
        if !files.contains(&&*directive.file) {
            files.push(&directive.file);
        }
        file_order(directive.block.as_deref().unwrap_or_default(), files);
    }
}

struct Mapper<'d> {
    options: &'d Options,
    warnings: Warnings,
    /// `upstream` blocks by lower-case name (nginx compares names without case).
    upstreams: HashMap<String, &'d Directive>,
    pools: HashMap<String, Pool>,
    /// Where `map`, `geo`, `split_clients` and `js_set` define a variable.
    variables: HashMap<String, Place>,
    /// `stream`-level directives, which every server inherits unless it sets its own.
    inherited: Vec<&'d Directive>,
    names: BTreeSet<String>,
    keys: BTreeMap<ServiceKey, Place>,
    groups: Vec<Group>,
}

impl<'d> Mapper<'d> {
    fn stream(&mut self, block: &'d [Directive]) {
        for directive in block {
            let name = directive.name.text.as_str();
            match (name, &directive.block) {
                ("upstream", Some(_)) => {
                    self.upstreams.insert(directive.first_arg().to_ascii_lowercase(), directive);
                }
                ("map" | "split_clients", Some(_)) => self.define(directive.args.get(1), directive),
                ("geo", Some(_)) => self.define(directive.args.last(), directive),
                ("js_set", None) => self.define(directive.args.first(), directive),
                (_, None) => self.inherited.push(directive),
                _ => {}
            }
        }
        for directive in block {
            match (directive.name.text.as_str(), &directive.block) {
                ("server", Some(_)) => self.server(directive),
                ("upstream", Some(_)) => {}
                (_, Some(_)) => {
                    if let Effect::Lost(message) = stream_block(directive) {
                        self.warnings.add(directive.place(), message);
                    }
                }
                _ => {}
            }
        }
    }

    fn define(&mut self, variable: Option<&super::lexer::Word>, directive: &Directive) {
        if let Some(variable) = variable {
            self.variables.insert(variable.text.clone(), directive.place());
        }
    }

    fn server(&mut self, server: &'d Directive) {
        let own = server.block.as_deref().unwrap_or_default();
        let inherited = self
            .inherited
            .iter()
            .copied()
            .filter(|outer| !own.iter().any(|d| d.name.text == outer.name.text));
        let mut listens = Vec::new();
        let mut proxy_pass = None;
        let mut connect_timeout = None;
        let mut blocks = Vec::new();
        // Named only when the server converts: a server that does not is named once, with why.
        let mut lost = Vec::new();
        for directive in inherited.chain(own) {
            match server_directive(directive) {
                Effect::Handled => match directive.name.text.as_str() {
                    "listen" => listens.push(directive),
                    "proxy_pass" => proxy_pass = Some(directive),
                    _ => connect_timeout = time(directive.first_arg(), true),
                },
                Effect::Ignored => {}
                Effect::Lost(message) => lost.push((directive.place(), message)),
                Effect::Blocks(message) => blocks.push((directive.place(), message)),
            }
        }
        let pool = match proxy_pass {
            Some(proxy_pass) => self.pool_for(proxy_pass).map_err(|block| blocks.push(block)).ok(),
            None => {
                if blocks.is_empty() {
                    blocks.push((server.place(), "server without proxy_pass: it proxies nothing".to_owned()));
                }
                None
            }
        };
        if let Some(pool) = &pool {
            blocks.extend(pool.blocks.iter().cloned());
        }
        let (Some(pool), Some(proxy_pass), true) = (pool, proxy_pass, blocks.is_empty()) else {
            for (place, message) in blocks {
                self.warnings
                    .add(place, format!("{message}; the server at {} is not converted", server.place()));
            }
            return;
        };
        for (place, message) in lost {
            self.warnings.add(place, message);
        }
        let services: Vec<ServiceSpec> =
            listens.into_iter().filter_map(|listen| self.service(listen, &pool, connect_timeout)).collect();
        if services.is_empty() {
            return;
        }
        let from = match &pool.upstream {
            Some((name, place)) => format!("Backends from upstream {name} at {place}."),
            None => format!("Backend from {} at {}.", proxy_pass.text(), proxy_pass.place()),
        };
        let notes = vec![
            from,
            "Forwarding nat: the backends see the clients' addresses and must route their replies through"
                .into(),
            "this node (nginx connected to them from its own address).".into(),
        ];
        self.groups.push(Group { source: server.place(), notes, services });
    }

    /// The backends a `proxy_pass` names, or why the server cannot be converted.
    fn pool_for(&mut self, proxy_pass: &Directive) -> Result<Pool, (Place, String)> {
        let place = proxy_pass.place();
        let target = proxy_pass.first_arg();
        if let Some(variable) = first_variable(target) {
            let defined = self
                .variables
                .get(&variable)
                .map(|at| format!(" ({variable} is defined at {at})"))
                .unwrap_or_default();
            let message = format!(
                "proxy_pass {target}: nginx chooses the backend of each connection from a variable{defined}, and \
                 IPVS cannot; give each backend set its own VIP or port, then convert"
            );
            return Err((place, message));
        }
        let key = target.to_ascii_lowercase();
        if let Some(upstream) = self.upstreams.get(&key).copied() {
            if !self.pools.contains_key(&key) {
                let pool = upstream::pool(upstream, &mut self.warnings);
                self.pools.insert(key.clone(), pool);
            }
            return Ok(self.pools[&key].clone());
        }
        let message = match address(target) {
            Address::Ip(ip, port) => {
                return Ok(Pool {
                    upstream: None,
                    method: Method::RoundRobin,
                    backends: vec![Backend::new(ip, port, place)],
                    blocks: Vec::new(),
                    zone: false,
                });
            }
            Address::Unix(_) => {
                format!("proxy_pass {target}: IPVS forwards to IP addresses only; keep nginx for this server")
            }
            Address::Host(host, _) => format!(
                "proxy_pass {target}: nginx resolved the host name {host} once, when it started; IPVS needs \
                 addresses: put them in an upstream, then convert"
            ),
            _ => format!("proxy_pass {target}: no upstream has this name, and it is not an address and port"),
        };
        Err((place, message))
    }

    /// The service for one `listen`, or `None` with a warning saying why not.
    fn service(
        &mut self,
        listen: &Directive,
        pool: &Pool,
        connect_timeout: Option<Duration>,
    ) -> Option<ServiceSpec> {
        let place = listen.place();
        let text = listen.text();
        let params: Vec<&str> = listen.args.iter().skip(1).map(|word| word.text.as_str()).collect();
        if params.contains(&"ssl") {
            let message = format!(
                "{text}: nginx terminates TLS here, and IPVS forwards bytes as they are; terminate TLS on the \
                 backends, or keep nginx for this listen; not converted"
            );
            self.warnings.add(place, message);
            return None;
        }
        if params.contains(&"proxy_protocol") {
            let message = format!(
                "{text}: nginx expects a PROXY protocol header from the clients' proxy; IPVS passes it to the \
                 backends unread: make them accept it, or keep nginx for this listen; not converted"
            );
            self.warnings.add(place, message);
            return None;
        }
        let (vip, port) = self.listen_address(listen)?;
        if vip.is_multicast() {
            self.warnings.add(place, format!("{text}: a multicast address cannot be a VIP; not converted"));
            return None;
        }
        let protocol = if params.contains(&"udp") { Protocol::Udp } else { Protocol::Tcp };
        let key = ServiceKey::Addr { protocol, addr: vip, port };
        if let Some(first) = self.keys.get(&key) {
            self.warnings.add(
                place,
                format!("{text}: {key} was converted already, from {first}; not converted twice"),
            );
            return None;
        }
        let backends = self.backends_for(pool, key, &place);
        if backends.is_empty() {
            self.warnings.add(place, format!("{text}: no backend left for {key}; not converted"));
            return None;
        }
        let health = self.health(pool, &backends, protocol, port, &place, connect_timeout);
        let scheduler = scheduler(pool.method, &backends);
        let name = self.name(pool, protocol, port, vip);
        self.keys.insert(key, place.clone());
        let backends = backends
            .iter()
            .map(|backend| BackendSpec {
                address: backend.address,
                port: backend.port,
                weight: if backend.down { 0 } else { backend.weight },
                max_connections: backend.max_conns,
            })
            .collect();
        let remove_unhealthy = matches!(pool.method, Method::SourceHash | Method::ConsistentHash);
        Some(ServiceSpec {
            name,
            source: place,
            protocol,
            vip,
            port,
            scheduler,
            remove_unhealthy,
            health,
            backends,
        })
    }

    /// The VIP and port of a `listen`; a wildcard address takes `--vip`.
    fn listen_address(&mut self, listen: &Directive) -> Option<(IpAddr, u16)> {
        let target = listen.first_arg();
        let why = match address(target) {
            Address::Ip(ip, port) => return Some((ip, port)),
            Address::Any { v6, port } => match self.options.vip(v6) {
                Some(vip) => return Some((vip, port)),
                None => format!(
                    "listen {target} has no address, and IPVS needs the VIP: give the {} VIP with --vip ADDR",
                    if v6 { "IPv6" } else { "IPv4" }
                ),
            },
            Address::Host(host, _) => {
                format!("listen {target}: give the address of {host}, IPVS needs the VIP")
            }
            Address::Unix(_) => format!("listen {target}: IPVS serves IP addresses only"),
            Address::Range(_) => format!(
                "listen {target}: a port range is not converted; write one service per port, or a fwmark service \
                 (mark the range with nftables)"
            ),
            Address::NoPort => format!("listen {target}: no port"),
        };
        self.warnings.add(listen.place(), format!("{why}; not converted"));
        None
    }

    /// The pool's backends that can serve `key`, with a warning for each left out.
    fn backends_for(&mut self, pool: &Pool, key: ServiceKey, listen: &Place) -> Vec<Backend> {
        let ServiceKey::Addr { addr: vip, port, .. } = key else { return Vec::new() };
        let hashed = matches!(pool.method, Method::SourceHash | Method::ConsistentHash);
        let mut kept: Vec<Backend> = Vec::new();
        for backend in &pool.backends {
            let dest = DestKey::new(backend.address, backend.port);
            let target = format!("server {dest}");
            if dest == DestKey::new(vip, port) || backend.address.is_multicast() {
                let message = format!("{target} is the VIP and port of {key} itself, or multicast; left out");
                self.warnings.add(backend.place.clone(), message);
                continue;
            }
            if let Some(first) = kept.iter_mut().find(|kept| DestKey::new(kept.address, kept.port) == dest) {
                let message = format!(
                    "{target} is listed again (first at line {}): nginx counts it twice, IPVS once; converted once \
                     with the two weights added",
                    first.place.line
                );
                self.warnings.add(backend.place.clone(), message);
                first.weight = first.weight.saturating_add(backend.weight).min(65535);
                continue;
            }
            if backend.address.is_ipv4() != vip.is_ipv4() {
                let message = format!(
                    "{target} is {} but {key} (listen at {listen}) is not: IPVS cannot forward across address \
                     families (nginx can); left out of {key}",
                    if backend.address.is_ipv4() { "IPv4" } else { "IPv6" }
                );
                self.warnings.add(backend.place.clone(), message);
                continue;
            }
            if hashed && backend.down {
                let message = format!(
                    "{target} down: with source hashing IPVS would drop the connections that hash to a weight-0 \
                     backend, so it is left out; add it when it is up"
                );
                self.warnings.add(backend.place.clone(), message);
                continue;
            }
            if backend.max_conns > 0 && !pool.zone {
                let message = format!(
                    "{target} max_conns={}: without a zone nginx counted it per worker process; IPVS counts it \
                     over the whole node",
                    backend.max_conns
                );
                self.warnings.add(backend.place.clone(), message);
            }
            kept.push(backend.clone());
        }
        kept
    }

    /// nginx marks a backend failed after `max_fails` failures within `fail_timeout`; the check
    /// probes every `fail_timeout / max_fails`, so `fall` failed probes take as long.
    fn health(
        &mut self,
        pool: &Pool,
        backends: &[Backend],
        protocol: Protocol,
        port: u16,
        listen: &Place,
        connect_timeout: Option<Duration>,
    ) -> HealthSpec {
        let first = &backends[0];
        if let Some(other) = backends.iter().find(|backend| {
            (backend.max_fails, backend.fail_timeout) != (first.max_fails, first.fail_timeout)
        }) {
            let at = pool.upstream.as_ref().map_or_else(|| other.place.clone(), |(_, place)| place.clone());
            let message = format!(
                "the servers differ in max_fails or fail_timeout (lines {} and {}); one health check covers the \
                 whole service: it uses those of line {}",
                first.place.line, other.place.line, first.place.line
            );
            self.warnings.add(at, message);
        }
        let none = HealthSpec {
            check: CheckSpec::None,
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
            rise: 1,
            fall: 1,
        };
        if first.max_fails == 0 {
            return none;
        }
        let check = match protocol {
            Protocol::Udp => match udp_check(port, backends) {
                Some(check) => check,
                None => {
                    let message = format!(
                        "no UDP health check is obvious for port {port}: health type none, so failed backends stay \
                         in; choose udp_dns, udp_sip or udp_ntp if one fits"
                    );
                    self.warnings.add(listen.clone(), message);
                    return none;
                }
            },
            // nginx's stream module proxies TCP and UDP only.
            _ => CheckSpec::Tcp,
        };
        if let CheckSpec::Dns { query } = &check {
            let message = format!(
                "health udp_dns asks each backend for {query} A and expects NOERROR: set dns_query to a name \
                 these backends answer"
            );
            self.warnings.add(listen.clone(), message);
        }
        let per_failure = first.fail_timeout / first.max_fails;
        let interval = Duration::from_millis(u64::try_from(per_failure.as_millis()).unwrap_or(u64::MAX))
            .max(MIN_INTERVAL);
        let timeout = connect_timeout.unwrap_or(DEFAULT_TIMEOUT).min(interval).max(Duration::from_millis(1));
        HealthSpec { check, interval, timeout, rise: 1, fall: first.max_fails.min(1000) }
    }

    fn name(&mut self, pool: &Pool, protocol: Protocol, port: u16, vip: IpAddr) -> String {
        let base = pool.upstream.as_ref().map_or_else(|| "proxy".to_owned(), |(name, _)| sanitize(name));
        let mut name = format!("{base}-{protocol}-{port}");
        if vip.is_ipv6() {
            name.push_str("-v6");
        }
        let mut candidate = name.clone();
        for suffix in 2.. {
            if !self.names.contains(&candidate) {
                break;
            }
            candidate = format!("{name}-{suffix}");
        }
        self.names.insert(candidate.clone());
        candidate
    }
}

/// The protocol check a UDP port makes obvious: the listen port, or the one port all backends use.
fn udp_check(port: u16, backends: &[Backend]) -> Option<CheckSpec> {
    let by_port = |port: u16| match port {
        53 => Some(CheckSpec::Dns { query: "localhost".to_owned() }),
        5060 => Some(CheckSpec::Sip),
        123 => Some(CheckSpec::Ntp),
        _ => None,
    };
    let backend_port = backends.iter().all(|b| b.port == backends[0].port).then_some(backends[0].port);
    by_port(port).or_else(|| backend_port.and_then(by_port))
}

/// The IPVS scheduler: weighted only when the (up) backends' weights differ.
fn scheduler(method: Method, backends: &[Backend]) -> &'static str {
    let mut weights = backends.iter().filter(|backend| !backend.down).map(|backend| backend.weight);
    let first = weights.next();
    let equal = weights.all(|weight| Some(weight) == first);
    match (method, equal) {
        (Method::RoundRobin, true) => "rr",
        (Method::RoundRobin, false) => "wrr",
        (Method::LeastConn, true) => "lc",
        (Method::LeastConn, false) => "wlc",
        (Method::SourceHash, _) => "sh",
        (Method::ConsistentHash, _) => "mh",
    }
}

/// A service name from an upstream name: lower case, `[a-z0-9_-]`, at most 40 characters.
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '-' })
        .take(40)
        .collect();
    if clean.is_empty() { "upstream".to_owned() } else { clean }
}

/// The first variable in `text`: `$name` or `${name}`, as `$name`.
fn first_variable(text: &str) -> Option<String> {
    let (_, rest) = text.split_once('$')?;
    let rest = rest.strip_prefix('{').unwrap_or(rest);
    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    Some(format!("${name}"))
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
