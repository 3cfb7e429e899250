//! The IPVS generic-netlink client (tokio, netlink-sys).
//!
//! Requests are pipelined: many requests, each with its own sequence number, go out in one
//! datagram, and the replies are matched back by sequence number. The kernel handles the
//! requests of a datagram one after the other inside `sendmsg`, queueing every reply on our
//! socket before we read any, so a batch is bounded by what the receive buffer holds (and the
//! datagram by the send buffer: larger ones fail with EMSGSIZE). Both buffers are raised at
//! connect time (SO_RCVBUFFORCE / SO_SNDBUFFORCE, falling back to the rmem_max-capped
//! SO_RCVBUF / SO_SNDBUF) and the batch limits follow from what the kernel granted.
//!
//! Replies are read with `recvmmsg`, up to [`RECV_SLOTS`] datagrams (one ack or dump skb each)
//! per system call; only when none is queued does the client wait on the socket.
//!
//! Dumps: a netlink socket runs one dump at a time. IPVS's GET_DEST dump of a service with
//! destinations does not finish inside `sendmsg`: its first skb is queued there, and
//! NLMSG_DONE only when we read that skb, so a second dump request in the same datagram fails
//! with EBUSY (and costs the kernel a parse and an error ack). Only a dump of an empty service
//! finishes inside `sendmsg`. So by default each datagram carries one GET_DEST request
//! (`BatchLimits::max_dumps` = 1); EBUSY ones are sent again in the next round anyway. One
//! `recvmmsg` then reads the destinations and the NLMSG_DONE their reading queued: a service's
//! destinations cost two system calls.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    io,
    os::fd::AsRawFd,
    time::Duration,
};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload};
use netlink_sys::{AsyncSocketExt, TokioSocket};

use super::socket::{grow_buffer, open_socket, receive_queued};
use super::{
    ApplyReport, DestinationStatus, Info, Ipvs, IpvsError, OnFailure, Op, OpOutcome, Operation,
    ServiceStatus, SyncDaemon, SyncState, Timeouts,
    packet::{self, FamilyNetlinkMessage, IpvsAttr, IpvsCmd, IpvsMessage},
};
use crate::model::{Service, ServiceKey};

/// Asked of the kernel for each socket buffer; it grants less without CAP_NET_ADMIN.
pub(super) const SOCKET_BUFFER: usize = 8 << 20;
/// Receive-buffer charge of one ack: a ~36-byte message costs an skb's truesize (well under
/// 1 KiB on x86_64); doubled for margin, since an overrun loses acks.
const ACK_COST: usize = 2048;
/// Big enough for the largest skb a dump sends (32 KiB), so nothing is truncated.
const RECV_BUFFER: usize = 64 << 10;
/// Datagrams read per `recvmmsg` call (each slot is RECV_BUFFER bytes, allocated on first use).
const RECV_SLOTS: usize = 32;
/// How long to wait for the kernel's next datagram before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Rounds in which every dump request met EBUSY before listing gives up.
const MAX_BUSY_ROUNDS: usize = 100;

/// How many requests go into one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Acked requests per datagram, so that their acks fit the receive buffer.
    pub max_requests: usize,
    /// Bytes per datagram (the kernel refuses more than the send buffer).
    pub max_bytes: usize,
    /// GET_DEST dump requests per datagram. Only the first one of a datagram can run unless the
    /// services before it have no destinations (see the module documentation), so the default
    /// is 1.
    pub max_dumps: usize,
}

impl BatchLimits {
    /// Limits for the buffer sizes `getsockopt` reports (the kernel's doubled values).
    pub fn for_buffers(receive: usize, send: usize) -> Self {
        Self {
            max_requests: (receive / ACK_COST).clamp(1, 4096),
            max_bytes: (send / 2).max(RECV_BUFFER),
            max_dumps: 1,
        }
    }
}

