//! Certificates for the TLS tests, made by openssl in a test's directory, and bcrypt hashes made
//! by htpasswd: the tools an operator uses, independent of the code under test.

use std::{path::Path, process::Command};

/// Runs `program` in `dir`; its stdout, or a panic with everything it said.
pub fn tool(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|err| {
        panic!("cannot run {program} ({err}): `cargo xtask setup` installs openssl, apache2-utils and curl")
    });
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} failed:\n{said}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A CA named `ca` (`ca.pem`, `ca.key`) in `dir`, valid for two days.
pub fn make_ca(dir: &Path, ca: &str) {
    let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
    #[rustfmt::skip]
    tool("openssl", &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &format!("/CN=libraflux test {ca}"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    ], dir);
}

/// A certificate `name` (`name.pem`, `name.key`) issued by `ca` for 127.0.0.1, for `usage`
/// (`serverAuth`, `clientAuth`, or both: `serverAuth,clientAuth`).
pub fn issue(dir: &Path, ca: &str, name: &str, usage: &str) {
    issue_for(dir, ca, name, usage, "127.0.0.1");
}

/// [`issue`] for the IP address `address`.
pub fn issue_for(dir: &Path, ca: &str, name: &str, usage: &str, address: &str) {
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let ext = format!("{name}.ext");
    let extensions =
        format!("subjectAltName=IP:{address}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    #[rustfmt::skip]
    tool("openssl", &[
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}"),
    ], dir);
    #[rustfmt::skip]
    tool("openssl", &[
        "x509", "-req", "-in", &csr, "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"),
        "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &ext,
    ], dir);
}

/// `htpasswd -nbBC 10 user password`'s hash.
pub fn bcrypt_hash(dir: &Path, user: &str, password: &str) -> String {
    let line = tool("htpasswd", &["-nbBC", "10", user, password], dir);
    line.trim().strip_prefix(&format!("{user}:")).expect("htpasswd prints user:hash").to_owned()
}
