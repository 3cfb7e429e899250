//! Captures the kernel's own reply bytes for the packet layer's fixtures
//! (`libraflux/src/ipvs/packet/fixtures/`, see the README there).
//!
//! Every VM run captures the replies and checks that they decode to the state ipvsadm set up,
//! so the packet layer is proven on real kernel bytes each time. With
//! `LIBRAFLUX_WRITE_FIXTURES=DIR` in the environment the datagrams are also written to DIR;
//! counters, rates and port ids differ between runs, so the files are regenerated on purpose
//! only.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use libraflux::{
    ipvs::packet::{
        IpvsAttr, IpvsCmd, IpvsMessage, decode_datagram, dest_from_attrs, encode_request, service_identity,
    },
    model::{Family, Forwarding},
};
use libraflux_tests::NetNs;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload};

use super::support::{key, service};

/// The state the fixtures show; the README repeats it.
const RULES: &[&str] = &[
    "-A -t 10.30.0.1:80 -s wrr -p 300 -M 255.255.255.0",
    "-A -u [fd00:30::1]:53 -s sh -p 60 -M 64",
    "-A -f 7 -s rr",
    "-A -f 8 -6 -s lc -p 30",
    "-A -u 10.30.0.1:53 -s rr",
    "-a -u 10.30.0.1:53 -r 10.30.0.2:5353 -m -w 3 -x 100 -y 10",
    "-a -u 10.30.0.1:53 -r 10.30.0.3:53 -g -w 1",
    "-a -u 10.30.0.1:53 -r 10.30.0.4:53 -i -w 2",
];

/// Datagrams sent through the VIP, one per source port (so one connection each).
const FLOWS: u16 = 6;
const PAYLOAD: &[u8] = b"libraflux capture";

/// A raw generic-netlink socket that sends one request and keeps every reply datagram.
pub(super) struct RawIpvs {
    socket: netlink_sys::Socket,
    family_id: u16,
    sequence: u32,
}

impl RawIpvs {
    pub(super) fn open() -> Self {
        let family_id = libraflux_tests::genl_family_id("IPVS");
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_GENERIC).expect("socket");
        socket.bind_auto().expect("bind");
        socket.connect(&netlink_sys::SocketAddr::new(0, 0)).expect("connect");
        // As IpvsClient does: errors echo only the request header.
        socket.set_cap_ack(true).expect("NETLINK_CAP_ACK");
        Self { socket, family_id, sequence: 100 }
    }

    /// Sends `message` and returns the concatenated reply datagrams, up to the ack, error or DONE.
    pub(super) fn request(&mut self, flags: u16, message: IpvsMessage) -> Vec<u8> {
        self.sequence += 1;
        let sequence = self.sequence;
        let bytes = encode_request(self.family_id, sequence, flags, message);
        self.socket.send(&bytes, 0).expect("send");
        let mut reply = Vec::new();
        for _ in 0..64 {
            let (datagram, _) = self.socket.recv_from_full().expect("receive");
            reply.extend_from_slice(&datagram);
            let messages = decode_datagram(&datagram).expect("the kernel's reply decodes");
            let finished = messages.iter().any(|message| {
                message.header.sequence_number == sequence
                    && matches!(message.payload, NetlinkPayload::Error(_) | NetlinkPayload::Done(_))
            });
            if finished {
                return reply;
            }
        }
        panic!("no final reply to request {sequence} within 64 datagrams");
    }
}

/// The IPVS messages of a reply, checked to end in an ack or DONE.
pub(super) fn ipvs_messages(reply: &[u8]) -> Vec<IpvsMessage> {
    let messages = decode_datagram(reply).expect("reply decodes");
    match messages.last().map(|message| &message.payload) {
        Some(NetlinkPayload::Done(_)) => {}
        Some(NetlinkPayload::Error(error)) if error.code.is_none() => {}
        other => panic!("reply does not end in DONE or an ack: {other:?}"),
    }
    messages
        .into_iter()
        .filter_map(|message| match message.payload {
            NetlinkPayload::InnerMessage(genl) => Some(genl.payload),
            _ => None,
        })
        .collect()
}

fn send_flows(netns: &NetNs) {
    netns.enter(|| {
        for _ in 0..FLOWS {
            let socket = UdpSocket::bind("10.30.0.1:0").expect("bind a UDP socket on the VIP subnet");
            let vip: SocketAddr = "10.30.0.1:53".parse().expect("address");
            socket.send_to(PAYLOAD, vip).expect("send to the VIP");
        }
    });
}

