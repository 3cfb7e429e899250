//! Host tier: the pre-flight facts come from the real kernel (rtnetlink), in a fresh namespace.

use std::net::IpAddr;

use libraflux::preflight::{NodeFacts, gather};
use libraflux_tests::NetNs;

fn facts_in(netns: &NetNs) -> NodeFacts {
    netns.enter(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(gather(Err("not asked".to_owned()))).expect("gather node facts")
    })
}

#[test]
fn finds_addresses_with_the_interfaces_that_hold_them() {
    let netns = NetNs::new("preflight");
    // veth, not dummy: the host kernel has no dummy driver.
    netns.ip(&["link", "add", "vips0", "type", "veth", "peer", "name", "vips1"]);
    netns.ip(&["addr", "add", "10.210.0.10/32", "dev", "vips0"]);
    netns.ip(&["addr", "add", "fd00:210::10/128", "dev", "vips0", "nodad"]);
    netns.ip(&["link", "set", "vips0", "up"]);
    let facts = facts_in(&netns);
    let v4: IpAddr = "10.210.0.10".parse().unwrap();
    let v6: IpAddr = "fd00:210::10".parse().unwrap();
    assert_eq!(facts.addresses.get(&v4), Some(&vec!["vips0".to_owned()]), "{:?}", facts.addresses);
    assert_eq!(facts.addresses.get(&v6), Some(&vec!["vips0".to_owned()]), "{:?}", facts.addresses);
    assert_eq!(facts.addresses.get(&"127.0.0.1".parse::<IpAddr>().unwrap()), Some(&vec!["lo".to_owned()]));
    assert!(!facts.addresses.contains_key(&"10.210.0.11".parse::<IpAddr>().unwrap()));
    // Interfaces with and without an address (the sync check looks for sync.interface here).
    let links: Vec<&str> = facts.links.iter().map(String::as_str).collect();
    assert_eq!(links, ["lo", "vips0", "vips1"]);
}
