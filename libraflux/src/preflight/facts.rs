//! Gathers what the checks look at: IPVS's answer, the node's addresses (rtnetlink) and the
//! kernel's modules (procfs and modules.dep). The only kernel I/O of the pre-flight checks.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{address::AddressAttribute, link::LinkAttribute};

use crate::ipvs::Info;

/// The facts about this node that the checks decide on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// IPVS's info, or why it could not be had.
    pub ipvs: Result<Info, String>,
    /// Every local address and the interfaces that hold it.
    pub addresses: BTreeMap<IpAddr, Vec<String>>,
    /// The names of the node's network interfaces.
    pub links: BTreeSet<String>,
    /// Modules in /proc/modules.
    pub loaded_modules: BTreeSet<String>,
    /// Modules the running kernel could load or has built in.
    pub available_modules: BTreeSet<String>,
    /// The IPVS sysctls that decide what happens to connections of a removed or quiesced
    /// backend, or why they could not be read.
    pub vs_sysctls: Result<VsSysctls, String>,
    /// `net.ipv4.vs.sync_version`: the sync message format the connection sync daemon sends, or
    /// why it could not be read.
    pub sync_version: Result<u32, String>,
}

/// `/proc/sys/net/ipv4/vs/{expire_nodest_conn,expire_quiescent_template,conn_reuse_mode}`
/// (see docs/connection-behavior.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsSysctls {
    pub expire_nodest_conn: u32,
    pub expire_quiescent_template: u32,
    pub conn_reuse_mode: u32,
}

/// `/proc/sys/net/ipv4/vs/NAME` of the calling thread's network namespace.
fn read_vs_sysctl(name: &str) -> Result<u32, String> {
    let path = format!("/proc/sys/net/ipv4/vs/{name}");
    let text = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    text.trim().parse::<u32>().map_err(|err| format!("{path}: {text:?}: {err}"))
}

impl VsSysctls {
    /// Reads the three sysctls of the calling thread's network namespace.
    pub fn read() -> Result<Self, String> {
        let read = read_vs_sysctl;
        Ok(Self {
            expire_nodest_conn: read("expire_nodest_conn")?,
            expire_quiescent_template: read("expire_quiescent_template")?,
            conn_reuse_mode: read("conn_reuse_mode")?,
        })
    }
}

/// Gathers the facts; `ipvs` is the outcome of asking IPVS for its info.
pub async fn gather(ipvs: Result<Info, String>) -> std::io::Result<NodeFacts> {
    let (addresses, links) = local_addresses().await?;
    Ok(NodeFacts {
        ipvs,
        addresses,
        links,
        loaded_modules: loaded_modules(),
        available_modules: available_modules(),
        vs_sysctls: VsSysctls::read(),
        sync_version: read_vs_sysctl("sync_version"),
    })
}

/// Every local address with the interfaces that hold it, and every interface's name.
async fn local_addresses() -> std::io::Result<(BTreeMap<IpAddr, Vec<String>>, BTreeSet<String>)> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let result = async {
        let mut names = BTreeMap::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(rtnetlink_error("listing links"))? {
            for attribute in &link.attributes {
                if let LinkAttribute::IfName(name) = attribute {
                    names.insert(link.header.index, name.clone());
                }
            }
        }
        let mut holders: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        let mut addresses = handle.address().get().execute();
        while let Some(message) = addresses.try_next().await.map_err(rtnetlink_error("listing addresses"))? {
            // IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS elsewhere.
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(addr) => Some(*addr),
                _ => None,
            });
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(addr) => Some(*addr),
                _ => None,
            });
            if let Some(addr) = local.or(address) {
                let name = names
                    .get(&message.header.index)
                    .cloned()
                    .unwrap_or_else(|| message.header.index.to_string());
                holders.entry(addr).or_default().push(name);
            }
        }
        Ok((holders, names.into_values().collect()))
    }
    .await;
    task.abort();
    result
}

fn rtnetlink_error(operation: &'static str) -> impl Fn(rtnetlink::Error) -> std::io::Error {
    move |err| std::io::Error::other(format!("rtnetlink: {operation}: {err}"))
}

fn loaded_modules() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Module names from the running kernel's modules.dep (loadable) and modules.builtin.
fn available_modules() -> BTreeSet<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = format!("/lib/modules/{}", release.trim());
    let mut names = BTreeSet::new();
    for file in ["modules.dep", "modules.builtin"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_default();
        for line in text.lines() {
            let path = line.split(':').next().unwrap_or_default();
            let base = path.rsplit('/').next().unwrap_or_default();
            if let Some(name) = base.split(".ko").next().filter(|name| !name.is_empty()) {
                // modprobe treats - and _ alike; the kernel reports _.
                names.insert(name.replace('-', "_"));
            }
        }
    }
    names
}
