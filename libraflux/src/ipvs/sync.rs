//! The kernel's IPVS connection synchronisation daemon (`ipvsadm --start-daemon`): a master
//! sends the connections this director handles to a multicast group, a backup receives them
//! into its own connection table, so that a failover keeps established connections.
//!
//! The kernel runs at most one master and one backup per network namespace, each with its own
//! parameters; starting a state that runs is refused (EEXIST), and so is stopping one that does
//! not (ESRCH). [`changes_for_role`] is what LibraFlux sends to give the node one role.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

use super::{
    Ipvs, IpvsClient, IpvsError, Operation,
    packet::{self, IpvsAttr, IpvsCmd, IpvsMessage},
};

/// `IP_VS_SYNC_GROUP`: the group the kernel uses when none is given.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// `IP_VS_SYNC_PORT`.
pub const DEFAULT_PORT: u16 = 8848;
/// The kernel's default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;

/// `IP_VS_STATE_MASTER` or `IP_VS_STATE_BACKUP`: the role of a sync daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Sends this node's connections: the node that owns the VIP.
    Master,
    /// Receives the peer's connections: the standby.
    Backup,
}

impl SyncState {
    pub const ALL: [Self; 2] = [Self::Master, Self::Backup];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Backup => "backup",
        }
    }

    pub const fn other(self) -> Self {
        match self {
            Self::Master => Self::Backup,
            Self::Backup => Self::Master,
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sync daemon: what to start, or what the kernel runs. `None` fields are left to the
/// kernel when starting (group 224.0.0.81, port 8848, TTL 1, a maximum length from the MTU); a
/// daemon read back from the kernel has them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemon {
    pub state: SyncState,
    /// The interface the sync messages go out on (master) or are received on (backup).
    pub interface: String,
    /// Both nodes of a pair use the same; a backup drops messages of another sync id (0 takes all).
    pub sync_id: u8,
    /// Multicast group, IPv4 or IPv6.
    pub group: Option<IpAddr>,
    pub port: Option<u16>,
    pub ttl: Option<u8>,
    /// UDP payload size of the sync messages.
    pub max_len: Option<u16>,
}

impl SyncDaemon {
    /// Whether this daemon, as the kernel runs it, is `wanted`: same state, interface and sync
    /// id, and the same group, port and TTL (unset ones in `wanted` are the kernel's defaults).
    /// An unset `max_len` in `wanted` takes any: the kernel derives it from the MTU.
    pub fn runs_as(&self, wanted: &Self) -> bool {
        let group = wanted.group.unwrap_or(IpAddr::V4(DEFAULT_GROUP));
        self.state == wanted.state
            && self.interface == wanted.interface
            && self.sync_id == wanted.sync_id
            && self.group.unwrap_or(IpAddr::V4(DEFAULT_GROUP)) == group
            && self.port.unwrap_or(DEFAULT_PORT) == wanted.port.unwrap_or(DEFAULT_PORT)
            && self.ttl.unwrap_or(DEFAULT_TTL) == wanted.ttl.unwrap_or(DEFAULT_TTL)
            && wanted.max_len.is_none_or(|max_len| self.max_len == Some(max_len))
    }

    /// The same parameters in another state.
    #[must_use]
    pub fn with_state(&self, state: SyncState) -> Self {
        Self { state, ..self.clone() }
    }
}

/// As `ipvsadm --list --daemon` prints it:
/// `master sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)`.
impl fmt::Display for SyncDaemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sync daemon (mcast={}, syncid={}", self.state, self.interface, self.sync_id)?;
        if let Some(max_len) = self.max_len {
            write!(f, ", maxlen={max_len}")?;
        }
        if let Some(group) = self.group {
            write!(f, ", group={group}")?;
        }
        if let Some(port) = self.port {
            write!(f, ", port={port}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, ", ttl={ttl}")?;
        }
        f.write_str(")")
    }
}

/// An interface name as an [`Operation`] carries it (`Copy`, at most 15 bytes as IFNAMSIZ allows;
/// a longer one is cut, and the kernel refuses it anyway).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IfName {
    bytes: [u8; 15],
    len: u8,
}

