//! Host tier: the metrics endpoint behind `metrics.web_config` (docs/metrics.md, "Beyond
//! loopback"). The certificates come from openssl, the bcrypt hashes from htpasswd
//! (apache2-utils), and the endpoint is scraped by curl and by a real Prometheus (Debian's
//! `prometheus`), all on loopback: a scrape with credentials succeeds over TLS, one without is
//! refused with 401; client certificates, the TLS version floor, a renewed certificate picked up
//! without a restart and a broken change that leaves the last good settings in force. The
//! `validate` command's checks of the setting run the CLI.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use libraflux::metrics::{
    Metrics,
    http::{Endpoint, Server},
    web::WebSource,
};
use libraflux_tests::pki::{self, issue, make_ca};
use tokio::sync::{oneshot, watch};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-secret";

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-tls-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The endpoint, serving `web_config`, on a loopback port.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(web_config: &Path) -> Self {
        let metrics = Arc::new(Metrics::new("lb-a", 100));
        let (_, status) = watch::channel(serde_json::json!({"node": "lb-a"}));
        let mut endpoint = Endpoint::new(metrics, status, Duration::from_secs(3600));
        let (source, warnings) = WebSource::open(web_config).expect("the web configuration loads");
        assert!(warnings.is_empty(), "{warnings:?}");
        endpoint.web = watch::channel(Some(Arc::new(source))).1;
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), endpoint).await.expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), serving }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.serving)
            .await
            .expect("stops")
            .expect("joins");
    }
}

/// What curl got: its exit code, the HTTP status (0 when there was none) and the headers.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    headers: String,
    body: String,
}

/// curl, run off the runtime's thread so that the in-process server can answer it.
async fn curl(dir: &Path, url: String, extra: &[&str]) -> Curl {
    let dir = dir.to_owned();
    let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let headers = dir.join("curl.headers");
        let body = dir.join("curl.body");
        let _ = std::fs::remove_file(&headers);
        let _ = std::fs::remove_file(&body);
        let output = Command::new("curl")
            .args(["--silent", "--max-time", "10", "--write-out", "%{http_code}", "--dump-header"])
            .arg(&headers)
            .arg("--output")
            .arg(&body)
            .args(&extra)
            .arg(&url)
            .current_dir(&dir)
            .output()
            .expect("curl runs");
        Curl {
            exit: output.status.code().unwrap_or(-1),
            status: String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read_to_string(&body).unwrap_or_default(),
        }
    })
    .await
    .expect("curl's thread")
}

/// A scratch directory with a CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and `web.yml` holding `web`, in which `{hash}` stands for the bcrypt hash of
/// [`PASSWORD`].
fn with_server_certificate(test: &str, web: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(test);
    make_ca(&dir, "ca");
    issue(&dir, "ca", "server", "serverAuth");
    let web = if web.contains("{hash}") {
        web.replace("{hash}", &pki::bcrypt_hash(&dir, USER, PASSWORD))
    } else {
        web.to_owned()
    };
    let web_config = dir.join("web.yml");
    std::fs::write(&web_config, web).unwrap();
    (dir, web_config)
}

