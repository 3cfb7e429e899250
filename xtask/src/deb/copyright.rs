//! The package's version and its machine-readable copyright file, both from `cargo metadata`.
//! The binary links every crate it depends on statically (and embeds the eBPF object built from
//! `libraflux-ebpf` and its crates), so the copyright file names each of them with the license
//! its Cargo.toml declares.

use std::{
    collections::{BTreeSet, HashMap},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::util::{cargo, output};

/// The license every workspace crate declares, and how the copyright format names it.
const WORKSPACE_LICENSE: (&str, &str) = ("MIT OR Apache-2.0", "Expat or Apache-2.0");

/// Workspace crates whose code ends up in the package: the binary's and the embedded eBPF
/// object's.
const SHIPPED: &[&str] = &["libraflux", "libraflux-ebpf"];

const EXPAT: &str = "\
License: Expat
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the \"Software\"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.
";

const APACHE: &str = "\
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";

#[derive(Debug)]
pub(super) struct Metadata {
    json: Value,
}

impl Metadata {
    /// `cargo metadata` for the build machine's platform, from Cargo.lock as it is.
    pub(super) fn read() -> anyhow::Result<Self> {
        let rustc = output(Command::new("rustc").arg("-vV"))?;
        let Some(host) = rustc.lines().find_map(|line| line.strip_prefix("host: ")) else {
            bail!("`rustc -vV` names no host: {rustc}");
        };
        let said = output(cargo().args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            host,
        ]))?;
        Ok(Self { json: serde_json::from_str(&said).context("parsing cargo metadata")? })
    }

    pub(super) fn version(&self, name: &str) -> anyhow::Result<String> {
        let package = self.packages().find(|package| package["name"] == name);
        let version = package.and_then(|package| package["version"].as_str());
        version.map(str::to_owned).with_context(|| format!("cargo metadata has no version of {name}"))
    }

    /// DEBIAN's `copyright` file in the machine-readable format (copyright-format 1.0).
    pub(super) fn copyright(&self, package: &str, years: &str) -> anyhow::Result<String> {
        let license = self.packages().find(|found| found["name"] == package).map(|found| &found["license"]);
        if license.and_then(Value::as_str) != Some(WORKSPACE_LICENSE.0) {
            bail!(
                "{package} is no longer licensed {}: update xtask/src/deb/copyright.rs",
                WORKSPACE_LICENSE.0
            );
        }
        let crates: String = self.linked_crates()?.iter().map(|line| format!(" {line}\n")).collect();
        Ok(format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: {package}\n\
             Comment: The libraflux binary links these Rust crates statically, each under the\n \
             license its Cargo.toml declares:\n .\n{crates}\n\
             Files: *\nCopyright: {years} The LibraFlux contributors\nLicense: {}\n\n{EXPAT}\n{APACHE}",
            WORKSPACE_LICENSE.1
        ))
    }

    /// `name version: license` of every crate outside the workspace that a shipped crate
    /// depends on as a normal (not dev, not build) dependency, directly or not, other than
    /// procedural macros; sorted.
    fn linked_crates(&self) -> anyhow::Result<BTreeSet<String>> {
        let by_id: HashMap<&str, &Value> =
            self.packages().filter_map(|package| Some((package["id"].as_str()?, package))).collect();
        let nodes =
            self.json["resolve"]["nodes"].as_array().context("cargo metadata has no resolve graph")?;
        let deps: HashMap<&str, &Value> =
            nodes.iter().filter_map(|node| Some((node["id"].as_str()?, &node["deps"]))).collect();
        let members: BTreeSet<&str> = self.json["workspace_members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();

        let mut todo: Vec<&str> = by_id
            .iter()
            .filter(|(_, package)| SHIPPED.iter().any(|name| package["name"] == *name))
            .map(|(id, _)| *id)
            .collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some(id) = todo.pop() {
            // A procedural macro runs in the compiler; neither it nor what it uses is linked.
            if by_id.get(id).is_some_and(|package| is_proc_macro(package)) || !seen.insert(id) {
                continue;
            }
            for dep in deps.get(id).and_then(|deps| deps.as_array()).into_iter().flatten() {
                let normal =
                    dep["dep_kinds"].as_array().into_iter().flatten().any(|kind| kind["kind"].is_null());
                if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                    todo.push(pkg);
                }
            }
        }
        Ok(seen
            .iter()
            .filter(|id| !members.contains(*id))
            .filter_map(|id| by_id.get(id))
            .map(|package| {
                let license = package["license"].as_str().unwrap_or("see the license file in its source");
                format!(
                    "{} {}: {license}",
                    package["name"].as_str().unwrap_or("?"),
                    package["version"].as_str().unwrap_or("?")
                )
            })
            .collect())
    }

    fn packages(&self) -> impl Iterator<Item = &Value> {
        self.json["packages"].as_array().into_iter().flatten()
    }
}

fn is_proc_macro(package: &Value) -> bool {
    let kinds =
        package["targets"].as_array().into_iter().flatten().flat_map(|target| target["kind"].as_array());
    kinds.flatten().any(|kind| kind == "proc-macro")
}
