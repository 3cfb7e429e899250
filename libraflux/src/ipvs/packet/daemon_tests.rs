//! The sync daemon attributes and requests: round trips, bytes derived by hand from
//! `ip_vs_genl_new_daemon` / `ip_vs_genl_fill_daemon`, and the decoding of a dump.

use netlink_packet_core::{NLM_F_ACK, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkPayload};

use super::{
    tests::{FAMILY_ID, captured, done_message, message_round_trip, round_trip, strip_nested_flags, unknown},
    *,
};
use crate::ipvs::{SyncDaemon, SyncState, sync::example};

fn eth1_master() -> SyncDaemon {
    example(SyncState::Master, "eth1")
}

#[test]
fn every_daemon_attribute_round_trips() {
    let attrs = [
        DaemonAttr::State(2),
        DaemonAttr::McastIfn("eth1".into()),
        DaemonAttr::McastIfn("fifteen-bytes-x".into()),
        DaemonAttr::SyncId(255),
        DaemonAttr::SyncMaxlen(1472),
        DaemonAttr::McastGroup("239.1.2.3".parse().unwrap()),
        DaemonAttr::McastGroup6("ff02::81".parse().unwrap()),
        DaemonAttr::McastPort(8848),
        DaemonAttr::McastTtl(255),
        DaemonAttr::Other(unknown(9, &[1, 2])),
    ];
    for attr in attrs {
        round_trip(attr);
    }
    message_round_trip(stop_daemon_request(SyncState::Backup));
    message_round_trip(start_daemon_request(&eth1_master()).unwrap());
}

/// NEW_DAEMON master on eth1, syncid 1, every parameter given, as libipvs lays it out:
/// STATE, MCAST_IFN, SYNC_ID, SYNC_MAXLEN, MCAST_PORT, MCAST_TTL, MCAST_GROUP.
#[cfg(target_endian = "little")]
#[test]
fn new_daemon_bytes_match_the_kernel_layout() {
    let message = start_daemon_request(&eth1_master()).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        84, 0, 0, 0,  0x1c, 0,  5, 0,  7, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: REQUEST|ACK, seq 7
        9, 1, 0, 0,                                  // IPVS_CMD_NEW_DAEMON, version 1
        64, 0, 0x03, 0x80,                           // IPVS_CMD_ATTR_DAEMON | NLA_F_NESTED
        8, 0, 1, 0,  1, 0, 0, 0,                     // STATE = IP_VS_STATE_MASTER, host order
        9, 0, 2, 0,  b'e', b't', b'h', b'1', 0, 0, 0, 0, // MCAST_IFN "eth1\0", padded
        8, 0, 3, 0,  1, 0, 0, 0,                     // SYNC_ID = 1, host order u32
        6, 0, 4, 0,  0xc0, 0x05, 0, 0,               // SYNC_MAXLEN = 1472, host order u16
        6, 0, 7, 0,  0x90, 0x22, 0, 0,               // MCAST_PORT = 8848, host order u16 (nla_get_u16)
        5, 0, 8, 0,  1, 0, 0, 0,                     // MCAST_TTL = 1
        8, 0, 5, 0,  224, 0, 0, 81,                  // MCAST_GROUP = 224.0.0.81, network order
    ];
    assert_eq!(encode_request(FAMILY_ID, 7, NLM_F_REQUEST | NLM_F_ACK, message), expected);
}

#[cfg(target_endian = "little")]
#[test]
fn del_daemon_carries_the_state_alone_and_unset_parameters_are_left_out() {
    #[rustfmt::skip]
    let expected: &[u8] = &[
        32, 0, 0, 0,  0x1c, 0,  5, 0,  8, 0, 0, 0,  0, 0, 0, 0,
        10, 1, 0, 0,                                 // IPVS_CMD_DEL_DAEMON
        12, 0, 0x03, 0x80,
        8, 0, 1, 0,  2, 0, 0, 0,                     // STATE = IP_VS_STATE_BACKUP
    ];
    let stop = stop_daemon_request(SyncState::Backup);
    assert_eq!(encode_request(FAMILY_ID, 8, NLM_F_REQUEST | NLM_F_ACK, stop), expected);
    let bare = SyncDaemon { group: None, port: None, ttl: None, max_len: None, ..eth1_master() };
    let IpvsAttr::Daemon(attrs) = &start_daemon_request(&bare).unwrap().attrs[0] else { panic!() };
    assert_eq!(attrs.len(), 3, "STATE, MCAST_IFN, SYNC_ID only: {attrs:?}");
    let v6 = SyncDaemon { group: Some("ff02::81".parse().unwrap()), ..eth1_master() };
    let IpvsAttr::Daemon(attrs) = &start_daemon_request(&v6).unwrap().attrs[0] else { panic!() };
    assert_eq!(attrs.last(), Some(&DaemonAttr::McastGroup6("ff02::81".parse().unwrap())));
}