fn with_auth(password: &str) -> String {
    format!("{USER}:{password}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_let_only_a_scraper_with_credentials_in() {
    let (dir, web_config) = with_server_certificate(
        "auth",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS13\n\
         http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n\
         basic_auth_users:\n  prometheus: {hash}\n",
    );
    let running = Running::start(&web_config).await;
    let url = format!("https://127.0.0.1:{}/metrics", running.addr.port());

    let anonymous = curl(&dir, url.clone(), &["--cacert", "ca.pem"]).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(anonymous.headers.to_ascii_lowercase().contains("www-authenticate: basic"), "{anonymous:?}");
    assert!(anonymous.headers.contains("max-age=31536000"), "headers on a refusal too: {anonymous:?}");
    assert!(!anonymous.body.contains("libraflux_"), "{anonymous:?}");

    let scraped = curl(&dir, url.clone(), &["--cacert", "ca.pem", "--user", &with_auth(PASSWORD)]).await;
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(scraped.body.contains("# TYPE libraflux_"), "{}", scraped.body);
    assert!(
        scraped.headers.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"),
        "{scraped:?}"
    );
    // Twice: the second answer comes from the remembered password, and is the same.
    let again = curl(&dir, url.clone(), &["--cacert", "ca.pem", "--user", &with_auth(PASSWORD)]).await;
    assert_eq!(again.status, 200, "{again:?}");
    for (who, credentials) in
        [("a wrong password", with_auth("guess")), ("an unknown user", "grafana:scrape-secret".to_owned())]
    {
        let refused = curl(&dir, url.clone(), &["--cacert", "ca.pem", "--user", &credentials]).await;
        assert_eq!(refused.status, 401, "{who}: {refused:?}");
    }
    for path in ["/status", "/healthz"] {
        let url = format!("https://127.0.0.1:{}{path}", running.addr.port());
        assert_eq!(curl(&dir, url, &["--cacert", "ca.pem"]).await.status, 401, "{path} is protected too");
    }

    // Not TLS, TLS 1.2 under a TLS 1.3 floor, a certificate nobody vouches for: no answer.
    let plain = curl(
        &dir,
        format!("http://127.0.0.1:{}/metrics", running.addr.port()),
        &["--user", &with_auth(PASSWORD)],
    )
    .await;
    assert_ne!(plain.status, 200, "{plain:?}");
    let old =
        curl(&dir, url.clone(), &["--cacert", "ca.pem", "--tls-max", "1.2", "--user", &with_auth(PASSWORD)])
            .await;
    assert_eq!((old.status, old.exit == 0), (0, false), "{old:?}");
    let untrusted = curl(&dir, url.clone(), &["--user", &with_auth(PASSWORD)]).await;
    assert_eq!((untrusted.status, untrusted.exit), (0, 60), "curl does not trust the test CA: {untrusted:?}");

    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_with_credentials_and_is_refused_without() {
    let (dir, web_config) = with_server_certificate(
        "prometheus",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n",
    );
    let running = Running::start(&web_config).await;
    let target = format!("127.0.0.1:{}", running.addr.port());
    let ca = dir.join("ca.pem");
    let config = format!(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\nscrape_configs:\n\
         - job_name: with_credentials\n  scheme: https\n  tls_config:\n    ca_file: {ca}\n  \
           basic_auth:\n    username: {USER}\n    password: {PASSWORD}\n  static_configs:\n    - targets: ['{target}']\n\
         - job_name: without_credentials\n  scheme: https\n  tls_config:\n    ca_file: {ca}\n  \
           static_configs:\n    - targets: ['{target}']\n",
        ca = ca.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (Debian package `prometheus`)"),
    );

    // Both targets scraped, within 30 s; the job with credentials up at its latest scrape (a
    // scrape that ran out of time on a loaded machine is not a refusal: it is tried again).
    let targets_url = format!("http://127.0.0.1:{port}/api/v1/targets");
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = |targets: &[serde_json::Value], name: &str| {
        targets.iter().find(|target| target["labels"]["job"] == name).cloned().unwrap_or_default()
    };
    let targets = loop {
        let answer = curl(&dir, targets_url.clone(), &[]).await;
        let parsed: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let active = parsed["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let scraped = active.len() == 2 && active.iter().all(|target| target["health"] != "unknown");
        if scraped && job(&active, "with_credentials")["health"] == "up" || Instant::now() >= deadline {
            assert!(
                scraped,
                "Prometheus did not scrape both jobs within 30 s: {}\n{}",
                answer.body,
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            break active;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let job = |name: &str| job(&targets, name);
    let with = job("with_credentials");
    assert_eq!(with["health"], "up", "{with}");
    let without = job("without_credentials");
    assert_eq!(without["health"], "down", "{without}");
    assert!(without["lastError"].as_str().unwrap_or_default().contains("401"), "{without}");

    drop(prometheus);
    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Killed on drop, so that a failed assertion leaves no Prometheus behind.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_against_client_ca_file() {
    let (dir, web_config) = with_server_certificate(
        "mtls",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    make_ca(&dir, "other");
    issue(&dir, "ca", "scraper", "clientAuth");
    issue(&dir, "other", "stranger", "clientAuth");
    let running = Running::start(&web_config).await;
    let url = format!("https://127.0.0.1:{}/metrics", running.addr.port());
    let ok =
        curl(&dir, url.clone(), &["--cacert", "ca.pem", "--cert", "scraper.pem", "--key", "scraper.key"])
            .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let none = curl(&dir, url.clone(), &["--cacert", "ca.pem"]).await;
    assert_ne!(none.status, 200, "{none:?}");
    let stranger =
        curl(&dir, url.clone(), &["--cacert", "ca.pem", "--cert", "stranger.pem", "--key", "stranger.key"])
            .await;
    assert_ne!(stranger.status, 200, "{stranger:?}");
    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_change_is_not() {
    let (dir, web_config) = with_server_certificate(
        "rotate",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
    );
    make_ca(&dir, "renewed");
    issue(&dir, "renewed", "next", "serverAuth");
    let running = Running::start(&web_config).await;
    let url = format!("https://127.0.0.1:{}/metrics", running.addr.port());
    assert_eq!(curl(&dir, url.clone(), &["--cacert", "ca.pem"]).await.status, 200);
    assert_ne!(curl(&dir, url.clone(), &["--cacert", "renewed.pem"]).await.status, 200, "not renewed yet");

    // Renewal as certbot-style tools do it: new files under the same names.
    std::fs::copy(dir.join("next.pem"), dir.join("server.pem")).unwrap();
    std::fs::copy(dir.join("next.key"), dir.join("server.key")).unwrap();
    let served_renewed = eventually(|| curl(&dir, url.clone(), &["--cacert", "renewed.pem"])).await;
    assert!(served_renewed, "the renewed certificate was not served within 10 s");

    // A broken web configuration: the renewed settings stay in force.
    std::fs::write(&web_config, "tls_server_config:\n  cert_file: [\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(curl(&dir, url.clone(), &["--cacert", "renewed.pem"]).await.status, 200);
    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether `attempt` answers 200 within 10 s (tried every 250 ms).
async fn eventually<F: Future<Output = Curl>>(mut attempt: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if attempt().await.status == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn validate(config: &Path) -> (i32, String) {
    let output = Command::new(libraflux_tests::libraflux_bin())
        .args(["validate", "-c"])
        .arg(config)
        .output()
        .expect("libraflux runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn validate_checks_the_web_config_and_warns_about_an_open_endpoint() {
    let dir = scratch("validate");
    let config = dir.join("config.yaml");
    std::fs::write(&config, "metrics:\n  listen: 0.0.0.0:9469\n").unwrap();
    let (code, stderr) = validate(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            ":2:11: metrics.listen: 0.0.0.0:9469 is not a loopback address and metrics.web_config is not set"
        ),
        "{stderr}"
    );

    make_ca(&dir, "ca");
    issue(&dir, "ca", "server", "serverAuth");
    let web_config = dir.join("web.yml");
    std::fs::write(&web_config, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
        .unwrap();
    let with_web = format!("metrics:\n  listen: 0.0.0.0:9469\n  web_config: {}\n", web_config.display());
    std::fs::write(&config, &with_web).unwrap();
    let (code, stderr) = validate(&config);
    assert_eq!((code, stderr.as_str()), (0, ""), "a good web configuration, nothing to say");

    // The key of another certificate: refused with exit 65, naming the file.
    issue(&dir, "ca", "other", "serverAuth");
    std::fs::write(&web_config, "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n")
        .unwrap();
    let (code, stderr) = validate(&config);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(&format!("{}: certificate and key_file", dir.join("server.pem").display())),
        "{stderr}"
    );

    std::fs::write(&web_config, "tls_server_config:\n  cert_file: server.pem\n  keyfile: server.key\n")
        .unwrap();
    let (code, stderr) = validate(&config);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains(&format!("{}:3:3: unknown key \"keyfile\"", web_config.display())), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
