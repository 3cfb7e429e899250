//! The VM really has IPVS: the generic-netlink family resolves and ipvsadm works, in a fresh
//! network namespace (IPVS tables are per namespace).

use libraflux_tests::NetNs;

#[test]
fn ipvs_generic_netlink_family_resolves() {
    let netns = NetNs::new("smoke");
    let family_id = netns.enter(|| libraflux_tests::genl_family_id("IPVS"));
    assert!(family_id >= 0x10, "generic netlink ids start at GENL_MIN_ID (16), got {family_id}");
}

#[test]
fn ipvsadm_lists_adds_and_deletes_in_a_fresh_namespace() {
    let netns = NetNs::new("smoke");
    let empty = netns.exec("ipvsadm", &["-Ln"]);
    assert!(empty.starts_with("IP Virtual Server version"), "unexpected ipvsadm output:\n{empty}");
    assert!(!empty.contains("TCP"), "a fresh namespace has an empty table:\n{empty}");
    netns.exec("ipvsadm", &["-A", "-t", "10.250.0.1:80", "-s", "wrr"]);
    netns.exec("ipvsadm", &["-a", "-t", "10.250.0.1:80", "-r", "10.250.0.2:8080", "-m", "-w", "3"]);
    let saved = netns.exec("ipvsadm-save", &["-n"]);
    assert_eq!(saved, "-A -t 10.250.0.1:80 -s wrr\n-a -t 10.250.0.1:80 -r 10.250.0.2:8080 -m -w 3\n");
    netns.exec("ipvsadm", &["-C"]);
    assert_eq!(netns.exec("ipvsadm-save", &["-n"]), "");
}
