//! The attach mode follows the kernel: tcx links from Linux 6.6 (the host, the 6.12 VM), netlink
//! clsact filters before (the 6.1 VM). Each run asserts the mode its kernel must give and checks
//! it from the kernel's side: `tc` lists a bpf filter only for clsact, and a query of the
//! interface's tcx hook lists the program only for tcx.

use aya::programs::{SchedClassifier, tc::TcAttachType};
use libraflux::observe::{AttachMode, Direction};
use libraflux_tests::{VethPair, attached_programs, counter_at};

/// `(major, minor)` of a release like `6.12.118+deb12-amd64`.
fn version(release: &str) -> (u32, u32) {
    let mut parts = release.split(['.', '-', '+']).map(|part| part.parse().expect("a numeric version"));
    (parts.next().expect("major"), parts.next().expect("minor"))
}

#[test]
fn the_attach_mode_follows_the_kernel_version() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_owned();
    let expected = if version(&release) >= (6, 6) { AttachMode::Tcx } else { AttachMode::NetlinkClsact };
    assert_eq!(AttachMode::current(), expected, "Linux {release}");

    let pair = VethPair::new();
    let counter = counter_at(&pair.right, VethPair::RIGHT_IF, Direction::Ingress, Vec::new());
    let filters = pair.right.exec("tc", &["filter", "show", "dev", VethPair::RIGHT_IF, "ingress"]);
    let tcx = pair.right.enter(|| SchedClassifier::query_tcx(VethPair::RIGHT_IF, TcAttachType::Ingress));
    match expected {
        AttachMode::Tcx => {
            assert!(!filters.contains("bpf"), "a clsact filter on a tcx kernel: {filters}");
            let (_, programs) = tcx.expect("the tcx hook answers a query");
            assert_eq!(programs.len(), 1, "one tcx program at ingress");
        }
        AttachMode::NetlinkClsact => {
            assert!(filters.contains("bpf"), "no clsact bpf filter: {filters:?}");
            let programs = tcx.map(|(_, programs)| programs.len()).unwrap_or(0);
            assert_eq!(programs, 0, "a tcx program on a kernel before 6.6");
        }
    }
    assert_eq!(attached_programs(&pair.right, VethPair::RIGHT_IF, "ingress").len(), 1);
    drop(counter);
    assert_eq!(attached_programs(&pair.right, VethPair::RIGHT_IF, "ingress"), [], "detached on drop");
    eprintln!("Linux {release}: the counter attaches as {expected:?}");
}

#[test]
fn versions_parse_from_debian_releases() {
    assert_eq!(version("6.1.0-57-amd64"), (6, 1));
    assert_eq!(version("6.12.118+deb12-amd64"), (6, 12));
    assert_eq!(version("6.18.3"), (6, 18));
}
