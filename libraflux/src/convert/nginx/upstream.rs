//! An `upstream` block: its backends (the `server` lines and their parameters) and its balancing
//! method, with a warning for each thing IPVS cannot do.

use std::{net::IpAddr, time::Duration};

use super::{
    Warnings,
    parser::Directive,
    values::{Address, address, time},
};
use crate::convert::Place;

/// nginx's defaults for `max_fails` and `fail_timeout`.
pub const DEFAULT_MAX_FAILS: u32 = 1;
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The backends of an upstream (or of a `proxy_pass ADDR:PORT`) and how nginx chooses them.
#[derive(Clone, Debug)]
pub struct Pool {
    /// The upstream's name and where it is declared; `None` for a `proxy_pass ADDR:PORT`.
    pub upstream: Option<(String, Place)>,
    pub method: Method,
    pub backends: Vec<Backend>,
    /// Why no server that uses it can be converted.
    pub blocks: Vec<(Place, String)>,
    /// Whether the upstream has a `zone` (then `max_conns` is a limit over all of nginx's workers).
    pub zone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round robin by weight: `rr`, or `wrr` when weights differ.
    RoundRobin,
    /// `lc`, or `wlc` when weights differ.
    LeastConn,
    /// `sh`: by the client's address.
    SourceHash,
    /// `mh`: by the client's address, consistently.
    ConsistentHash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    pub port: u16,
    /// nginx's weight (1 and up).
    pub weight: u32,
    pub down: bool,
    /// 0: no limit.
    pub max_conns: u32,
    /// 0: nginx never marks it failed.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub place: Place,
}

impl Backend {
    pub fn new(address: IpAddr, port: u16, place: Place) -> Self {
        Self {
            address,
            port,
            weight: 1,
            down: false,
            max_conns: 0,
            max_fails: DEFAULT_MAX_FAILS,
            fail_timeout: DEFAULT_FAIL_TIMEOUT,
            place,
        }
    }
}

/// Reads an `upstream NAME { ... }` block.
pub fn pool(upstream: &Directive, warnings: &mut Warnings) -> Pool {
    let mut pool = Pool {
        upstream: Some((upstream.first_arg().to_owned(), upstream.place())),
        method: Method::RoundRobin,
        backends: Vec::new(),
        blocks: Vec::new(),
        zone: false,
    };
    let mut method_at: Option<Place> = None;
    for directive in upstream.block.iter().flatten() {
        let name = directive.name.text.as_str();
        if let Some(method) = method(directive, warnings) {
            if let Some(first) = &method_at {
                let message = format!(
                    "{name}: the balancing method set at line {} is replaced by this one (the last counts, as in nginx)",
                    first.line
                );
                warnings.add(directive.place(), message);
            }
            method_at = Some(directive.place());
            pool.method = method;
            continue;
        }
        match name {
            "server" => pool.backends.extend(backend(directive, warnings)),
            "zone" => {
                pool.zone = true;
                let message = format!(
                    "zone {}: nginx's shared memory for this upstream; IPVS keeps one table in the kernel, \
                     nothing to configure",
                    directive.first_arg()
                );
                warnings.add(directive.place(), message);
            }
            "resolver" | "resolver_timeout" => {}
            "state" => warnings.add(
                directive.place(),
                "state (NGINX Plus): the servers kept in the state file are not converted; list them in the YAML",
            ),
            "sticky" => warnings.add(
                directive.place(),
                "sticky (NGINX Plus): not converted; IPVS persistence (persistence: in the YAML) keeps a client on \
                 one backend",
            ),
            _ if name.contains("_by_lua") => pool.blocks.push((
                directive.place(),
                format!("{name}: Lua code chooses the backend of every connection; IPVS cannot run it"),
            )),
            _ => warnings.add(
                directive.place(),
                format!("{name}: not converted, LibraFlux knows no equivalent in an upstream"),
            ),
        }
    }
    pool
}

