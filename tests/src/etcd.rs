//! A real etcd (Debian's `etcd-server`) for a test: on loopback, random ports, its own data
//! directory, TLS with client certificates made by openssl ([`crate::pki`]); or in a namespace
//! of the test's, on an address there. Stopped and started again on its data on request; killed
//! on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use libraflux::etcd::{Client, TlsFiles};

use crate::{
    NetNs,
    pki::{issue, issue_for, make_ca},
};

/// How long etcd may take to answer its first request.
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    /// The test's directory: `ca.pem`, `server.*`, `client.*`, `etcd.log`, `data/`.
    pub dir: PathBuf,
    /// `https://ADDRESS:PORT`.
    pub url: String,
    /// The namespace etcd runs in (`ip netns exec`); `None`: the test's own.
    netns: Option<String>,
    args: Vec<String>,
}

impl Etcd {
    /// Makes a CA `ca`, a server certificate for 127.0.0.1 and a client certificate `client` in
    /// `dir`, and starts etcd requiring client certificates of that CA; returns once it answers.
    pub fn start(dir: &Path) -> Self {
        let (client_port, peer_port) = (free_port(), free_port());
        Self::start_on(dir, None, "127.0.0.1", client_port, peer_port)
    }

    /// [`Etcd::start`] in the namespace `netns` (the test's own when `None`), listening on
    /// `address`: the server certificate is for `address`, and the test waits for etcd from
    /// inside `netns`.
    pub fn start_on(
        dir: &Path,
        netns: Option<&NetNs>,
        address: &str,
        client_port: u16,
        peer_port: u16,
    ) -> Self {
        make_ca(dir, "ca");
        // clientAuth too: etcd's JSON gateway connects to etcd's own gRPC server with this
        // certificate, and etcd checks it as it checks every client's.
        issue_for(dir, "ca", "server", "serverAuth,clientAuth", address);
        issue(dir, "ca", "client", "clientAuth");
        let url = format!("https://{address}:{client_port}");
        let peer = format!("http://{address}:{peer_port}");
        let path = |name: &str| dir.join(name).display().to_string();
        #[rustfmt::skip]
        let args = [
            "--name", "test", "--data-dir", &path("data"),
            "--listen-client-urls", &url, "--advertise-client-urls", &url,
            "--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer,
            "--initial-cluster", &format!("test={peer}"),
            "--cert-file", &path("server.pem"), "--key-file", &path("server.key"),
            "--trusted-ca-file", &path("ca.pem"), "--client-cert-auth",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut etcd = Self {
            child: None,
            dir: dir.to_owned(),
            url,
            netns: netns.map(|netns| netns.name().to_owned()),
            args,
        };
        etcd.restart();
        etcd
    }

    /// Stops etcd (SIGKILL): its data directory stays for [`Etcd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on its data directory; returns once it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log")).unwrap();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "etcd"]);
                command
            }
            None => Command::new("etcd"),
        };
        let child = command
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run etcd ({err}): `cargo xtask setup` installs etcd-server")
            });
        self.child = Some(child);
        self.wait_until_it_answers();
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
        let (client, dir) = (self.client(), self.dir.clone());
        let wait = move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let started = Instant::now();
            loop {
                let answer = runtime.block_on(client.range(b"/", b""));
                if answer.is_ok() {
                    return;
                }
                let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
                assert!(
                    started.elapsed() < STARTUP,
                    "etcd did not answer within {STARTUP:?}: {answer:?}\n{log}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        match &self.netns {
            Some(netns) => {
                crate::spawn_in(netns, wait).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            None => wait(),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on now (the kernel's choice, so tests side by side differ).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
