//! The mapping's rules, one at a time, on configurations written in place.

use std::{path::Path, sync::Arc, time::Duration};

use super::map;
use crate::convert::{CheckSpec, Conversion, nginx::Options, nginx::parser::parse};

fn convert(stream: &str, vips: &[&str]) -> Conversion {
    let text = format!("stream {{\n{stream}\n}}\n");
    let directives = parse(&Arc::from(Path::new("t.conf")), text.as_bytes()).expect("parses");
    map(&directives, &Options { vips: vips.iter().map(|vip| vip.parse().unwrap()).collect() })
}

fn warnings(conversion: &Conversion) -> Vec<String> {
    conversion.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn a_backend_listed_twice_is_converted_once_with_both_weights() {
    let conversion = convert(
        "upstream u { server 10.0.0.1:80 weight=2; server 10.0.0.1:80 weight=3; server 10.0.0.2:80; }\n\
         server { listen 192.0.2.1:80; proxy_pass u; }",
        &[],
    );
    let service = &conversion.groups[0].services[0];
    let weights: Vec<u32> = service.backends.iter().map(|backend| backend.weight).collect();
    assert_eq!((weights, service.scheduler), (vec![5, 1], "wrr"));
    assert!(
        warnings(&conversion)[0].contains("is listed again (first at line 2)"),
        "{:?}",
        conversion.warnings
    );
}

#[test]
fn a_listen_without_address_takes_the_vip_of_its_family() {
    let stream = "server { listen 53 udp; listen [::]:53 udp; proxy_pass 10.0.0.1:53; }";
    let conversion = convert(stream, &["192.0.2.1", "2001:db8::1"]);
    let services = &conversion.groups[0].services;
    assert_eq!(services.len(), 1, "the IPv6 listen has only an IPv4 backend");
    assert_eq!(services[0].vip.to_string(), "192.0.2.1");
    let without = convert(stream, &[]);
    assert!(without.groups.is_empty());
    assert!(warnings(&without)[0].contains("give the IPv4 VIP with --vip ADDR"), "{:?}", without.warnings);
}

#[test]
fn the_same_service_twice_is_converted_once_and_names_stay_unique() {
    let conversion = convert(
        "upstream u { server 10.0.0.1:80; }\n\
         server { listen 192.0.2.1:80; proxy_pass u; }\n\
         server { listen 192.0.2.2:80; proxy_pass u; }\n\
         server { listen 80; proxy_pass u; }",
        &["192.0.2.1"],
    );
    let names: Vec<&str> = conversion
        .groups
        .iter()
        .flat_map(|group| &group.services)
        .map(|service| service.name.as_str())
        .collect();
    assert_eq!(names, ["u-tcp-80", "u-tcp-80-2"]);
    assert!(
        warnings(&conversion)
            .iter()
            .any(|w| w.contains("tcp:192.0.2.1:80 was converted already, from t.conf:3")),
        "{:?}",
        conversion.warnings
    );
}

#[test]
fn a_stream_level_directive_applies_to_every_server_unless_it_sets_its_own() {
    let conversion = convert(
        "proxy_protocol on;\n\
         server { listen 192.0.2.1:80; proxy_pass 10.0.0.1:80; }\n\
         server { listen 192.0.2.2:80; proxy_pass 10.0.0.1:80; proxy_protocol off; }",
        &[],
    );
    assert_eq!(conversion.groups.len(), 1);
    assert_eq!(conversion.groups[0].source.line, 4);
    assert!(
        warnings(&conversion)[0].starts_with("t.conf:2: proxy_protocol on: "),
        "{:?}",
        conversion.warnings
    );
}

#[test]
fn health_probes_as_often_as_nginx_counts_failures() {
    let conversion = convert(
        "upstream u { server 10.0.0.1:80 max_fails=4 fail_timeout=1m; }\n\
         upstream fast { server 10.0.0.2:80 max_fails=10 fail_timeout=2s; }\n\
         upstream never { server 10.0.0.3:80 max_fails=0; }\n\
         server { listen 192.0.2.1:80; proxy_pass u; proxy_connect_timeout 300ms; }\n\
         server { listen 192.0.2.2:80; proxy_pass fast; }\n\
         server { listen 192.0.2.3:80; proxy_pass never; }",
        &[],
    );
    let health: Vec<_> = conversion.groups.iter().map(|group| group.services[0].health.clone()).collect();
    assert_eq!(
        (health[0].interval, health[0].timeout, health[0].fall, health[0].rise),
        (Duration::from_secs(15), Duration::from_millis(300), 4, 1)
    );
    assert_eq!(health[1].interval, Duration::from_secs(1), "at least a second between probes");
    assert_eq!(health[2].check, CheckSpec::None, "max_fails=0: nginx never takes it out");
}

#[test]
fn hashing_leaves_down_backends_out_and_removes_unhealthy_ones() {
    let conversion = convert(
        "upstream u { hash $remote_addr consistent; server 10.0.0.1:80; server 10.0.0.2:80 down; }\n\
         server { listen 192.0.2.1:80; proxy_pass u; }",
        &[],
    );
    let service = &conversion.groups[0].services[0];
    assert_eq!((service.scheduler, service.remove_unhealthy, service.backends.len()), ("mh", true, 1));
}