#[test]
fn kernel_replies_decode_and_can_be_captured_as_fixtures() {
    let netns = NetNs::new("capture");
    netns.ip(&["link", "add", "vip0", "type", "dummy"]);
    netns.ip(&["link", "set", "vip0", "up"]);
    netns.ip(&["addr", "add", "10.30.0.1/24", "dev", "vip0"]);
    super::support::restore(&netns, &(RULES.join("\n") + "\n"));
    send_flows(&netns);
    // The estimator lags; the totals do not, but the fixture is nicer with rates too.
    std::thread::sleep(Duration::from_millis(2500));
    let stats = netns.exec("ipvsadm", &["-Ln", "--stats", "--exact"]);

    let replies = netns.enter(|| {
        let mut raw = RawIpvs::open();
        let udp = key("udp:10.30.0.1:53");
        let dests = IpvsMessage::new(IpvsCmd::GetDest, vec![IpvsAttr::Service(service_identity(&udp))]);
        let mut duplicate = service("tcp:10.30.0.1:80", "wrr");
        duplicate.persistence = Some(300);
        duplicate.persistence_netmask = Some(24);
        let add = libraflux::ipvs::packet::request_for(&libraflux::ipvs::Op::AddService(duplicate))
            .expect("encodable");
        [
            ("get_service_dump_reply.bin", raw.request(NLM_F_REQUEST | NLM_F_DUMP, get(IpvsCmd::GetService))),
            ("get_dest_dump_reply.bin", raw.request(NLM_F_REQUEST | NLM_F_DUMP, dests)),
            ("get_info_reply.bin", raw.request(NLM_F_REQUEST | NLM_F_ACK, get(IpvsCmd::GetInfo))),
            ("get_config_reply.bin", raw.request(NLM_F_REQUEST | NLM_F_ACK, get(IpvsCmd::GetConfig))),
            ("error_eexist.bin", raw.request(NLM_F_REQUEST | NLM_F_ACK, add)),
        ]
    });

    check_services(&replies[0].1);
    check_dests(&replies[1].1, &stats);
    check_info_and_config(&replies[2].1, &replies[3].1);
    check_eexist(&replies[4].1);

    if let Some(dir) = std::env::var_os("LIBRAFLUX_WRITE_FIXTURES") {
        for (name, bytes) in &replies {
            let path = Path::new(&dir).join(name);
            fs::write(&path, bytes).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
            eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
    }
}

fn get(cmd: IpvsCmd) -> IpvsMessage {
    IpvsMessage::new(cmd, vec![])
}

fn check_services(reply: &[u8]) {
    let mut services: Vec<_> = ipvs_messages(reply)
        .into_iter()
        .flat_map(|message| message.attrs)
        .map(|attr| match attr {
            IpvsAttr::Service(attrs) => libraflux::ipvs::packet::service_from_attrs(&attrs)
                .unwrap_or_else(|err| panic!("a kernel service does not convert: {err}")),
            other => panic!("unexpected attribute in a service dump: {other:?}"),
        })
        .collect();
    services.sort_by_key(|status| status.service.key);
    let summary: Vec<String> = services
        .iter()
        .map(|status| {
            let service = &status.service;
            format!(
                "{} {} {:?} {:?}",
                service.key, service.scheduler, service.persistence, service.persistence_netmask
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "tcp:10.30.0.1:80 wrr Some(300) Some(24)",
            "udp:10.30.0.1:53 rr None None",
            "udp:[fd00:30::1]:53 sh Some(60) Some(64)",
            "fwmark:7 rr None None",
            "fwmark:8:v6 lc Some(30) None",
        ],
        "the captured service dump"
    );
}

fn check_dests(reply: &[u8], ipvsadm_stats: &str) {
    let mut dests: Vec<_> = ipvs_messages(reply)
        .into_iter()
        .flat_map(|message| message.attrs)
        .map(|attr| match attr {
            IpvsAttr::Dest(attrs) => dest_from_attrs(&attrs, Family::V4)
                .unwrap_or_else(|err| panic!("a kernel destination does not convert: {err}")),
            other => panic!("unexpected attribute in a destination dump: {other:?}"),
        })
        .collect();
    dests.sort_by_key(|status| status.destination.key);
    let forwarding: Vec<_> = dests
        .iter()
        .map(|status| (status.destination.key.to_string(), status.destination.forwarding))
        .collect();
    assert_eq!(
        forwarding,
        [
            ("10.30.0.2:5353".to_owned(), Forwarding::Nat),
            ("10.30.0.3:53".to_owned(), Forwarding::Dr),
            ("10.30.0.4:53".to_owned(), Forwarding::Tunnel),
        ]
    );
    assert_eq!((dests[0].destination.upper_threshold, dests[0].destination.lower_threshold), (100, 10));
    let connections: u64 = dests.iter().map(|status| status.stats.connections).sum();
    assert_eq!(connections, u64::from(FLOWS), "one connection per flow; ipvsadm says:\n{ipvsadm_stats}");
    for status in &dests {
        assert!(
            status.stats.packets_in > 0,
            "{} got no packets; ipvsadm:\n{ipvsadm_stats}",
            status.destination.key
        );
    }
}

fn check_info_and_config(info: &[u8], config: &[u8]) {
    let attrs: Vec<IpvsAttr> = ipvs_messages(info).into_iter().flat_map(|message| message.attrs).collect();
    assert!(attrs.contains(&IpvsAttr::InfoConnTabSize(4096)), "GET_INFO: {attrs:?}");
    assert!(attrs.contains(&IpvsAttr::InfoVersion(0x01_02_01)), "GET_INFO: {attrs:?}");
    let attrs: Vec<IpvsAttr> = ipvs_messages(config).into_iter().flat_map(|message| message.attrs).collect();
    assert_eq!(
        attrs,
        [IpvsAttr::TimeoutTcp(900), IpvsAttr::TimeoutTcpFin(120), IpvsAttr::TimeoutUdp(300)],
        "GET_CONFIG of a fresh namespace holds the kernel's defaults"
    );
}

fn check_eexist(reply: &[u8]) {
    let messages = decode_datagram(reply).expect("decodes");
    let [message] = messages.as_slice() else { panic!("one message: {messages:?}") };
    let NetlinkPayload::Error(error) = &message.payload else { panic!("not an error: {message:?}") };
    assert_eq!(error.to_io().raw_os_error(), Some(libc::EEXIST));
}