/// A netlink socket bound to the IPVS family of the caller's network namespace.
pub struct IpvsClient {
    socket: TokioSocket,
    family_id: u16,
    next_sequence: u32,
    limits: BatchLimits,
    receive: Vec<u8>,
    /// `recvmmsg` slots, RECV_SLOTS buffers of RECV_BUFFER bytes once the first round ran.
    slots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for IpvsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsClient")
            .field("fd", &self.socket.as_raw_fd())
            .field("family_id", &self.family_id)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One request of a round, with the reply shape it expects.
struct Request {
    sequence: u32,
    bytes: Vec<u8>,
}

/// What the kernel answered to one request.
enum Answer {
    /// The ack (or end of dump), with the messages that came before it.
    Ok(Vec<IpvsMessage>),
    Refused(i32),
}

impl IpvsClient {
    /// Opens a generic netlink socket in the current network namespace and resolves the
    /// "IPVS" family. Needs CAP_NET_ADMIN for anything but reading.
    pub async fn connect() -> Result<Self, IpvsError> {
        let socket =
            open_socket().map_err(|source| IpvsError::Socket { operation: Operation::Connect, source })?;
        let fd = socket.as_raw_fd();
        let limits = BatchLimits::for_buffers(
            grow_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            grow_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        );
        let mut client = Self {
            socket,
            family_id: 0,
            next_sequence: 1,
            limits,
            receive: Vec::with_capacity(RECV_BUFFER),
            slots: Vec::new(),
        };
        client.family_id = client.resolve_family().await?;
        Ok(client)
    }

    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.limits
    }

    /// Lowers (or raises, at the caller's risk of lost acks) the batch limits.
    pub fn set_batch_limits(&mut self, limits: BatchLimits) {
        self.limits = BatchLimits {
            max_requests: limits.max_requests.max(1),
            max_bytes: limits.max_bytes,
            max_dumps: limits.max_dumps.max(1),
        };
    }

