//! A [`Conversion`] as files: one YAML file per group, named after its first service, each
//! starting with a comment that names its source. All of them are validated together with the
//! validator of `libraflux validate` before any is written; a file that exists is replaced only
//! when asked to, and each is written to a temporary name and renamed into place.

use std::{
    fmt::Write as _,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{CheckSpec, Conversion, Group, HealthSpec, Place, ServiceSpec, Warning};
use crate::config::{self, ConfigErrors, Source};

/// One file to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub text: String,
    /// Where its group came from.
    pub source: Place,
    /// The names of its services.
    pub services: Vec<String>,
}

/// The files for `conversion` in `dir`, in source order.
pub fn render(conversion: &Conversion, dir: &Path, tool: &str) -> Vec<OutputFile> {
    conversion
        .groups
        .iter()
        .map(|group| OutputFile {
            path: dir.join(format!("{}.yaml", group.services[0].name)),
            text: render_group(group, tool),
            source: group.source.clone(),
            services: group.services.iter().map(|service| service.name.clone()).collect(),
        })
        .collect()
}

fn render_group(group: &Group, tool: &str) -> String {
    let mut text = format!("# Converted by `{tool}` from {}.\n", one_line(&group.source.to_string()));
    for note in &group.notes {
        let _ = writeln!(text, "# {}", one_line(note));
    }
    text.push_str("services:\n");
    for service in &group.services {
        render_service(&mut text, service);
    }
    text
}

fn render_service(text: &mut String, service: &ServiceSpec) {
    let _ = writeln!(text, "  # From the listen at {}.", one_line(&service.source.to_string()));
    let _ = writeln!(text, "  - name: {}", service.name);
    let _ = writeln!(text, "    protocol: {}", service.protocol);
    let _ = writeln!(text, "    vip: {}", address(service.vip));
    let _ = writeln!(text, "    port: {}", service.port);
    let _ = writeln!(text, "    scheduler: {}", service.scheduler);
    text.push_str("    forwarding: nat\n");
    if service.remove_unhealthy {
        text.push_str("    on_unhealthy: remove\n");
    }
    render_health(text, &service.health);
    text.push_str("    backends:\n");
    for backend in &service.backends {
        let _ = writeln!(text, "      - address: {}", address(backend.address));
        let _ = writeln!(text, "        port: {}", backend.port);
        let _ = writeln!(text, "        weight: {}", backend.weight);
        if backend.max_connections > 0 {
            let _ = writeln!(text, "        max_connections: {}", backend.max_connections);
        }
    }
}

fn render_health(text: &mut String, health: &HealthSpec) {
    text.push_str("    health:\n");
    let kind = match &health.check {
        CheckSpec::None => {
            text.push_str("      type: none\n");
            return;
        }
        CheckSpec::Tcp => "tcp",
        CheckSpec::Dns { .. } => "udp_dns",
        CheckSpec::Sip => "udp_sip",
        CheckSpec::Ntp => "udp_ntp",
    };
    let _ = writeln!(text, "      type: {kind}");
    if let CheckSpec::Dns { query } = &health.check {
        let _ = writeln!(text, "      dns_query: {query}");
    }
    let _ = writeln!(text, "      interval: {}", duration(health.interval));
    let _ = writeln!(text, "      timeout: {}", duration(health.timeout));
    let _ = writeln!(text, "      rise: {}", health.rise);
    let _ = writeln!(text, "      fall: {}", health.fall);
}

/// `text` for a comment: its control characters escaped, since a line break in a name or argument
/// taken from the input (nginx unescapes `\r` and `\n` in quoted strings) would end the comment
/// and leave the rest of the line as YAML.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// Whole seconds as `10s`, anything else in milliseconds.
fn duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// IPv6 in quotes: a plain YAML scalar may not start with `::`.
fn address(address: IpAddr) -> String {
    if address.is_ipv6() { format!("\"{address}\"") } else { address.to_string() }
}

/// Validates `files` together, as `libraflux validate -c DIR` would load them. The validator's
/// own warnings (such as a UDP check it finds weak) come back as warnings.
pub fn validate(files: &[OutputFile]) -> Result<Vec<Warning>, ConfigErrors> {
    let sources: Vec<Source> = files.iter().map(|file| Source::new(&file.path, file.text.clone())).collect();
    let config = config::validate(&sources, "converted")?;
    Ok(config
        .warnings
        .into_iter()
        .map(|warning| Warning {
            place: Place {
                file: warning.file.into(),
                line: warning.position.map_or(1, |position| position.line),
            },
            message: warning.message,
        })
        .collect())
}

/// The files that exist already.
pub fn existing(files: &[OutputFile]) -> Vec<&Path> {
    files.iter().map(|file| file.path.as_path()).filter(|path| path.symlink_metadata().is_ok()).collect()
}

/// Writes every file (creating their directory): each to a temporary name beside it, then renamed
/// over the final one.
pub fn write(files: &[OutputFile]) -> io::Result<()> {
    for file in files {
        if let Some(dir) = file.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut temporary = file.path.clone().into_os_string();
        temporary.push(".tmp");
        fs::write(&temporary, &file.text)?;
        fs::rename(&temporary, &file.path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use super::*;
    use crate::convert::nginx::{self, Files, Options};

    /// One nginx.conf, in memory.
    struct OneFile(&'static str);

    impl Files for OneFile {
        fn read(&self, _: &Path) -> io::Result<Vec<u8>> {
            Ok(self.0.as_bytes().to_vec())
        }

        fn glob(&self, _: &Path) -> io::Result<Vec<PathBuf>> {
            Ok(Vec::new())
        }

        fn identity(&self, path: &Path) -> PathBuf {
            path.to_path_buf()
        }
    }

    /// Found by the fuzz target `nginx_convert`: a line break in `proxy_pass`'s arguments (from a
    /// quoted `\r\n`) reached the comment naming the backends, and the rest of that line became
    /// YAML that did not validate.
    #[test]
    fn line_breaks_from_the_input_stay_inside_their_comment() {
        let conf = "stream {\n  server {\n    listen 192.0.2.91:5432;\n    proxy_pass 10.0.2.100:1 \"x\\r\\ny\";\n  }\n}\n";
        let options = Options { vips: Vec::new() };
        let conversion = nginx::convert_with(Path::new("/n/nginx.conf"), &options, &OneFile(conf)).unwrap();
        let files = render(&conversion, Path::new("/out"), "test");
        assert!(files[0].text.contains(" 10.0.2.100:1 x\\r\\ny at /n/nginx.conf:4."), "{}", files[0].text);
        if let Err(errors) = validate(&files) {
            panic!("{errors}\n{}", files[0].text);
        }
    }
}
