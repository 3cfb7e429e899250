//! Changes to the IPVS table, as a batch the planner hands over, and what became of each.

use std::fmt;

use crate::model::{DestKey, Destination, Service, ServiceKey};

use super::{IfName, IpvsError, SyncState};

/// One change. A batch of them is applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creates the virtual service alone: `Service::destinations` is ignored, each destination
    /// is its own `AddDest` (so that each kernel refusal names one object).
    AddService(Service),
    /// Changes scheduler and persistence; `Service::destinations` is ignored.
    UpdateService(Service),
    /// Deletes the service and, in the kernel, all its destinations.
    DeleteService(ServiceKey),
    AddDest(ServiceKey, Destination),
    UpdateDest(ServiceKey, Destination),
    DeleteDest(ServiceKey, DestKey),
}

impl Op {
    /// The service the operation acts on.
    pub fn service(&self) -> ServiceKey {
        match self {
            Self::AddService(service) | Self::UpdateService(service) => service.key,
            Self::DeleteService(key)
            | Self::AddDest(key, _)
            | Self::UpdateDest(key, _)
            | Self::DeleteDest(key, _) => *key,
        }
    }

    /// What this op does, in the words its error would use.
    pub fn operation(&self) -> Operation {
        match self {
            Self::AddService(service) => Operation::CreateService(service.key),
            Self::UpdateService(service) => Operation::UpdateService(service.key),
            Self::DeleteService(key) => Operation::DeleteService(*key),
            Self::AddDest(service, dest) => Operation::CreateDest { service: *service, dest: dest.key },
            Self::UpdateDest(service, dest) => Operation::UpdateDest { service: *service, dest: dest.key },
            Self::DeleteDest(service, dest) => Operation::DeleteDest { service: *service, dest: *dest },
        }
    }
}

/// What was being done when something failed; printed as the start of the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Connect,
    CreateService(ServiceKey),
    UpdateService(ServiceKey),
    DeleteService(ServiceKey),
    CreateDest {
        service: ServiceKey,
        dest: DestKey,
    },
    UpdateDest {
        service: ServiceKey,
        dest: DestKey,
    },
    DeleteDest {
        service: ServiceKey,
        dest: DestKey,
    },
    /// A pipelined batch of changes, when the socket fails under it.
    Apply {
        ops: usize,
    },
    ListServices,
    ListDests(ServiceKey),
    ReadInfo,
    ReadTimeouts,
    SetTimeouts,
    ZeroCounters,
    Flush,
    StartSyncDaemon {
        state: SyncState,
        interface: IfName,
        sync_id: u8,
    },
    StopSyncDaemon(SyncState),
    ListSyncDaemons,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("opening the IPVS generic netlink socket"),
            Self::CreateService(key) => write!(f, "creating service {key}"),
            Self::UpdateService(key) => write!(f, "updating service {key}"),
            Self::DeleteService(key) => write!(f, "deleting service {key}"),
            Self::CreateDest { service, dest } => write!(f, "creating destination {dest} in {service}"),
            Self::UpdateDest { service, dest } => write!(f, "updating destination {dest} in {service}"),
            Self::DeleteDest { service, dest } => write!(f, "deleting destination {dest} from {service}"),
            Self::Apply { ops } => write!(f, "applying a batch of {ops} changes"),
            Self::ListServices => f.write_str("listing IPVS services"),
            Self::ListDests(key) => write!(f, "listing destinations of {key}"),
            Self::ReadInfo => f.write_str("reading IPVS version and connection table size"),
            Self::ReadTimeouts => f.write_str("reading IPVS timeouts"),
            Self::SetTimeouts => f.write_str("setting IPVS timeouts"),
            Self::ZeroCounters => f.write_str("zeroing IPVS counters"),
            Self::Flush => f.write_str("flushing the IPVS table"),
            Self::StartSyncDaemon { state, interface, sync_id } => {
                write!(f, "starting the {state} sync daemon on {interface} (syncid {sync_id})")
            }
            Self::StopSyncDaemon(state) => write!(f, "stopping the {state} sync daemon"),
            Self::ListSyncDaemons => f.write_str("listing the IPVS sync daemons"),
        }
    }
}

/// What to do after the kernel refuses an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Send every op; report each outcome.
    Continue,
    /// Send nothing more after a refusal. Ops are pipelined in batches, so ops that were
    /// already sent in the same batch as the refused one were still carried out by the kernel:
    /// their outcomes say so exactly. Ops after that batch are `NotSent`.
    Stop,
}

/// The outcome of one op.
#[derive(Debug)]
pub enum OpOutcome {
    /// The kernel acknowledged it.
    Applied,
    /// The kernel (or request validation, before sending) refused it.
    Refused(IpvsError),
    /// Never sent (after a refusal with `OnFailure::Stop`, or after a socket failure).
    NotSent,
    /// Sent, but its acknowledgement never arrived: the socket failed (see
    /// `ApplyReport::transport_error`). It may or may not have been applied.
    Unknown,
}

/// Per-op outcomes of a batch, in the order of the ops.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub outcomes: Vec<OpOutcome>,
    /// A socket or decoding failure that ended the batch early.
    pub transport_error: Option<IpvsError>,
}

impl ApplyReport {
    pub fn applied(&self) -> usize {
        self.outcomes.iter().filter(|outcome| matches!(outcome, OpOutcome::Applied)).count()
    }

    pub fn is_complete(&self) -> bool {
        self.transport_error.is_none() && self.outcomes.iter().all(|o| matches!(o, OpOutcome::Applied))
    }

    /// Index and error of each refused op, in order.
    pub fn refusals(&self) -> impl Iterator<Item = (usize, &IpvsError)> {
        self.outcomes.iter().enumerate().filter_map(|(index, outcome)| match outcome {
            OpOutcome::Refused(err) => Some((index, err)),
            _ => None,
        })
    }

    /// `Ok` when every op was applied; otherwise the first refusal or the transport error.
    pub fn into_result(mut self) -> Result<(), IpvsError> {
        if let Some(err) = self.transport_error.take() {
            return Err(err);
        }
        for outcome in self.outcomes {
            if let OpOutcome::Refused(err) = outcome {
                return Err(err);
            }
        }
        Ok(())
    }
}