    pub async fn add_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.apply_one(Op::AddService(service.clone())).await
    }

    pub async fn update_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.apply_one(Op::UpdateService(service.clone())).await
    }

    pub async fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.apply_one(Op::DeleteService(*key)).await
    }

    pub async fn add_dest(
        &mut self,
        service: &ServiceKey,
        dest: &crate::model::Destination,
    ) -> Result<(), IpvsError> {
        self.apply_one(Op::AddDest(*service, *dest)).await
    }

    pub async fn update_dest(
        &mut self,
        service: &ServiceKey,
        dest: &crate::model::Destination,
    ) -> Result<(), IpvsError> {
        self.apply_one(Op::UpdateDest(*service, *dest)).await
    }

    pub async fn delete_dest(
        &mut self,
        service: &ServiceKey,
        dest: &crate::model::DestKey,
    ) -> Result<(), IpvsError> {
        self.apply_one(Op::DeleteDest(*service, *dest)).await
    }

    async fn apply_one(&mut self, op: Op) -> Result<(), IpvsError> {
        self.apply_ops(std::slice::from_ref(&op), OnFailure::Stop).await.into_result()
    }

    /// Destinations of one service. An unknown service lists as empty: the kernel's GET_DEST
    /// dump ends without error when the service does not exist.
    pub async fn dests(&mut self, service: &ServiceKey) -> Result<Vec<DestinationStatus>, IpvsError> {
        let mut answers = self.dump_all(&[*service]).await?;
        Ok(answers.pop().map(|(_, dests)| dests).unwrap_or_default())
    }

    /// Destinations of each of `services`, through pipelined GET_DEST dumps (no GET_SERVICE
    /// dump of the whole table); an unknown service lists as empty.
    pub async fn dests_of(
        &mut self,
        services: &[ServiceKey],
    ) -> Result<Vec<(ServiceKey, Vec<DestinationStatus>)>, IpvsError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        self.dump_all(services).await
    }

    /// Zeroes the counters of every service and destination.
    pub async fn zero(&mut self) -> Result<(), IpvsError> {
        self.single(IpvsMessage::new(IpvsCmd::Zero, vec![]), Operation::ZeroCounters).await.map(drop)
    }

    /// Deletes every service (and so every destination) of this network namespace.
    pub async fn flush(&mut self) -> Result<(), IpvsError> {
        self.single(IpvsMessage::new(IpvsCmd::Flush, vec![]), Operation::Flush).await.map(drop)
    }

    /// Every service, then each service's destinations through pipelined GET_DEST dumps.
    pub async fn list_services(&mut self) -> Result<Vec<ServiceStatus>, IpvsError> {
        let mut services = self.list_services_alone().await?;
        let keys: Vec<ServiceKey> = services.iter().map(|status| status.service.key).collect();
        // Both are in key order, and the dumps answer in the order asked.
        for (status, (key, dests)) in services.iter_mut().zip(self.dump_all(&keys).await?) {
            debug_assert_eq!(status.service.key, key);
            dests.into_iter().for_each(|dest| status.insert_destination(dest));
        }
        Ok(services)
    }

    /// Every service with its counters, without destinations: one GET_SERVICE dump.
    pub async fn list_services_alone(&mut self) -> Result<Vec<ServiceStatus>, IpvsError> {
        let operation = Operation::ListServices;
        let request = IpvsMessage::new(IpvsCmd::GetService, vec![]);
        let messages = self.dump_one(request, operation).await?;
        let mut services = BTreeServices::default();
        for message in messages {
            for attr in message.attrs {
                if let IpvsAttr::Service(attrs) = attr {
                    let status = packet::service_from_attrs(&attrs)
                        .map_err(|reason| IpvsError::decode(operation, reason))?;
                    services.0.insert(status.service.key, status);
                }
            }
        }
        Ok(services.0.into_values().collect())
    }

    pub async fn read_info(&mut self) -> Result<Info, IpvsError> {
        let operation = Operation::ReadInfo;
        let reply = self.single(IpvsMessage::new(IpvsCmd::GetInfo, vec![]), operation).await?;
        let (mut version, mut size) = (None, None);
        for attr in reply.into_iter().flat_map(|message| message.attrs) {
            match attr {
                IpvsAttr::InfoVersion(value) => version = Some(value),
                IpvsAttr::InfoConnTabSize(value) => size = Some(value),
                _ => {}
            }
        }
        match (version, size) {
            (Some(version), Some(connection_table_size)) => Ok(Info { version, connection_table_size }),
            _ => Err(IpvsError::decode(operation, "GET_INFO reply without version or table size")),
        }
    }

    pub async fn read_timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let reply =
            self.single(IpvsMessage::new(IpvsCmd::GetConfig, vec![]), Operation::ReadTimeouts).await?;
        let mut timeouts = Timeouts::default();
        for attr in reply.into_iter().flat_map(|message| message.attrs) {
            match attr {
                IpvsAttr::TimeoutTcp(value) => timeouts.tcp = value,
                IpvsAttr::TimeoutTcpFin(value) => timeouts.tcp_fin = value,
                IpvsAttr::TimeoutUdp(value) => timeouts.udp = value,
                _ => {}
            }
        }
        Ok(timeouts)
    }

    /// Sets the three timeouts; a 0 leaves that one unchanged (the kernel's rule).
    pub async fn write_timeouts(&mut self, timeouts: Timeouts) -> Result<(), IpvsError> {
        let attrs = vec![
            IpvsAttr::TimeoutTcp(timeouts.tcp),
            IpvsAttr::TimeoutTcpFin(timeouts.tcp_fin),
            IpvsAttr::TimeoutUdp(timeouts.udp),
        ];
        self.single(IpvsMessage::new(IpvsCmd::SetConfig, attrs), Operation::SetTimeouts).await.map(drop)
    }

    /// Applies `ops` in pipelined batches; see [`OnFailure`] for what `Stop` guarantees.
    pub async fn apply_ops(&mut self, ops: &[Op], on_failure: OnFailure) -> ApplyReport {
        let mut report =
            ApplyReport { outcomes: ops.iter().map(|_| OpOutcome::NotSent).collect(), ..Default::default() };
        let mut next = 0;
        while next < ops.len() {
            let (requests, end) = self.next_batch(ops, next);
            if requests.is_empty() {
                // ops[next] cannot be expressed on the wire: refused here, nothing sent.
                let reason = packet::request_for(&ops[next]).err().unwrap_or_default();
                report.outcomes[next] =
                    OpOutcome::Refused(IpvsError::Invalid { operation: ops[next].operation(), reason });
                next += 1;
            } else {
                let operation = Operation::Apply { ops: requests.len() };
                match self.round(&requests, operation).await {
                    Ok(mut answers) => record_answers(ops, next, &requests, &mut answers, &mut report),
                    Err(err) => {
                        report.outcomes[next..end]
                            .iter_mut()
                            .for_each(|outcome| *outcome = OpOutcome::Unknown);
                        report.transport_error = Some(err);
                        return report;
                    }
                }
                next = end;
            }
            if on_failure == OnFailure::Stop && report.refusals().next().is_some() {
                break;
            }
        }
        report
    }

    /// The longest run of encodable ops from `start` within the batch limits.
    fn next_batch(&mut self, ops: &[Op], start: usize) -> (Vec<Request>, usize) {
        let mut requests = Vec::new();
        let mut bytes = 0;
        let mut end = start;
        for op in &ops[start..] {
            let Ok(message) = packet::request_for(op) else { break };
            let sequence = self.sequence();
            let encoded =
                packet::encode_request(self.family_id, sequence, NLM_F_REQUEST | NLM_F_ACK, message);
            let full =
                requests.len() >= self.limits.max_requests || bytes + encoded.len() > self.limits.max_bytes;
            if full && !requests.is_empty() {
                break;
            }
            bytes += encoded.len();
            requests.push(Request { sequence, bytes: encoded });
            end += 1;
        }
        (requests, end)
    }

    /// One acked request on its own; returns the messages that came before the ack.
    pub(super) async fn single(
        &mut self,
        message: IpvsMessage,
        operation: Operation,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        let sequence = self.sequence();
        let bytes = packet::encode_request(self.family_id, sequence, NLM_F_REQUEST | NLM_F_ACK, message);
        let mut answers = self.round(&[Request { sequence, bytes }], operation).await?;
        match answers.remove(&sequence) {
            Some(Answer::Ok(messages)) => Ok(messages),
            Some(Answer::Refused(errno)) => Err(IpvsError::kernel(operation, errno)),
            None => Err(IpvsError::decode(operation, "no reply")),
        }
    }

    /// One dump, sent again while the socket is busy with an earlier one.
    pub(super) async fn dump_one(
        &mut self,
        message: IpvsMessage,
        operation: Operation,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        for _ in 0..MAX_BUSY_ROUNDS {
            let sequence = self.sequence();
            let bytes =
                packet::encode_request(self.family_id, sequence, NLM_F_REQUEST | NLM_F_DUMP, message.clone());
            match self.round(&[Request { sequence, bytes }], operation).await?.remove(&sequence) {
                Some(Answer::Ok(messages)) => return Ok(messages),
                Some(Answer::Refused(libc::EBUSY)) => continue,
                Some(Answer::Refused(errno)) => return Err(IpvsError::kernel(operation, errno)),
                None => return Err(IpvsError::decode(operation, "no reply")),
            }
        }
        Err(IpvsError::kernel(operation, libc::EBUSY))
    }

    /// GET_DEST dumps for `services`, pipelined `max_dumps` at a time; EBUSY ones go again.
    async fn dump_all(
        &mut self,
        services: &[ServiceKey],
    ) -> Result<Vec<(ServiceKey, Vec<DestinationStatus>)>, IpvsError> {
        let mut queue: VecDeque<ServiceKey> = services.iter().copied().collect();
        let mut done = Vec::with_capacity(services.len());
        let mut idle_rounds = 0;
        while !queue.is_empty() {
            let batch: Vec<ServiceKey> = queue.drain(..self.limits.max_dumps.min(queue.len())).collect();
            let requests: Vec<Request> = batch.iter().map(|key| self.dest_dump_request(key)).collect();
            let mut answers = self.round(&requests, Operation::ListDests(batch[0])).await?;
            let before = done.len();
            for (key, request) in batch.iter().zip(&requests).rev() {
                match answers.remove(&request.sequence) {
                    Some(Answer::Ok(messages)) => done.push((*key, dests_of(key, messages)?)),
                    Some(Answer::Refused(libc::EBUSY)) => queue.push_front(*key),
                    Some(Answer::Refused(errno)) => {
                        return Err(IpvsError::kernel(Operation::ListDests(*key), errno));
                    }
                    None => return Err(IpvsError::decode(Operation::ListDests(*key), "no reply")),
                }
            }
            idle_rounds = if done.len() == before { idle_rounds + 1 } else { 0 };
            if idle_rounds >= MAX_BUSY_ROUNDS {
                return Err(IpvsError::kernel(Operation::ListDests(batch[0]), libc::EBUSY));
            }
        }
        Ok(done)
    }

    fn dest_dump_request(&mut self, key: &ServiceKey) -> Request {
        let sequence = self.sequence();
        let message =
            IpvsMessage::new(IpvsCmd::GetDest, vec![IpvsAttr::Service(packet::service_identity(key))]);
        Request {
            sequence,
            bytes: packet::encode_request(self.family_id, sequence, NLM_F_REQUEST | NLM_F_DUMP, message),
        }
    }

    /// Sends `requests` in one datagram and reads until each has its final answer: an ack or
    /// error for acked requests, NLMSG_DONE or an error for dumps. Replies to other sequence
    /// numbers (left over from an abandoned round) are skipped.
    async fn round(
        &mut self,
        requests: &[Request],
        operation: Operation,
    ) -> Result<HashMap<u32, Answer>, IpvsError> {
        let datagram: Vec<u8> = requests.iter().flat_map(|request| request.bytes.iter().copied()).collect();
        let socket_error = |source| IpvsError::Socket { operation, source };
        let sent = self.socket.send(&datagram).await.map_err(socket_error)?;
        if sent != datagram.len() {
            return Err(socket_error(io::Error::other(format!("sent {sent} of {} bytes", datagram.len()))));
        }
        let mut pending: HashMap<u32, Vec<IpvsMessage>> =
            requests.iter().map(|request| (request.sequence, Vec::new())).collect();
        let mut answers = HashMap::with_capacity(requests.len());
        let mut buffer = std::mem::take(&mut self.receive);
        let mut slots = std::mem::take(&mut self.slots);
        if slots.is_empty() {
            slots = (0..RECV_SLOTS).map(|_| vec![0; RECV_BUFFER]).collect();
        }
        let fd = self.socket.as_raw_fd();
        let result = async {
            while !pending.is_empty() {
                // Everything the kernel queued so far, many datagrams per system call.
                match receive_queued(fd, &mut slots) {
                    Ok(lengths) => {
                        for (slot, length) in slots.iter().zip(lengths) {
                            take_replies(&slot[..length], &mut pending, &mut answers)
                                .map_err(|err| IpvsError::decode(operation, err))?;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        // Nothing queued: wait for the next datagram through tokio.
                        self.receive_datagram(&mut buffer).await.map_err(socket_error)?;
                        take_replies(&buffer, &mut pending, &mut answers)
                            .map_err(|err| IpvsError::decode(operation, err))?;
                    }
                    Err(err) => return Err(socket_error(err)),
                }
            }
            Ok(answers)
        }
        .await;
        self.receive = buffer;
        self.slots = slots;
        result
    }

    async fn receive_datagram(&self, buffer: &mut Vec<u8>) -> io::Result<()> {
        buffer.clear();
        buffer.reserve(RECV_BUFFER);
        match tokio::time::timeout(REPLY_TIMEOUT, self.socket.recv(buffer)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel")),
        }
    }

    async fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let operation = Operation::Connect;
        let socket_error = |source| IpvsError::Socket { operation, source };
        let sequence = self.sequence();
        self.socket.send(&packet::encode_family_request(sequence)).await.map_err(socket_error)?;
        let mut buffer = Vec::with_capacity(RECV_BUFFER);
        let mut family_id = None;
        loop {
            self.receive_datagram(&mut buffer).await.map_err(socket_error)?;
            for frame in packet::split_messages(&buffer) {
                let message = frame
                    .and_then(FamilyNetlinkMessage::deserialize)
                    .map_err(|err| IpvsError::decode(operation, err))?;
                if message.header.sequence_number != sequence {
                    continue;
                }
                family_id = family_id.or(packet::family_id_of(&message));
                if let NetlinkPayload::Error(error) = &message.payload {
                    return match error.code.map(|code| code.get().saturating_neg()) {
                        None => {
                            family_id.ok_or_else(|| IpvsError::decode(operation, "no CTRL_ATTR_FAMILY_ID"))
                        }
                        Some(libc::ENOENT) => Err(IpvsError::NotAvailable { operation }),
                        Some(errno) => Err(IpvsError::kernel(operation, errno)),
                    };
                }
            }
        }
    }

    fn sequence(&mut self) -> u32 {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        sequence
    }
}