impl IfName {
    pub fn new(name: &str) -> Self {
        let mut bytes = [0; 15];
        let mut len = name.len().min(bytes.len());
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self { bytes, len: len as u8 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One change to the kernel's sync daemons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncChange {
    Stop(SyncState),
    Start(SyncDaemon),
}

impl fmt::Display for SyncChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stop(state) => write!(f, "stopped the {state} sync daemon"),
            Self::Start(daemon) => write!(f, "started the {daemon}"),
        }
    }
}

/// What to send so that the kernel runs `wanted` and no daemon in the other state: a node has
/// one role. (The kernel would run a master and a backup side by side; a node that is both
/// sends its connections and takes in the peer's, and after a split brain, when both nodes hold
/// the VIP, each would overwrite the state of connections the other serves.)
///
/// The wanted state starts before the other stops, so that a start the kernel refuses (an
/// interface it does not know) leaves the node in its old role rather than in none. A daemon of
/// the wanted state with other parameters has to stop first: the kernel runs one per state.
pub fn changes_for_role(running: &[SyncDaemon], wanted: &SyncDaemon) -> Vec<SyncChange> {
    let mut changes = Vec::new();
    match running.iter().find(|daemon| daemon.state == wanted.state) {
        Some(daemon) if daemon.runs_as(wanted) => {}
        Some(_) => changes.extend([SyncChange::Stop(wanted.state), SyncChange::Start(wanted.clone())]),
        None => changes.push(SyncChange::Start(wanted.clone())),
    }
    if running.iter().any(|daemon| daemon.state == wanted.state.other()) {
        changes.push(SyncChange::Stop(wanted.state.other()));
    }
    changes
}

/// Sends `changes` in order, stopping at the first the kernel refuses; returns those carried
/// out, and the refusal.
pub async fn carry_out<I: Ipvs>(ipvs: &mut I, changes: &[SyncChange]) -> (usize, Result<(), IpvsError>) {
    for (done, change) in changes.iter().enumerate() {
        let result = match change {
            SyncChange::Stop(state) => ipvs.stop_sync_daemon(*state).await,
            SyncChange::Start(daemon) => ipvs.start_sync_daemon(daemon).await,
        };
        if let Err(err) = result {
            return (done, Err(err));
        }
    }
    (changes.len(), Ok(()))
}

/// What [`set_role`] did, and what the kernel showed afterwards.
#[derive(Debug)]
pub struct RoleChange {
    /// The changes the kernel carried out, in order.
    pub done: Vec<SyncChange>,
    /// The change the kernel refused; nothing after it was sent.
    pub refused: Option<IpvsError>,
    /// The sync daemons read back after the changes.
    pub after: Result<Vec<SyncDaemon>, IpvsError>,
}

