//! The metrics endpoint's web configuration (`metrics.web_config`): a file in the format of the
//! Prometheus exporter-toolkit (node_exporter's `--web.config.file`), so that an operator's
//! existing file, certificates and bcrypt hashes serve LibraFlux unchanged. This module decodes
//! the file with positions; [`crate::metrics::web`] loads the certificates and serves it.
//!
//! Supported: `tls_server_config` (`cert_file`, `key_file`, `client_auth_type`, `client_ca_file`,
//! `min_version`, `max_version`, `cipher_suites`, `curve_preferences`,
//! `prefer_server_cipher_suites`), `http_server_config` (`headers`, `http2`) and
//! `basic_auth_users`. Relative paths are relative to the web configuration file's directory, as
//! in exporter-toolkit. What rustls cannot do (TLS 1.0 and 1.1, CBC suites, P-521, client
//! certificates that are requested but not verified) is refused by name rather than ignored.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{
    ConfigError, ConfigErrors,
    decode::{Diagnostics, Field, Map, parse_file},
    keys::{Key, Section, Shape, Text},
};

/// The decoded file: what TLS and authentication the endpoint requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash (`$2y$10$...`), checked to parse.
    pub basic_auth_users: BTreeMap<String, String>,
    /// Response headers added to every answer (exporter-toolkit's allowed set).
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    /// Required when client certificates are verified.
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// IANA names of the TLS 1.2 suites allowed, in the server's order; empty: all of rustls'.
    /// As in Go, TLS 1.3's suites are not configurable.
    pub cipher_suites: Vec<&'static str>,
    /// Key exchange groups in order: rustls' names (`X25519`, `secp256r1`, `secp384r1`); empty:
    /// rustls' defaults.
    pub curves: Vec<&'static str>,
    /// The server's suite order wins over the client's.
    pub prefer_server_cipher_suites: bool,
}

/// Whether the endpoint asks for client certificates (exporter-toolkit's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// A certificate is verified against `client_ca_file` if the client sends one.
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The TLS 1.2 suites rustls (with ring) offers, by IANA name; Go's names for the ChaCha20 suites
/// lack the `_SHA256` suffix and are accepted too.
pub const TLS12_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// Go's curve names and rustls' names for the groups both know.
pub const CURVES: &[(&str, &str)] =
    &[("X25519", "X25519"), ("CurveP256", "secp256r1"), ("CurveP384", "secp384r1")];

/// The headers exporter-toolkit lets a web configuration set.
const HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

const TOP: Section = Section {
    context: "",
    doc: "A Prometheus exporter-toolkit web configuration.",
    keys: &[&TLS_SERVER_CONFIG, &HTTP_SERVER_CONFIG, &BASIC_AUTH_USERS],
};
const TLS_SERVER_CONFIG: Key =
    Key::optional("tls_server_config", Shape::Mapping(&TLS), "Serve over TLS with this certificate.");
const HTTP_SERVER_CONFIG: Key =
    Key::optional("http_server_config", Shape::Mapping(&HTTP), "Response headers.");
const BASIC_AUTH_USERS: Key =
    Key::optional("basic_auth_users", Shape::Text(Text::ANY), "User names and their bcrypt hashes.");

