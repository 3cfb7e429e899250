use std::{collections::HashMap, path::Path};

use base64::Engine as _;
use hyper::header::HeaderValue;

use super::*;

fn basic(user: &str, password: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
}

fn auth() -> BasicAuth {
    let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
    BasicAuth::new(HashMap::from([("prometheus".to_owned(), hash)]))
}

#[tokio::test]
async fn only_the_right_user_and_password_pass() {
    let auth = auth();
    assert!(auth.check(Some(&basic("prometheus", "s3cret:with colon"))).await);
    // Remembered: the second time does not need bcrypt, and still compares the password.
    assert!(auth.check(Some(&basic("prometheus", "s3cret:with colon"))).await);
    assert!(!auth.check(Some(&basic("prometheus", "s3cret"))).await);
    assert!(!auth.check(Some(&basic("grafana", "s3cret:with colon"))).await);
    assert!(!auth.check(None).await);
    for header in ["Bearer abc", "Basic !!!", "Basic cHJvbWV0aGV1cw=="] {
        assert!(!auth.check(Some(&HeaderValue::from_static(header))).await, "{header}");
    }
}

#[test]
fn a_password_is_remembered_only_with_its_user_and_hash() {
    let one = digest("a", "$2y$04$x", "pw");
    assert_eq!(one, digest("a", "$2y$04$x", "pw"));
    assert_ne!(one, digest("a", "$2y$04$y", "pw"));
    assert_ne!(one, digest("a", "$2y$04$x", "pw2"));
    // Lengths are part of the digest: moving a character between parts changes it.
    assert_ne!(digest("ab", "c", "d"), digest("a", "bc", "d"));
}

#[test]
fn a_missing_credential_directory_is_named() {
    let error = WebSource::open(Path::new("web.yml")).expect_err("no $CREDENTIALS_DIRECTORY in tests");
    assert!(error.to_string().contains("LoadCredential=web.yml:/etc/libraflux/web.yml"), "{error}");
}

#[test]
fn a_stamp_changes_with_the_file() {
    let dir = std::env::temp_dir().join(format!("libraflux-web-stamp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yml");
    std::fs::write(&file, "a").unwrap();
    let first = Stamp::of(std::slice::from_ref(&file));
    assert_eq!(first, Stamp::of(std::slice::from_ref(&file)));
    std::fs::write(&file, "ab").unwrap();
    assert_ne!(first, Stamp::of(std::slice::from_ref(&file)));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(Stamp::of(std::slice::from_ref(&file)).0[0].1, None);
}

/// The names the configuration accepts are names rustls knows: a suite or curve the config
/// checker lets through is one the endpoint really offers.
#[test]
fn every_suite_and_curve_the_config_accepts_is_one_rustls_offers() {
    #[allow(deprecated)]
    let provider = ring::default_provider();
    for name in config::TLS12_SUITES {
        let found = provider.cipher_suites.iter().any(|suite| format!("{:?}", suite.suite()) == *name);
        assert!(found, "{name} is not a suite of rustls' ring provider");
    }
    for (go, group) in config::CURVES {
        let found = provider.kx_groups.iter().any(|kx| format!("{:?}", kx.name()) == *group);
        assert!(found, "{go} ({group}) is not a group of rustls' ring provider");
    }
}