#[test]
fn interface_names_the_kernel_would_refuse_are_refused_before_sending() {
    for name in ["", "sixteen-bytes-xx", "eth\u{0}1"] {
        let daemon = SyncDaemon { interface: name.to_owned(), ..eth1_master() };
        let reason = start_daemon_request(&daemon).unwrap_err();
        assert!(reason.contains("is not an interface name"), "{name:?}: {reason}");
    }
}

/// A GET_DAEMON dump as `ip_vs_genl_dump_daemons` sends it: NEW_DAEMON messages whose nest has
/// no NLA_F_NESTED flag, master first, then DONE.
#[test]
fn a_daemon_dump_decodes_to_the_sync_daemons() {
    let backup = SyncDaemon {
        state: SyncState::Backup,
        interface: "eth2".to_owned(),
        sync_id: 0,
        group: Some("ff02::81".parse().unwrap()),
        port: Some(8850),
        ttl: Some(3),
        max_len: Some(1452),
    };
    let mut datagram = Vec::new();
    for daemon in [eth1_master(), backup.clone()] {
        let mut message = start_daemon_request(&daemon).unwrap();
        message.cmd = IpvsCmd::NewDaemon;
        let mut bytes = encode_request(FAMILY_ID, 4, NLM_F_MULTIPART, message);
        strip_nested_flags(&mut bytes);
        datagram.extend(bytes);
    }
    datagram.extend(done_message(4));
    let messages = decode_datagram(&datagram).unwrap();
    assert!(matches!(messages[2].payload, NetlinkPayload::Done(_)));
    let daemons: Vec<SyncDaemon> = messages[..2]
        .iter()
        .map(|message| {
            let NetlinkPayload::InnerMessage(genl) = &message.payload else { panic!("{message:?}") };
            let [IpvsAttr::Daemon(attrs)] = genl.payload.attrs.as_slice() else { panic!("{genl:?}") };
            daemon_from_attrs(attrs).unwrap()
        })
        .collect();
    assert_eq!(daemons, [eth1_master(), backup]);
}

#[test]
fn a_daemon_without_state_interface_or_a_one_byte_sync_id_does_not_decode() {
    let complete = [
        DaemonAttr::State(1),
        DaemonAttr::McastIfn("eth1".into()),
        DaemonAttr::SyncId(1),
        DaemonAttr::McastPort(0),
    ];
    let daemon = daemon_from_attrs(&complete).unwrap();
    assert_eq!((daemon.port, daemon.group), (None, None), "0 and absent read as unset");
    let errors = [
        (&complete[1..], "without IPVS_DAEMON_ATTR_STATE"),
        (&[DaemonAttr::State(4), complete[1].clone(), complete[2].clone()][..], "unknown state 4"),
        (&[complete[0].clone(), complete[2].clone()][..], "without IPVS_DAEMON_ATTR_MCAST_IFN"),
        (&[complete[0].clone(), complete[1].clone(), DaemonAttr::SyncId(256)][..], "256 does not fit"),
    ];
    for (attrs, expected) in errors {
        let err = daemon_from_attrs(attrs).unwrap_err().to_string();
        assert!(err.contains(expected), "{attrs:?}: {err}");
    }
}

/// The GET_DAEMON dump captured from Debian's 6.1 kernel by the VM test
/// `sync::the_kernels_daemon_dump_decodes_and_can_be_captured_as_a_fixture` (fixtures/README.md):
/// a master and a backup that ipvsadm started.
#[cfg(target_endian = "little")]
#[test]
fn the_captured_daemon_dump_decodes_with_host_order_ports() {
    let bytes = include_bytes!("fixtures/get_daemon_dump_reply.bin");
    // The master's MCAST_PORT, 8850, as the kernel wrote it: host order, not network order.
    assert_eq!(&bytes[0x3c..0x42], &[6, 0, 7, 0, 0x92, 0x22]);
    let messages = captured(bytes, 101);
    let daemons: Vec<SyncDaemon> = messages
        .iter()
        .map(|message| {
            assert_eq!(message.cmd, IpvsCmd::NewDaemon);
            let [IpvsAttr::Daemon(attrs)] = message.attrs.as_slice() else { panic!("{message:?}") };
            daemon_from_attrs(attrs).unwrap()
        })
        .collect();
    let master = SyncDaemon {
        interface: "lfsync0".to_owned(),
        sync_id: 7,
        group: Some("239.1.2.3".parse().unwrap()),
        port: Some(8850),
        ttl: Some(3),
        max_len: Some(1400),
        ..eth1_master()
    };
    let backup = SyncDaemon {
        state: SyncState::Backup,
        interface: "lfsync0".to_owned(),
        sync_id: 0,
        group: Some("ff02::1:81".parse().unwrap()),
        port: Some(8848),
        ttl: Some(1),
        max_len: Some(1452),
    };
    assert_eq!(daemons, [master, backup]);
}