/// The balancing method a directive sets, if it sets one, with a warning where IPVS differs.
fn method(directive: &Directive, warnings: &mut Warnings) -> Option<Method> {
    let args: Vec<&str> = directive.args.iter().map(|word| word.text.as_str()).collect();
    let (method, lost) = match directive.name.text.as_str() {
        "least_conn" => (Method::LeastConn, None),
        "hash" => {
            let consistent = args.get(1) == Some(&"consistent");
            match args.first() {
                Some(&("$remote_addr" | "$binary_remote_addr")) if consistent => (Method::ConsistentHash, None),
                Some(&("$remote_addr" | "$binary_remote_addr")) => (Method::SourceHash, None),
                key => (
                    Method::RoundRobin,
                    Some(format!(
                        "hash {}: IPVS hashes only the client's address (sh, mh), so connections lose their \
                         affinity to this key: converted as round robin",
                        key.unwrap_or(&"")
                    )),
                ),
            }
        }
        "ip_hash" => (
            Method::SourceHash,
            Some(
                "ip_hash: nginx accepts it only in http {} (nginx -t refuses it here), and hashes the first three \
                 bytes of an IPv4 address; converted to sh, which hashes the client's whole address"
                    .to_owned(),
            ),
        ),
        "least_time" => (
            Method::LeastConn,
            Some(
                "least_time (NGINX Plus): IPVS cannot measure response times; converted to least connections"
                    .to_owned(),
            ),
        ),
        "random" if args.contains(&"least_conn") || args.iter().any(|arg| arg.starts_with("least_time")) => (
            Method::LeastConn,
            Some(
                "random two: IPVS has no random choice; converted to least connections, which always picks the \
                 least loaded backend"
                    .to_owned(),
            ),
        ),
        "random" => (
            Method::RoundRobin,
            Some(
                "random: IPVS has no random choice; converted to round robin, which gives each backend the same \
                 share in turn"
                    .to_owned(),
            ),
        ),
        _ => return None,
    };
    if let Some(lost) = lost {
        warnings.add(directive.place(), lost);
    }
    Some(method)
}

/// One upstream `server` line; `None` (with a warning) when it cannot be a backend.
fn backend(directive: &Directive, warnings: &mut Warnings) -> Option<Backend> {
    let place = directive.place();
    let target = directive.first_arg();
    let (ip, port) = match address(target) {
        Address::Ip(ip, port) => (ip, port),
        Address::Host(host, _) => {
            let message = format!(
                "server {target}: nginx resolved the host name {host} once, when it started; IPVS needs addresses: \
                 list each address {host} resolves to as a backend"
            );
            warnings.add(place, message);
            return None;
        }
        Address::Unix(_) => {
            warnings
                .add(place, format!("server {target}: IPVS forwards to IP addresses only; not converted"));
            return None;
        }
        Address::Any { .. } | Address::Range(_) | Address::NoPort => {
            warnings.add(place, format!("server {target}: not an address and port; not converted"));
            return None;
        }
    };
    let mut backend = Backend::new(ip, port, place.clone());
    for word in &directive.args[1..] {
        let param = word.text.as_str();
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let valid = match key {
            "weight" => value
                .parse()
                .ok()
                .filter(|weight| *weight > 0)
                .map(|weight| backend.weight = weight)
                .is_some(),
            "max_conns" => value.parse().map(|max| backend.max_conns = max).is_ok(),
            "max_fails" => value.parse().map(|max| backend.max_fails = max).is_ok(),
            "fail_timeout" => time(value, false).map(|timeout| backend.fail_timeout = timeout).is_some(),
            "down" => {
                backend.down = true;
                true
            }
            "backup" => {
                let message = format!(
                    "server {target} backup: IPVS has no standby backends, so it is not converted; add it to the \
                     service when the others fail"
                );
                warnings.add(place, message);
                return None;
            }
            "drain" => {
                warnings.add(
                    place.clone(),
                    format!("server {target} drain (NGINX Plus): converted as down, weight 0"),
                );
                backend.down = true;
                true
            }
            "slow_start" => {
                let message = format!(
                    "server {target} slow_start (NGINX Plus): IPVS gives a returning backend its whole weight at \
                     once; raise the weight in steps by hand"
                );
                warnings.add(place.clone(), message);
                true
            }
            // With an address, `resolve` and `service=` have nothing to resolve.
            "resolve" | "service" => true,
            _ => {
                warnings.add(place.clone(), format!("server {target}: unknown parameter {param}, ignored"));
                true
            }
        };
        if !valid {
            warnings
                .add(place, format!("server {target}: invalid {param} (nginx -t refuses it); not converted"));
            return None;
        }
    }
    if backend.weight > 65535 {
        let message = format!(
            "server {target}: weight {} is more than IPVS's 65535; converted as 65535",
            backend.weight
        );
        warnings.add(place, message);
        backend.weight = 65535;
    }
    Some(backend)
}
