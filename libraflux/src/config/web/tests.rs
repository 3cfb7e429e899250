use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<WebConfig, Vec<String>> {
    parse_web_config(Path::new("/etc/libraflux/web.yml"), text).map(|(config, _)| config).map_err(
        |mut errors| {
            errors.0.sort_by_key(|error| error.position);
            errors.iter().map(ToString::to_string).collect()
        },
    )
}

#[test]
fn an_exporter_toolkit_file_decodes_with_paths_beside_it() {
    let hash = bcrypt::hash("secret", 4).expect("hash");
    let text = format!(
        "tls_server_config:\n  cert_file: tls/cert.pem\n  key_file: /secret/key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n  \
         cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305]\n  \
         curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: true\n\
         http_server_config:\n  headers:\n    strict-transport-security: max-age=31536000\n\
         basic_auth_users:\n  prometheus: {hash}\n"
    );
    let config = parse(&text).expect("valid");
    let tls = config.tls.expect("tls");
    assert_eq!(tls.cert_file, Path::new("/etc/libraflux/tls/cert.pem"));
    assert_eq!(tls.key_file, Path::new("/secret/key.pem"));
    assert_eq!(tls.client_ca_file.as_deref(), Some(Path::new("/etc/libraflux/ca.pem")));
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!((tls.min_version, tls.max_version), (TlsVersion::Tls13, TlsVersion::Tls13));
    assert_eq!(
        tls.cipher_suites,
        ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"]
    );
    assert_eq!(tls.curves, ["X25519", "secp256r1"]);
    assert!(tls.prefer_server_cipher_suites);
    assert_eq!(config.headers, [("Strict-Transport-Security".to_owned(), "max-age=31536000".to_owned())]);
    assert_eq!(config.basic_auth_users["prometheus"], hash);
}

#[test]
fn an_empty_file_asks_for_nothing() {
    assert_eq!(parse("").expect("valid"), WebConfig::default());
    assert_eq!(parse("# only a comment\n").expect("valid"), WebConfig::default());
}

#[test]
fn what_rustls_cannot_do_is_refused_by_name_with_its_position() {
    let text = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS11\n  \
                client_auth_type: RequireAnyClientCert\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n  \
                curve_preferences: [CurveP521]\n";
    let errors = parse(text).expect_err("refused");
    let expected = [
        "/etc/libraflux/web.yml:4:16: tls_server_config.min_version: TLS11 is not offered",
        "/etc/libraflux/web.yml:5:21: tls_server_config.client_auth_type: RequireAnyClientCert accepts",
        "/etc/libraflux/web.yml:6:19: tls_server_config.cipher_suites: \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not",
        "/etc/libraflux/web.yml:7:23: tls_server_config.curve_preferences: \"CurveP521\" is not offered",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, start) in errors.iter().zip(expected) {
        assert!(error.starts_with(start), "{error}\n  should start with\n{start}");
    }
}

#[test]
fn mistakes_are_reported_together_at_their_places() {
    let text = "tls_server_config:\n  cert_file: c.pem\n  client_auth_type: VerifyClientCertIfGiven\n  \
                max_version: TLS12\n  min_version: TLS13\n\
                basic_auth_users:\n  prometheus: plaintext\n  \"a:b\": x\n\
                http_server_config:\n  headers:\n    Content-Type: text/html\n\
                tls_config: {}\n";
    let errors = parse(text).expect_err("refused");
    let expected = [
        ":2:3: missing required key \"key_file\" in tls_server_config",
        ":3:21: tls_server_config.client_auth_type: verifying client certificates needs client_ca_file",
        ":4:16: tls_server_config.max_version: is lower than min_version",
        ":7:15: basic_auth_users.prometheus: not a bcrypt hash",
        ":8:3: basic_auth_users: \"a:b\" cannot be a user name",
        ":11:5: http_server_config.headers: \"Content-Type\" may not be set",
        ":12:1: unknown key \"tls_config\" in the top level",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, part) in errors.iter().zip(expected) {
        assert!(error.contains(part), "{error}\n  should contain\n{part}");
    }
}

#[test]
fn http2_is_accepted_and_said_to_be_ignored() {
    let (_, warnings) =
        parse_web_config(Path::new("w.yml"), "http_server_config:\n  http2: true\n").expect("valid");
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "w.yml:2:10: http_server_config.http2: ignored; LibraFlux's endpoint speaks HTTP/1.1 only",
            "w.yml: neither tls_server_config nor basic_auth_users: the endpoint stays open to anyone who can reach it",
        ]
    );
}

#[test]
fn basic_auth_without_tls_is_a_warning() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let (_, warnings) =
        parse_web_config(Path::new("w.yml"), &format!("basic_auth_users:\n  u: {hash}\n")).unwrap();
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["w.yml: basic_auth_users without tls_server_config: passwords cross the network in clear"]
    );
}
