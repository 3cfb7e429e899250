//! `libraflux convert nginx`: nginx `stream {}` proxies to LibraFlux services.
//!
//! [`include`] reads the main file and what it includes ([`lexer`] and [`parser`] apply nginx's
//! own rules), then [`mapping`] turns each stream `server` into services, reading its `upstream`
//! through [`upstream`] and judging every other directive through [`directives`]. Anything that
//! does not convert exactly is a [`Warning`] naming its `file:line`; anything that cannot be read
//! or parsed is a [`ConvertError`] naming its `file:line:col`, and then nothing is converted.

pub mod directives;
pub mod include;
pub mod lexer;
mod mapping;
pub mod parser;
pub mod upstream;
pub mod values;

use std::{collections::HashSet, net::IpAddr, path::Path};

pub use include::{Disk, Files};

use super::{Conversion, ConvertError, Place, Warning};

/// What the command line adds to the nginx configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The VIPs for `listen`s without an address: at most one IPv4 and one IPv6.
    pub vips: Vec<IpAddr>,
}

impl Options {
    fn vip(&self, v6: bool) -> Option<IpAddr> {
        self.vips.iter().copied().find(|vip| vip.is_ipv6() == v6)
    }
}

/// Converts the nginx configuration `input` (and what it includes) from the disk.
pub fn convert(input: &Path, options: &Options) -> Result<Conversion, ConvertError> {
    convert_with(input, options, &Disk)
}

/// [`convert`] reading files through `files`.
pub fn convert_with(input: &Path, options: &Options, files: &dyn Files) -> Result<Conversion, ConvertError> {
    let directives = include::load(input, files)?;
    Ok(mapping::map(&directives, options))
}

/// Warnings, each once (a directive inherited by many servers, or an upstream used by many, is
/// named once).
#[derive(Debug, Default)]
pub struct Warnings {
    list: Vec<Warning>,
    seen: HashSet<Warning>,
}

impl Warnings {
    pub fn add(&mut self, place: Place, message: impl Into<String>) {
        let warning = Warning { place, message: message.into() };
        if self.seen.insert(warning.clone()) {
            self.list.push(warning);
        }
    }

    /// The warnings ordered by file (as `files` orders them), then line, then as they were added.
    fn into_sorted(self, files: &[&Path]) -> Vec<Warning> {
        let mut list = self.list;
        let order = |place: &Place| files.iter().position(|file| **file == *place.file).unwrap_or(usize::MAX);
        list.sort_by_key(|warning| (order(&warning.place), warning.place.line));
        list
    }
}
