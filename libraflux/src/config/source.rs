//! The `source:` section: where a fleet node's replicated configuration comes from. Today the one
//! kind is etcd (`source.etcd`): the daemon reads and watches its `config.d` there in place of the
//! node's own, and `libraflux config push|diff` use it as their defaults (docs/fleet.md,
//! "Configuration from etcd").

use std::path::PathBuf;

use super::{
    decode::{Diagnostics, Field},
    keys::{Default, Key, Section, Shape, Text},
    schema::clean,
};
use crate::etcd::TlsFiles;

/// `source.etcd` of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSource {
    /// `https://host:port` (or `http://`), tried in order.
    pub endpoints: Vec<String>,
    /// Every `config.d` file is the key `<prefix><file name>`; starts and ends with `/`.
    pub prefix: String,
    pub tls: Option<TlsFiles>,
}

/// Where `config push` writes and what it reads when `source.etcd.prefix` is not set.
pub const DEFAULT_PREFIX: &str = "/libraflux/fleet/";

pub(super) const SOURCE: Section = Section {
    context: "source",
    doc: "Where the replicated configuration (config.d) of a fleet comes from: the daemon reads and watches it there instead of the node's own config.d; libraflux config push|diff write and compare it.",
    keys: &[&ETCD],
};

const ETCD: Key = Key::required(
    "etcd",
    Shape::Mapping(&ETCD_SECTION),
    "etcd v3: one key per config.d file under a prefix.",
);

const ETCD_SECTION: Section = Section {
    context: "source.etcd",
    doc: "etcd v3, spoken over its JSON gateway: one key per config.d file under prefix.",
    keys: &[&ENDPOINTS, &PREFIX, &TLS],
};

const ENDPOINTS: Key = Key::required(
    "endpoints",
    Shape::List { item: &Shape::Text(Text::matching("^https?://")), min: 1, max: None },
    "etcd's client URLs, https://host:port (http:// without TLS), tried in order.",
);
const PREFIX: Key = Key::defaults_to(
    "prefix",
    Shape::Text(Text::matching("^/.*/$")),
    Default::Word(DEFAULT_PREFIX),
    "The key prefix: each config.d file is the key <prefix><file name>. Starts and ends with /.",
);
const TLS: Key =
    Key::optional("tls", Shape::Mapping(&TLS_SECTION), "TLS to etcd; needed by https endpoints.");

const TLS_SECTION: Section = Section {
    context: "source.etcd.tls",
    doc: "PEM files: the CA of etcd's server certificate, and this node's client certificate and key.",
    keys: &[&CA, &CERT, &KEY],
};

const ABSOLUTE_PATH: Text = Text::matching("^/");
const CA: Key = Key::required(
    "ca",
    Shape::Text(ABSOLUTE_PATH),
    "Absolute path of the CA certificate(s) that signed etcd's certificate.",
);
const CERT: Key = Key::optional(
    "cert",
    Shape::Text(ABSOLUTE_PATH),
    "Absolute path of the client certificate, for etcd's --client-cert-auth; with key.",
);
const KEY: Key = Key::optional(
    "key",
    Shape::Text(ABSOLUTE_PATH),
    "Absolute path of the client certificate's private key; with cert.",
);

