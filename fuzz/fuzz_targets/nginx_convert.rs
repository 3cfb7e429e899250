//! Arbitrary bytes as an nginx configuration: lexing, parsing, following includes and converting
//! must never panic, and whatever converts must render to YAML the config validator accepts.
//! `nginx.conf` is the input; `a.conf` (reached by `include a.conf` or `include *.conf`) is the
//! input again, so loops are exercised too.
//!
//! Run with `cargo +nightly fuzz run nginx_convert -- -max_total_time=60` from `fuzz/`.

#![no_main]

use std::{
    io,
    path::{Path, PathBuf},
};

use libfuzzer_sys::fuzz_target;
use libraflux::convert::{
    nginx::{self, Files, Options},
    output,
};

/// Two names for the same bytes.
struct Memory<'d>(&'d [u8]);

impl Files for Memory<'_> {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/n/nginx.conf" | "/n/a.conf") => Ok(self.0.to_vec()),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn glob(&self, _pattern: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(vec![PathBuf::from("/n/a.conf")])
    }

    fn identity(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

fuzz_target!(|data: &[u8]| {
    let options = Options { vips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()] };
    if let Ok(conversion) = nginx::convert_with(Path::new("/n/nginx.conf"), &options, &Memory(data)) {
        let files = output::render(&conversion, Path::new("/out"), "fuzz");
        // Names, keys and values come from the mapping: the validator must accept them all.
        if let Err(errors) = output::validate(&files) {
            panic!("converted output does not validate:\n{errors}");
        }
    }
});
