//! A real etcd (Debian's `etcd-server`) for a test: on loopback, random ports, its own data
//! directory, TLS with client certificates made by openssl ([`crate::pki`]). Killed on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use libraflux::etcd::{Client, TlsFiles};

use crate::pki::{issue, make_ca};

/// How long etcd may take to answer its first request.
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Etcd {
    child: Child,
    /// The test's directory: `ca.pem`, `server.*`, `client.*`, `etcd.log`, `data/`.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
}

impl Etcd {
    /// Makes a CA `ca`, a server certificate for 127.0.0.1 and a client certificate `client` in
    /// `dir`, and starts etcd requiring client certificates of that CA; returns once it answers.
    pub fn start(dir: &Path) -> Self {
        make_ca(dir, "ca");
        // clientAuth too: etcd's JSON gateway connects to etcd's own gRPC server with this
        // certificate, and etcd checks it as it checks every client's.
        issue(dir, "ca", "server", "serverAuth,clientAuth");
        issue(dir, "ca", "client", "clientAuth");
        let (client_port, peer_port) = (free_port(), free_port());
        let url = format!("https://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let path = |name: &str| dir.join(name).display().to_string();
        #[rustfmt::skip]
        let child = Command::new("etcd")
            .args([
                "--name", "test", "--data-dir", &path("data"),
                "--listen-client-urls", &url, "--advertise-client-urls", &url,
                "--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer,
                "--initial-cluster", &format!("test={peer}"),
                "--cert-file", &path("server.pem"), "--key-file", &path("server.key"),
                "--trusted-ca-file", &path("ca.pem"), "--client-cert-auth",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run etcd ({err}): `cargo xtask setup` installs etcd-server"));
        let etcd = Self { child, dir: dir.to_owned(), url };
        etcd.wait_until_it_answers();
        etcd
    }

    /// The client's TLS files: the CA, and `name.pem`/`name.key` when `name` is given.
    pub fn tls(&self, name: Option<&str>) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: name.map(|name| self.dir.join(format!("{name}.pem"))),
            key: name.map(|name| self.dir.join(format!("{name}.key"))),
        }
    }

    /// A library client with the client certificate.
    pub fn client(&self) -> Client {
        Client::new(std::slice::from_ref(&self.url), Some(&self.tls(Some("client")))).unwrap()
    }

    fn wait_until_it_answers(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = self.client();
        let started = Instant::now();
        loop {
            let answer = runtime.block_on(client.range(b"/", b""));
            if answer.is_ok() {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            assert!(started.elapsed() < STARTUP, "etcd did not answer within {STARTUP:?}: {answer:?}\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now (the kernel's choice, so tests side by side differ).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
