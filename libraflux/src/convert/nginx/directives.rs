//! What each directive of a stream `server` (or of `stream` itself, which its servers inherit)
//! means for the conversion: handled by the mapping, irrelevant to IPVS, lost with a warning, or
//! a reason not to convert the server at all. docs/convert-nginx.md has the same table for users.
//!
//! The rule: a directive that changes the bytes the backends receive, or that decides per
//! connection where it goes, blocks the server (converting it would break the service). One that
//! changes how well or how safely connections are spread converts with a warning. One that only
//! tunes nginx's own sockets, buffers or logs is dropped without a word.

use super::{parser::Directive, values::is_on};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The mapping reads it.
    Handled,
    /// No meaning for IPVS, nothing lost.
    Ignored,
    /// Converted without it: what is lost and what to do instead.
    Lost(String),
    /// The server is not converted: why, and what to do instead.
    Blocks(String),
}

/// The effect of a directive in a stream `server` or at the `stream` level.
pub fn server_directive(directive: &Directive) -> Effect {
    let name = directive.name.text.as_str();
    let first = directive.first_arg();
    if let Some(effect) = lua_or_njs(name) {
        return effect;
    }
    if directive.block.is_some() {
        return Effect::Lost(format!("the block \"{name}\" is not converted: LibraFlux knows no equivalent"));
    }
    match name {
        "listen" | "proxy_pass" | "proxy_connect_timeout" => Effect::Handled,
        "proxy_protocol" if is_on(first) => Effect::Blocks(
            "proxy_protocol on: nginx sends the backends a PROXY protocol header, and IPVS forwards the client's \
             bytes unchanged; make the backends accept connections without the header (IPVS NAT keeps the \
             client's address), then convert"
                .to_owned(),
        ),
        "proxy_ssl" if is_on(first) => Effect::Blocks(
            "proxy_ssl on: nginx speaks TLS to the backends and IPVS cannot; let the clients' TLS reach the \
             backends, or keep nginx for this server"
                .to_owned(),
        ),
        "return" => Effect::Blocks("return: this server answers by itself and proxies nothing".to_owned()),
        "pass" => Effect::Blocks(
            "pass: this server hands its connections to another nginx listener; convert that one".to_owned(),
        ),
        "allow" | "deny" => Effect::Lost(format!(
            "{name} {first}: IPVS does not filter clients, so clients that nginx refuses would reach the backends; \
             filter the VIP with nftables before applying"
        )),
        "limit_conn" => Effect::Lost(
            "limit_conn: IPVS has no per-client connection limit; use nftables (ct count) on the VIP, or \
             max_connections per backend"
                .to_owned(),
        ),
        "proxy_download_rate" | "proxy_upload_rate" if first != "0" => {
            Effect::Lost(format!("{name}: IPVS does not limit rates; shape the traffic with tc on the node"))
        }
        "proxy_timeout" => Effect::Lost(format!(
            "proxy_timeout {first}: IPVS's idle timeouts are node-wide (TCP, TCP FIN, UDP), not per service; \
             set them with ipvsadm --set"
        )),
        "proxy_next_upstream" if is_on(first) => Effect::Lost(
            "proxy_next_upstream: nginx retries a failed connection on the next backend; IPVS forwards each \
             connection once (clients retry; the health check takes a dead backend out)"
                .to_owned(),
        ),
        "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => Effect::Lost(format!(
            "{name}: IPVS does not retry a failed connection on another backend"
        )),
        "proxy_responses" | "proxy_requests" => Effect::Lost(format!(
            "{name} {first}: IPVS ends a UDP flow after the node-wide UDP timeout (ipvsadm --set), not after a \
             number of datagrams"
        )),
        "proxy_bind" => Effect::Lost(
            "proxy_bind: IPVS NAT keeps the client's address as the source; the backends must route their \
             replies through this node"
                .to_owned(),
        ),
        "access_log" if first != "off" => Effect::Lost(
            "access_log: IPVS logs no connections; the metrics count them (libraflux_ipvs_connections_total)"
                .to_owned(),
        ),
        "ssl_preread" if is_on(first) => Effect::Lost(
            "ssl_preread on: IPVS does not read the TLS ClientHello; nothing can use the server name it reads"
                .to_owned(),
        ),
        "health_check" | "health_check_timeout" => Effect::Lost(format!(
            "{name} (NGINX Plus): not converted; check the health: section written from max_fails and fail_timeout"
        )),
        "server_name" => Effect::Lost(
            "server_name: IPVS cannot choose a server by TLS server name; every connection to the listen address \
             reaches this service"
                .to_owned(),
        ),
        _ if ignored(name) => Effect::Ignored,
        "proxy_protocol" | "proxy_ssl" | "proxy_next_upstream" | "ssl_preread" | "access_log"
        | "proxy_download_rate" | "proxy_upload_rate" => Effect::Ignored,
        _ => Effect::Lost(format!(
            "{name}: not converted, LibraFlux knows no equivalent; check that the service does not depend on it"
        )),
    }
}

