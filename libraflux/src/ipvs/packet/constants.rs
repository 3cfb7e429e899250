//! Numbers of the IPVS generic-netlink family, named as in the kernel's
//! `include/uapi/linux/ip_vs.h` (stable uapi; cross-checked with moby/ipvs `constants_linux.go`).
//! Private to the packet layer: everything above it speaks in enums.

pub(super) const IPVS_GENL_NAME: &str = "IPVS";
pub(super) const IPVS_GENL_VERSION: u8 = 0x1;

// enum { IPVS_CMD_UNSPEC = 0, ... }
pub(super) const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub(super) const IPVS_CMD_SET_SERVICE: u8 = 2;
pub(super) const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub(super) const IPVS_CMD_GET_SERVICE: u8 = 4;
pub(super) const IPVS_CMD_NEW_DEST: u8 = 5;
pub(super) const IPVS_CMD_SET_DEST: u8 = 6;
pub(super) const IPVS_CMD_DEL_DEST: u8 = 7;
pub(super) const IPVS_CMD_GET_DEST: u8 = 8;
pub(super) const IPVS_CMD_NEW_DAEMON: u8 = 9;
pub(super) const IPVS_CMD_DEL_DAEMON: u8 = 10;
pub(super) const IPVS_CMD_GET_DAEMON: u8 = 11;
pub(super) const IPVS_CMD_SET_CONFIG: u8 = 12;
pub(super) const IPVS_CMD_GET_CONFIG: u8 = 13;
pub(super) const IPVS_CMD_SET_INFO: u8 = 14;
pub(super) const IPVS_CMD_GET_INFO: u8 = 15;
pub(super) const IPVS_CMD_ZERO: u8 = 16;
pub(super) const IPVS_CMD_FLUSH: u8 = 17;

// Attributes at the first level of a command.
pub(super) const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub(super) const IPVS_CMD_ATTR_DEST: u16 = 2;
pub(super) const IPVS_CMD_ATTR_DAEMON: u16 = 3;
pub(super) const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub(super) const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub(super) const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// Attributes nested in IPVS_CMD_ATTR_SERVICE.
pub(super) const IPVS_SVC_ATTR_AF: u16 = 1;
pub(super) const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub(super) const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub(super) const IPVS_SVC_ATTR_PORT: u16 = 4;
pub(super) const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub(super) const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub(super) const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub(super) const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub(super) const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub(super) const IPVS_SVC_ATTR_STATS: u16 = 10;
pub(super) const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
pub(super) const IPVS_SVC_ATTR_STATS64: u16 = 12;

// Attributes nested in IPVS_CMD_ATTR_DEST.
pub(super) const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub(super) const IPVS_DEST_ATTR_PORT: u16 = 2;
pub(super) const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub(super) const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub(super) const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub(super) const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub(super) const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub(super) const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub(super) const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub(super) const IPVS_DEST_ATTR_STATS: u16 = 10;
pub(super) const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub(super) const IPVS_DEST_ATTR_STATS64: u16 = 12;
pub(super) const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub(super) const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub(super) const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

// Attributes nested in IPVS_CMD_ATTR_DAEMON.
pub(super) const IPVS_DAEMON_ATTR_STATE: u16 = 1;
pub(super) const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
pub(super) const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
pub(super) const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
pub(super) const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
pub(super) const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
pub(super) const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
pub(super) const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

// Sync daemon states (`IP_VS_STATE_*`).
pub(super) const IP_VS_STATE_MASTER: u32 = 0x0001;
pub(super) const IP_VS_STATE_BACKUP: u32 = 0x0002;

/// `IP_VS_IFNAME_MAXLEN`, including the terminating NUL (the kernel's policy allows 15 bytes
/// of name, as IFNAMSIZ does).
pub(super) const IP_VS_IFNAME_MAXLEN: usize = 16;

// Attributes nested in the *_ATTR_STATS and *_ATTR_STATS64 containers.
// (IPVS_STATS_ATTR_PAD = 11 only appears on architectures that align u64 attributes; it is
// kept as an unknown attribute.)
pub(super) const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub(super) const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub(super) const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub(super) const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub(super) const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub(super) const IPVS_STATS_ATTR_CPS: u16 = 6;
pub(super) const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub(super) const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub(super) const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub(super) const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

// Attributes of the IPVS_CMD_SET_INFO reply to IPVS_CMD_GET_INFO. They sit at the first level
// and reuse the numbers of IPVS_CMD_ATTR_SERVICE and IPVS_CMD_ATTR_DEST, so the first level is
// parsed according to the command.
pub(super) const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub(super) const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

// Virtual service flags (`IP_VS_SVC_F_*`) and forwarding methods (`IP_VS_CONN_F_*`).
pub(super) const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
pub(super) const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
pub(super) const IP_VS_CONN_F_MASQ: u32 = 0x0000;
pub(super) const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
pub(super) const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
pub(super) const IP_VS_CONN_F_DROUTE: u32 = 0x0003;

/// `IP_VS_SCHEDNAME_MAXLEN` and `IP_VS_PENAME_MAXLEN`, including the terminating NUL.
pub(super) const IP_VS_SCHEDNAME_MAXLEN: usize = 16;

// Address families (`AF_INET`, `AF_INET6`), as the kernel's u16 attribute carries them.
pub(super) const AF_INET: u16 = 2;
pub(super) const AF_INET6: u16 = 10;

/// `sizeof(union nf_inet_addr)`: addresses always travel in 16 bytes, IPv4 in the first 4.
pub(super) const INET_ADDR_LEN: usize = 16;