pub(super) fn source(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<EtcdSource> {
    let map = d.section(field.value, field.position(), &SOURCE)?;
    let etcd = ETCD.field(d, &map)?;
    let map = d.section(etcd.value, etcd.position(), &ETCD_SECTION)?;
    clean(d, |d| {
        let endpoints = ENDPOINTS.field(d, &map).map(|field| endpoints(d, field)).unwrap_or_default();
        let prefix = map.get(PREFIX.name).map_or_else(
            || DEFAULT_PREFIX.to_owned(),
            |field| {
                let text = d.string(field).unwrap_or("/");
                if text.len() < 2 || !text.starts_with('/') || !text.ends_with('/') {
                    d.error(
                        field.position(),
                        format!("source.etcd.prefix: {text:?} must start and end with /"),
                    );
                }
                text.to_owned()
            },
        );
        let tls = map.get(TLS.name).and_then(|field| tls(d, field));
        if tls.is_none()
            && let Some(field) = map.get(ENDPOINTS.name)
            && endpoints.iter().any(|url| url.starts_with("https://"))
        {
            d.error(field.position(), "source.etcd.endpoints: an https endpoint needs source.etcd.tls");
        }
        EtcdSource { endpoints, prefix, tls }
    })
}

fn endpoints(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<String> {
    let items = d.sequence(field).unwrap_or_default();
    if items.is_empty() {
        d.error(field.position(), "source.etcd.endpoints: the list is empty");
    }
    let mut urls = Vec::new();
    for item in items {
        let item = field.item(item);
        let Some(url) = d.string(item) else { continue };
        if let Err(why) = crate::etcd::check_endpoint(url) {
            d.error(item.position(), format!("source.etcd.endpoints: {url:?}: {why}"));
        } else {
            urls.push(url.to_owned());
        }
    }
    urls
}

fn tls(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<TlsFiles> {
    let map = d.section(field.value, field.position(), &TLS_SECTION)?;
    let ca = CA.field(d, &map);
    clean(d, |d| {
        let mut path = |field: Field<'_>| -> PathBuf {
            let text = d.string(field).unwrap_or("/");
            if !text.starts_with('/') {
                d.error(field.position(), format!("{}: {text:?} must be an absolute path", field.label()));
            }
            text.into()
        };
        let ca = ca.map(&mut path).unwrap_or_default();
        let cert = map.get(CERT.name).map(&mut path);
        let key = map.get(KEY.name).map(&mut path);
        if cert.is_some() != key.is_some() {
            d.error(map.position(), "source.etcd.tls: cert and key go together");
        }
        TlsFiles { ca, cert, key }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::tests::load;

    #[test]
    fn a_full_section_decodes_and_prefix_has_a_default() {
        let config = load(
            "source:\n  etcd:\n    endpoints: [https://10.0.0.1:2379, \"https://[2001:db8::1]:2379\"]\n    tls: {ca: /etc/libraflux/etcd-ca.pem, cert: /etc/libraflux/etcd.pem, key: /etc/libraflux/etcd.key}\n",
        )
        .unwrap();
        let source = config.source.expect("a source section");
        assert_eq!(source.endpoints, ["https://10.0.0.1:2379", "https://[2001:db8::1]:2379"]);
        assert_eq!(source.prefix, DEFAULT_PREFIX);
        let tls = source.tls.expect("tls");
        assert_eq!(tls.ca, PathBuf::from("/etc/libraflux/etcd-ca.pem"));
        assert_eq!(tls.key, Some(PathBuf::from("/etc/libraflux/etcd.key")));
        assert_eq!(load("services: []\n").unwrap().source, None);
    }

    #[test]
    fn each_mistake_is_an_error_at_its_position() {
        let errors = load(
            "source:\n  etcd:\n    endpoints: [etcd-1:2379, https://e/v3]\n    prefix: fleet\n    tls: {ca: ca.pem, cert: /c.pem}\n    user: x\n",
        )
        .unwrap_err();
        for expected in [
            ":3:17: source.etcd.endpoints: \"etcd-1:2379\": ",
            ":3:30: source.etcd.endpoints: \"https://e/v3\": ",
            ":4:13: source.etcd.prefix: \"fleet\" must start and end with /",
            ":5:15: source.etcd.tls.ca: \"ca.pem\" must be an absolute path",
            ":5:11: source.etcd.tls: cert and key go together",
            ":6:5: unknown key \"user\" in source.etcd",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
        let errors = load("source:\n  etcd:\n    endpoints: [https://10.0.0.1:2379]\n").unwrap_err();
        assert!(
            errors.contains(":3:16: source.etcd.endpoints: an https endpoint needs source.etcd.tls"),
            "{errors}"
        );
        let errors = load(
            "source:\n  etcd: {endpoints: [http://10.0.0.1:2379]}\nreplication:\n  role: secondary\n  listen: 10.0.0.2:9470\n  peer: 10.0.0.1:9470\n  key_files: [/k]\n",
        )
        .unwrap_err();
        assert!(errors.contains(":1:1: source.etcd and replication cannot both be set"), "{errors}");
        let errors = load("source: {}\n").unwrap_err();
        assert!(errors.contains("missing required key \"etcd\" in source"), "{errors}");
    }
}