/// Directives that tune nginx itself (sockets, buffers, logs, name resolution, TLS settings that
/// only matter with `listen ... ssl` or `proxy_ssl on`) or define things other directives use.
fn ignored(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "error_log",
        "log_format",
        "open_log_file_cache",
        "tcp_nodelay",
        "preread_buffer_size",
        "preread_timeout",
        "proxy_protocol_timeout",
        "proxy_buffer_size",
        "proxy_socket_keepalive",
        "proxy_half_close",
        "resolver",
        "resolver_timeout",
        "set",
        "set_real_ip_from",
        "limit_conn_zone",
        "limit_conn_log_level",
        "limit_conn_dry_run",
        "variables_hash_max_size",
        "variables_hash_bucket_size",
        "server_names_hash_max_size",
        "server_names_hash_bucket_size",
        "map_hash_max_size",
        "map_hash_bucket_size",
    ];
    NAMES.contains(&name) || ["ssl_", "proxy_ssl_", "geoip_"].iter().any(|prefix| name.starts_with(prefix))
}

/// Lua (OpenResty's stream module) and njs: code that runs per connection blocks the server;
/// their settings and definitions are ignored.
fn lua_or_njs(name: &str) -> Option<Effect> {
    if name.starts_with("log_by_lua") {
        return Some(Effect::Lost(format!("{name}: Lua logging of connections is not converted")));
    }
    if name.contains("_by_lua") {
        return Some(Effect::Blocks(format!(
            "{name}: Lua code runs on every connection and IPVS cannot run it; keep nginx for this server"
        )));
    }
    if matches!(name, "js_access" | "js_preread" | "js_filter") {
        return Some(Effect::Blocks(format!(
            "{name}: njs code runs on every connection and IPVS cannot run it; keep nginx for this server"
        )));
    }
    (name.starts_with("lua_") || name.starts_with("js_")).then_some(Effect::Ignored)
}

/// The effect of a stream-level block other than `server` and `upstream`: definitions (`map`,
/// `geo`, `split_clients`, `match`) are read where they are used; anything else is named.
pub fn stream_block(directive: &Directive) -> Effect {
    match directive.name.text.as_str() {
        "map" | "geo" | "split_clients" | "match" => Effect::Ignored,
        name => Effect::Lost(format!("the block \"{name}\" is not converted: LibraFlux knows no equivalent")),
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::convert::nginx::parser::parse;

    fn effect(text: &str) -> Effect {
        let directives = parse(&Arc::from(Path::new("t.conf")), text.as_bytes()).expect("parses");
        server_directive(&directives[0])
    }

    #[test]
    fn what_changes_the_bytes_or_the_choice_blocks_the_server() {
        for text in [
            "proxy_protocol on;",
            "proxy_ssl on;",
            "return 1;",
            "js_preread main.preread;",
            "content_by_lua_block { }",
        ] {
            assert!(matches!(effect(text), Effect::Blocks(_)), "{text}");
        }
    }

    #[test]
    fn what_changes_how_connections_spread_is_lost_with_a_warning() {
        for text in [
            "allow 10.0.0.0/8;",
            "limit_conn addr 10;",
            "proxy_timeout 10m;",
            "access_log logs/a.log;",
            "frobnicate 1;",
        ] {
            assert!(matches!(effect(text), Effect::Lost(_)), "{text}");
        }
    }

    #[test]
    fn what_tunes_nginx_alone_or_is_off_is_ignored() {
        for text in [
            "tcp_nodelay on;",
            "proxy_protocol off;",
            "access_log off;",
            "ssl_certificate a.pem;",
            "js_import a.js;",
        ] {
            assert_eq!(effect(text), Effect::Ignored, "{text}");
        }
        assert_eq!(effect("listen 53 udp;"), Effect::Handled);
    }
}