/// Services by key while listing, so the result comes out ordered.
#[derive(Default)]
struct BTreeServices(std::collections::BTreeMap<ServiceKey, ServiceStatus>);

fn dests_of(key: &ServiceKey, messages: Vec<IpvsMessage>) -> Result<Vec<DestinationStatus>, IpvsError> {
    let family = packet::service_family(key);
    let mut dests = Vec::new();
    for attr in messages.into_iter().flat_map(|message| message.attrs) {
        if let IpvsAttr::Dest(attrs) = attr {
            let dest = packet::dest_from_attrs(&attrs, family)
                .map_err(|reason| IpvsError::decode(Operation::ListDests(*key), reason))?;
            dests.push(dest);
        }
    }
    Ok(dests)
}

/// Files each netlink message of a datagram under its request; final ones become answers.
fn take_replies(
    datagram: &[u8],
    pending: &mut HashMap<u32, Vec<IpvsMessage>>,
    answers: &mut HashMap<u32, Answer>,
) -> Result<(), netlink_packet_core::DecodeError> {
    for frame in packet::split_messages(datagram) {
        let message = packet::decode_message(frame?)?;
        let sequence = message.header.sequence_number;
        let Some(collected) = pending.get_mut(&sequence) else { continue };
        let answer = match message.payload {
            NetlinkPayload::InnerMessage(genl) => {
                collected.push(genl.payload);
                continue;
            }
            NetlinkPayload::Error(error) => match error.code {
                None => Answer::Ok(std::mem::take(collected)),
                Some(code) => Answer::Refused(code.get().saturating_neg()),
            },
            NetlinkPayload::Done(done) if done.code < 0 => Answer::Refused(done.code.saturating_neg()),
            NetlinkPayload::Done(_) => Answer::Ok(std::mem::take(collected)),
            _ => continue,
        };
        pending.remove(&sequence);
        answers.insert(sequence, answer);
    }
    Ok(())
}