impl RoleChange {
    /// Why the kernel does not now run `wanted` alone, in words for the operator; `None` when
    /// it does.
    pub fn problem(&self, wanted: &SyncDaemon) -> Option<String> {
        let now = match &self.after {
            Ok(daemons) => format!("the kernel now runs {}", describe(daemons)),
            Err(err) => format!("the kernel's sync daemons cannot be read back: {err}"),
        };
        let before = match self.done.as_slice() {
            [] => String::new(),
            done => format!(
                " (done before: {})",
                done.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        match (&self.refused, &self.after) {
            (Some(refused), _) => Some(format!("{refused}; {now}{before}")),
            (None, Ok(daemons)) if matches!(daemons.as_slice(), [only] if only.runs_as(wanted)) => None,
            (None, Ok(_)) => Some(format!("asked for the {wanted}, but {now}")),
            (None, Err(_)) => Some(now),
        }
    }
}

/// `no sync daemon`, or `the ` and each daemon as ipvsadm lists it, joined by ` and `.
pub fn describe(daemons: &[SyncDaemon]) -> String {
    if daemons.is_empty() {
        return "no sync daemon".to_owned();
    }
    daemons.iter().map(|daemon| format!("the {daemon}")).collect::<Vec<_>>().join(" and ")
}

/// Gives the node the role of `wanted` ([`changes_for_role`]) and reads the kernel back. `Err`
/// only when the kernel's sync daemons cannot be read at first (nothing was sent).
pub async fn set_role<I: Ipvs>(ipvs: &mut I, wanted: &SyncDaemon) -> Result<RoleChange, IpvsError> {
    let running = ipvs.sync_daemons().await?;
    let changes = changes_for_role(&running, wanted);
    let (done, result) = carry_out(ipvs, &changes).await;
    let after = ipvs.sync_daemons().await;
    Ok(RoleChange { done: changes[..done].to_vec(), refused: result.err(), after })
}

impl IpvsClient {
    /// Starts `daemon` (IPVS_CMD_NEW_DAEMON). The kernel refuses a state that already runs
    /// (EEXIST) and an interface it does not know (ENODEV).
    pub async fn start_sync_daemon(&mut self, daemon: &SyncDaemon) -> Result<(), IpvsError> {
        let operation = Operation::StartSyncDaemon {
            state: daemon.state,
            interface: IfName::new(&daemon.interface),
            sync_id: daemon.sync_id,
        };
        let request = packet::start_daemon_request(daemon)
            .map_err(|reason| IpvsError::Invalid { operation, reason })?;
        self.single(request, operation).await.map(drop)
    }

    /// Stops the daemon of `state` (IPVS_CMD_DEL_DAEMON); ESRCH when none runs.
    pub async fn stop_sync_daemon(&mut self, state: SyncState) -> Result<(), IpvsError> {
        self.single(packet::stop_daemon_request(state), Operation::StopSyncDaemon(state)).await.map(drop)
    }

    /// The sync daemons the kernel runs (IPVS_CMD_GET_DAEMON dump), master first.
    pub async fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, IpvsError> {
        let operation = Operation::ListSyncDaemons;
        let messages = self.dump_one(IpvsMessage::new(IpvsCmd::GetDaemon, vec![]), operation).await?;
        let mut daemons = Vec::new();
        for attr in messages.into_iter().flat_map(|message| message.attrs) {
            if let IpvsAttr::Daemon(attrs) = attr {
                daemons.push(
                    packet::daemon_from_attrs(&attrs).map_err(|err| IpvsError::decode(operation, err))?,
                );
            }
        }
        daemons.sort_by_key(|daemon| daemon.state);
        Ok(daemons)
    }
}

/// A daemon on `interface` with sync id 1 and the kernel's defaults, as the kernel reports it
/// over an interface of MTU 1500.
#[cfg(test)]
pub(crate) fn example(state: SyncState, interface: &str) -> SyncDaemon {
    SyncDaemon {
        state,
        interface: interface.to_owned(),
        sync_id: 1,
        group: Some(IpAddr::V4(DEFAULT_GROUP)),
        port: Some(DEFAULT_PORT),
        ttl: Some(DEFAULT_TTL),
        max_len: Some(1472),
    }
}

#[cfg(test)]
mod tests {
    use super::{example as daemon, *};

    #[test]
    fn it_prints_as_ipvsadm_lists_it() {
        assert_eq!(
            daemon(SyncState::Backup, "eth1").to_string(),
            "backup sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
        );
        let bare = SyncDaemon {
            group: None,
            port: None,
            ttl: None,
            max_len: None,
            ..daemon(SyncState::Master, "e")
        };
        assert_eq!(bare.to_string(), "master sync daemon (mcast=e, syncid=1)");
    }

    #[test]
    fn unset_parameters_are_the_kernels_defaults_and_an_unset_max_len_takes_any() {
        let running = daemon(SyncState::Master, "eth1");
        let wanted = SyncDaemon { group: None, port: None, ttl: None, max_len: None, ..running.clone() };
        assert!(running.runs_as(&wanted));
        assert!(!running.runs_as(&SyncDaemon { max_len: Some(1400), ..wanted.clone() }));
        assert!(!running.runs_as(&SyncDaemon { port: Some(8849), ..wanted.clone() }));
        assert!(!running.runs_as(&SyncDaemon { sync_id: 2, ..wanted.clone() }));
        assert!(!running.runs_as(&wanted.with_state(SyncState::Backup)));
        assert!(!running.runs_as(&SyncDaemon { group: Some("ff02::81".parse().unwrap()), ..wanted }));
    }

    #[test]
    fn a_role_is_one_daemon_in_that_state_with_the_wanted_parameters() {
        let master = daemon(SyncState::Master, "eth1");
        let backup = daemon(SyncState::Backup, "eth1");
        assert_eq!(changes_for_role(&[], &master), [SyncChange::Start(master.clone())]);
        assert_eq!(changes_for_role(std::slice::from_ref(&master), &master), []);
        assert_eq!(
            changes_for_role(std::slice::from_ref(&backup), &master),
            [SyncChange::Start(master.clone()), SyncChange::Stop(SyncState::Backup)],
            "make before break: a refused start leaves the backup running"
        );
        assert_eq!(
            changes_for_role(&[master.clone(), backup.clone()], &master),
            [SyncChange::Stop(SyncState::Backup)],
            "both run: the other state goes"
        );
        let elsewhere = daemon(SyncState::Master, "eth2");
        assert_eq!(
            changes_for_role(&[elsewhere], &master),
            [SyncChange::Stop(SyncState::Master), SyncChange::Start(master.clone())],
            "other parameters: started again"
        );
        assert_eq!(SyncChange::Stop(SyncState::Backup).to_string(), "stopped the backup sync daemon");
        assert!(
            SyncChange::Start(master).to_string().starts_with("started the master sync daemon (mcast=eth1")
        );
    }

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_role_switch_is_read_back_and_a_refused_start_leaves_the_old_role() {
        let mut kernel = crate::ipvs::MemoryIpvs::new();
        kernel.set_interfaces(["eth1"]);
        let backup = daemon(SyncState::Backup, "eth1");
        let changed = block_on(set_role(&mut kernel, &backup)).unwrap();
        assert_eq!(changed.done, [SyncChange::Start(backup.clone())]);
        assert_eq!(changed.problem(&backup), None);
        let nowhere = daemon(SyncState::Master, "eth9");
        let changed = block_on(set_role(&mut kernel, &nowhere)).unwrap();
        assert!(changed.done.is_empty());
        assert_eq!(changed.after.as_deref().unwrap(), std::slice::from_ref(&backup), "still the backup");
        assert_eq!(
            changed.problem(&nowhere).unwrap(),
            "starting the master sync daemon on eth9 (syncid 1): No such device (os error 19); the kernel now runs \
             the backup sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
        );
        let master = daemon(SyncState::Master, "eth1");
        let changed = block_on(set_role(&mut kernel, &master)).unwrap();
        assert_eq!(changed.done, [SyncChange::Start(master.clone()), SyncChange::Stop(SyncState::Backup)]);
        assert_eq!(changed.after.unwrap(), [master]);
    }

    #[test]
    fn interface_names_are_carried_whole_up_to_15_bytes() {
        assert_eq!(IfName::new("eth1").as_str(), "eth1");
        assert_eq!(IfName::new("a-very-long-interface").as_str(), "a-very-long-int");
        assert_eq!(IfName::new("ééééééééé").as_str(), "ééééééé", "cut on a character boundary");
    }
}