const TLS: Section = Section {
    context: "tls_server_config",
    doc: "TLS.",
    keys: &[
        &CERT_FILE,
        &KEY_FILE,
        &CLIENT_AUTH_TYPE,
        &CLIENT_CA_FILE,
        &MIN_VERSION,
        &MAX_VERSION,
        &CIPHER_SUITES,
        &CURVE_PREFERENCES,
        &PREFER_SERVER_CIPHER_SUITES,
    ],
};
const CERT_FILE: Key = Key::required("cert_file", Shape::Text(Text::ANY), "PEM certificate chain.");
const KEY_FILE: Key = Key::required("key_file", Shape::Text(Text::ANY), "PEM private key.");
const CLIENT_AUTH_TYPE: Key = Key::optional(
    "client_auth_type",
    Shape::Choice(&["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]),
    "Client certificates.",
);
const CLIENT_CA_FILE: Key =
    Key::optional("client_ca_file", Shape::Text(Text::ANY), "PEM CAs for client certificates.");
const VERSIONS: &[&str] = &["TLS12", "TLS13"];
const MIN_VERSION: Key = Key::optional("min_version", Shape::Choice(VERSIONS), "Lowest TLS version.");
const MAX_VERSION: Key = Key::optional("max_version", Shape::Choice(VERSIONS), "Highest TLS version.");
const CIPHER_SUITES: Key = Key::optional("cipher_suites", Shape::Text(Text::ANY), "TLS 1.2 suites.");
const CURVE_PREFERENCES: Key = Key::optional("curve_preferences", Shape::Text(Text::ANY), "Groups.");
const BOOLEAN: &[&str] = &["true", "false"];
const PREFER_SERVER_CIPHER_SUITES: Key =
    Key::optional("prefer_server_cipher_suites", Shape::Choice(BOOLEAN), "Server's suite order.");

const HTTP: Section = Section { context: "http_server_config", doc: "HTTP.", keys: &[&HTTP_HEADERS, &HTTP2] };
const HTTP_HEADERS: Key = Key::optional("headers", Shape::Text(Text::ANY), "Added response headers.");
const HTTP2: Key = Key::optional("http2", Shape::Choice(BOOLEAN), "Ignored: HTTP/1.1 only.");

/// Decodes `text`, read from `file`; relative paths in it are resolved against `file`'s
/// directory. Returns the settings and the warnings (`http2: true`), or every error found.
pub fn parse_web_config(file: &Path, text: &str) -> Result<(WebConfig, Vec<ConfigError>), ConfigErrors> {
    let mut d = Diagnostics::new(file);
    let config = parse_file(text, &mut d).and_then(|root| decode(&mut d, &root, file.parent()));
    match config {
        Some(config) if d.errors.is_empty() => Ok((config, d.warnings)),
        _ => Err(ConfigErrors(d.errors)),
    }
}

fn decode(d: &mut Diagnostics<'_>, root: &marked_yaml::Node, dir: Option<&Path>) -> Option<WebConfig> {
    let map = d.section(root, None, &TOP)?;
    let tls = map.get(TLS_SERVER_CONFIG.name).and_then(|field| tls(d, field, dir));
    let basic_auth_users = map.get(BASIC_AUTH_USERS.name).map(|field| users(d, field)).unwrap_or_default();
    let headers = map.get(HTTP_SERVER_CONFIG.name).map(|field| http(d, field)).unwrap_or_default();
    if map.get(TLS_SERVER_CONFIG.name).is_none() {
        let message = if basic_auth_users.is_empty() {
            "neither tls_server_config nor basic_auth_users: the endpoint stays open to anyone who can reach it"
        } else {
            "basic_auth_users without tls_server_config: passwords cross the network in clear"
        };
        d.warning(None, message);
    }
    Some(WebConfig { tls, basic_auth_users, headers })
}

fn tls(d: &mut Diagnostics<'_>, field: Field<'_>, dir: Option<&Path>) -> Option<TlsSettings> {
    let map = d.section(field.value, field.position(), &TLS)?;
    let path = |d: &mut Diagnostics<'_>, key: &Key| {
        let field = map.get(key.name)?;
        let text = d.string(field)?;
        if text.is_empty() {
            d.error(field.position(), format!("{}: must name a file", field.label()));
            return None;
        }
        Some(dir.map_or_else(|| PathBuf::from(text), |dir| dir.join(text)))
    };
    let cert_file = path(d, &CERT_FILE);
    let key_file = path(d, &KEY_FILE);
    let client_ca_file = path(d, &CLIENT_CA_FILE);
    for key in [&CERT_FILE, &KEY_FILE] {
        if map.get(key.name).is_none() {
            d.required(&map, key.name);
        }
    }
    let client_auth =
        map.get(CLIENT_AUTH_TYPE.name).map_or(Some(ClientAuth::NoClientCert), |field| client_auth(d, field));
    if client_auth.is_some_and(|auth| auth != ClientAuth::NoClientCert) && client_ca_file.is_none() {
        let at = map.get(CLIENT_AUTH_TYPE.name).and_then(|field| field.position());
        d.error(at, "tls_server_config.client_auth_type: verifying client certificates needs client_ca_file");
    }
    let version = |d: &mut Diagnostics<'_>, key: &Key| map.get(key.name).map(|field| tls_version(d, field));
    let min_version = version(d, &MIN_VERSION).unwrap_or(Some(TlsVersion::Tls12));
    let max_version = version(d, &MAX_VERSION).unwrap_or(Some(TlsVersion::Tls13));
    if let (Some(min), Some(max)) = (min_version, max_version)
        && min > max
    {
        let at = map.get(MAX_VERSION.name).and_then(|field| field.position());
        d.error(at, "tls_server_config.max_version: is lower than min_version");
    }
    let cipher_suites = map.get(CIPHER_SUITES.name).map(|field| cipher_suites(d, field)).unwrap_or_default();
    let curves = map.get(CURVE_PREFERENCES.name).map(|field| curves(d, field)).unwrap_or_default();
    let prefer_server_cipher_suites =
        map.get(PREFER_SERVER_CIPHER_SUITES.name).and_then(|field| d.choice(field, BOOLEAN)) == Some("true");
    Some(TlsSettings {
        cert_file: cert_file?,
        key_file: key_file?,
        client_auth: client_auth?,
        client_ca_file,
        min_version: min_version?,
        max_version: max_version?,
        cipher_suites,
        curves,
        prefer_server_cipher_suites,
    })
}

fn client_auth(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<ClientAuth> {
    let unsupported = ["RequestClientCert", "RequireAnyClientCert"];
    if let Some(name) = unsupported.iter().find(|name| is_scalar(field, name)) {
        let message = format!(
            "{}: {name} accepts client certificates without verifying them, which LibraFlux does not \
             do; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
            field.label()
        );
        d.error(field.position(), message);
        return None;
    }
    match CLIENT_AUTH_TYPE.choice(d, field)? {
        "VerifyClientCertIfGiven" => Some(ClientAuth::VerifyClientCertIfGiven),
        "RequireAndVerifyClientCert" => Some(ClientAuth::RequireAndVerifyClientCert),
        _ => Some(ClientAuth::NoClientCert),
    }
}

fn tls_version(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<TlsVersion> {
    if let Some(old) = ["TLS10", "TLS11"].iter().find(|name| is_scalar(field, name)) {
        let message =
            format!("{}: {old} is not offered (rustls speaks TLS 1.2 and 1.3); use TLS12", field.label());
        d.error(field.position(), message);
        return None;
    }
    match d.choice(field, VERSIONS)? {
        "TLS12" => Some(TlsVersion::Tls12),
        _ => Some(TlsVersion::Tls13),
    }
}

fn cipher_suites(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<&'static str> {
    let mut suites = Vec::new();
    for item in d.sequence(field).unwrap_or_default() {
        let item = field.item(item);
        let Some(name) = d.string(item) else { continue };
        let iana =
            if name.ends_with("CHACHA20_POLY1305") { format!("{name}_SHA256") } else { name.to_owned() };
        match TLS12_SUITES.iter().find(|known| **known == iana) {
            Some(known) if !suites.contains(known) => suites.push(*known),
            Some(_) => d.error(item.position(), format!("{}: {name} is listed twice", field.label())),
            None => d.error(
                item.position(),
                format!(
                    "{}: {name:?} is not a TLS 1.2 suite LibraFlux offers; the suites are: {}",
                    field.label(),
                    TLS12_SUITES.join(", ")
                ),
            ),
        }
    }
    suites
}

fn curves(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<&'static str> {
    let mut curves = Vec::new();
    for item in d.sequence(field).unwrap_or_default() {
        let item = field.item(item);
        let Some(name) = d.string(item) else { continue };
        match CURVES.iter().find(|(go, _)| *go == name) {
            Some((_, group)) if !curves.contains(group) => curves.push(*group),
            Some(_) => d.error(item.position(), format!("{}: {name} is listed twice", field.label())),
            None => {
                let known: Vec<&str> = CURVES.iter().map(|(go, _)| *go).collect();
                let message = format!(
                    "{}: {name:?} is not offered; the curves are: {}",
                    field.label(),
                    known.join(", ")
                );
                d.error(item.position(), message);
            }
        }
    }
    curves
}

fn users(d: &mut Diagnostics<'_>, field: Field<'_>) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    let Some(map) = mapping(d, field) else { return users };
    for key in map.keys() {
        let Some(value) = map.get(key.as_str()) else { continue };
        let user = key.as_str();
        if user.is_empty() || user.contains(':') {
            let message = format!("basic_auth_users: {user:?} cannot be a user name (empty, or has a colon)");
            d.error(value.key_position(), message);
            continue;
        }
        let Some(hash) = d.string(value) else { continue };
        if hash.parse::<bcrypt::HashParts>().is_err() {
            let message = format!(
                "basic_auth_users.{user}: not a bcrypt hash (like $2y$10$ followed by 53 characters); \
                 make one with `htpasswd -nBC 10 {user}`"
            );
            d.error(value.position(), message);
            continue;
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    users
}

fn http(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let Some(map) = d.section(field.value, field.position(), &HTTP) else { return headers };
    if let Some(http2) = map.get(HTTP2.name)
        && d.choice(http2, BOOLEAN) == Some("true")
    {
        d.warning(
            http2.position(),
            "http_server_config.http2: ignored; LibraFlux's endpoint speaks HTTP/1.1 only",
        );
    }
    let Some(field) = map.get(HTTP_HEADERS.name) else { return headers };
    let Some(map) = mapping(d, field) else { return headers };
    for key in map.keys() {
        let Some(value) = map.get(key.as_str()) else { continue };
        let Some(name) = HEADERS.iter().find(|name| name.eq_ignore_ascii_case(key.as_str())) else {
            let message = format!(
                "http_server_config.headers: {:?} may not be set; allowed: {}",
                key.as_str(),
                HEADERS.join(", ")
            );
            d.error(value.key_position(), message);
            continue;
        };
        let Some(text) = d.string(value) else { continue };
        if text.is_empty() || text.bytes().any(|byte| (byte < b' ' && byte != b'\t') || byte == 0x7f) {
            d.error(value.position(), format!("http_server_config.headers.{name}: not a valid header value"));
            continue;
        }
        headers.push(((*name).to_owned(), text.to_owned()));
    }
    headers
}

/// A mapping whose keys are data (user names, header names), not a fixed set.
fn mapping<'n>(d: &mut Diagnostics<'_>, field: Field<'n>) -> Option<Map<'n>> {
    d.any_mapping(field.value, field.position(), "")
}

fn is_scalar(field: Field<'_>, text: &str) -> bool {
    matches!(field.value, marked_yaml::Node::Scalar(scalar) if scalar.as_str() == text)
}

#[cfg(test)]
mod tests;