fn record_answers(
    ops: &[Op],
    start: usize,
    requests: &[Request],
    answers: &mut HashMap<u32, Answer>,
    report: &mut ApplyReport,
) {
    for (offset, request) in requests.iter().enumerate() {
        let index = start + offset;
        report.outcomes[index] = match answers.remove(&request.sequence) {
            Some(Answer::Ok(_)) => OpOutcome::Applied,
            Some(Answer::Refused(errno)) => {
                OpOutcome::Refused(IpvsError::kernel(ops[index].operation(), errno))
            }
            None => OpOutcome::Unknown,
        };
    }
}

impl Ipvs for IpvsClient {
    fn services(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send {
        self.list_services()
    }

    fn services_alone(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send {
        self.list_services_alone()
    }

    fn destinations_of(
        &mut self,
        services: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<(ServiceKey, Vec<DestinationStatus>)>, IpvsError>> + Send {
        self.dests_of(services)
    }

    fn totals(&mut self) -> impl Future<Output = Option<super::Totals>> + Send {
        std::future::ready(super::totals::read(std::path::Path::new(super::totals::PATH)))
    }

    fn apply(&mut self, ops: &[Op], on_failure: OnFailure) -> impl Future<Output = ApplyReport> + Send {
        self.apply_ops(ops, on_failure)
    }

    fn info(&mut self) -> impl Future<Output = Result<Info, IpvsError>> + Send {
        self.read_info()
    }

    fn timeouts(&mut self) -> impl Future<Output = Result<Timeouts, IpvsError>> + Send {
        self.read_timeouts()
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) -> impl Future<Output = Result<(), IpvsError>> + Send {
        self.write_timeouts(timeouts)
    }

    fn sync_daemons(&mut self) -> impl Future<Output = Result<Vec<SyncDaemon>, IpvsError>> + Send {
        IpvsClient::sync_daemons(self)
    }

    fn start_sync_daemon(
        &mut self,
        daemon: &SyncDaemon,
    ) -> impl Future<Output = Result<(), IpvsError>> + Send {
        IpvsClient::start_sync_daemon(self, daemon)
    }

    fn stop_sync_daemon(&mut self, state: SyncState) -> impl Future<Output = Result<(), IpvsError>> + Send {
        IpvsClient::stop_sync_daemon(self, state)
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
