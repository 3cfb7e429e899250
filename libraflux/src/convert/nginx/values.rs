//! nginx's value syntax: addresses (`listen`, `proxy_pass`, upstream `server`), times, `on`/`off`.

use std::{net::IpAddr, time::Duration};

/// What an address argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// An IP address and port.
    Ip(IpAddr, u16),
    /// Every address of a family (`*:53`, `53`, `0.0.0.0:53`, `[::]:53`): IPv6 when `v6`.
    Any { v6: bool, port: u16 },
    /// A host name that nginx resolves when it starts.
    Host(String, u16),
    /// `unix:/path`.
    Unix(String),
    /// A port range (`listen 10000-10100`), with its address if any.
    Range(String),
    /// No port (or an invalid one).
    NoPort,
}

/// Parses an address as `listen`, `proxy_pass` and upstream `server` write it.
pub fn address(text: &str) -> Address {
    if let Some(path) = text.strip_prefix("unix:") {
        return Address::Unix(path.to_owned());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, rest)) = rest.split_once(']') else { return Address::NoPort };
        let Some(port) = rest.strip_prefix(':') else { return Address::NoPort };
        (Some(host), port)
    } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        (None, text)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (Some(host), port),
            None => return Address::NoPort,
        }
    };
    if port.contains('-') {
        return Address::Range(text.to_owned());
    }
    let Some(port) = port.parse::<u16>().ok().filter(|port| *port > 0) else { return Address::NoPort };
    match host {
        None | Some("*") => Address::Any { v6: false, port },
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => Address::Any { v6: ip.is_ipv6(), port },
            Ok(ip) => Address::Ip(ip, port),
            Err(_) => Address::Host(host.to_owned(), port),
        },
    }
}

/// nginx's time syntax (`10s`, `1m30s`, `500ms`, a bare number of seconds). `ms` only where
/// nginx takes milliseconds (`allow_ms`). `None` when it does not parse.
pub fn time(text: &str, allow_ms: bool) -> Option<Duration> {
    const UNITS: &[(&str, u64)] = &[
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("M", 2_592_000_000),
        ("y", 31_536_000_000),
    ];
    let mut rest = text.trim();
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(unit, _)| rest.starts_with(unit))
            .map_or(("", 1000), |(unit, scale)| (*unit, *scale));
        if unit == "ms" && !allow_ms {
            return None;
        }
        total = total.checked_add(value.checked_mul(scale)?)?;
        rest = rest[unit.len()..].trim_start();
        if unit.is_empty() && !rest.is_empty() {
            return None;
        }
    }
    Some(Duration::from_millis(total))
}

/// nginx's `on` (any case).
pub fn is_on(text: &str) -> bool {
    text.eq_ignore_ascii_case("on")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_form() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(address("192.0.2.1:53"), Address::Ip(ip("192.0.2.1"), 53));
        assert_eq!(address("[2001:db8::1]:443"), Address::Ip(ip("2001:db8::1"), 443));
        assert_eq!(address("53"), Address::Any { v6: false, port: 53 });
        assert_eq!(address("*:53"), Address::Any { v6: false, port: 53 });
        assert_eq!(address("0.0.0.0:53"), Address::Any { v6: false, port: 53 });
        assert_eq!(address("[::]:53"), Address::Any { v6: true, port: 53 });
        assert_eq!(address("backend.example.com:8080"), Address::Host("backend.example.com".into(), 8080));
        assert_eq!(address("unix:/run/app.sock"), Address::Unix("/run/app.sock".into()));
        assert_eq!(address("10000-10100"), Address::Range("10000-10100".into()));
        assert_eq!(address("192.0.2.1:10000-10100"), Address::Range("192.0.2.1:10000-10100".into()));
        assert_eq!(address("backends"), Address::NoPort);
        assert_eq!(address("192.0.2.1:0"), Address::NoPort);
        assert_eq!(address("[::1]"), Address::NoPort);
    }

    #[test]
    fn times_as_nginx_writes_them() {
        assert_eq!(time("10", false), Some(Duration::from_secs(10)));
        assert_eq!(time("30s", false), Some(Duration::from_secs(30)));
        assert_eq!(time("1m30s", false), Some(Duration::from_secs(90)));
        assert_eq!(time("1h 5m", false), Some(Duration::from_secs(3900)));
        assert_eq!(time("500ms", true), Some(Duration::from_millis(500)));
        assert_eq!(time("500ms", false), None, "fail_timeout takes seconds");
        assert_eq!(time("1d", false), Some(Duration::from_secs(86_400)));
        assert_eq!(time("", false), None);
        assert_eq!(time("5x", false), None);
        assert_eq!(time("5 6", false), None);
    }
}
