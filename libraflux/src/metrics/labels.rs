//! Label sets and label values, typed so that series sort by the operator's keys (service key,
//! then backend key) and values come from closed sets where they can.

use std::fmt::{self, Display, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use crate::{
    config::Check,
    ipvs::{Op, SyncState},
    model::{DestKey, ServiceKey},
};

/// Writes one `key="value"` pair; the encoder escapes the value.
fn encode_label(encoder: &mut LabelSetEncoder<'_>, key: &str, value: &dyn Display) -> fmt::Result {
    let mut label = encoder.encode_label();
    let mut key_encoder = label.encode_label_key()?;
    key_encoder.write_str(key)?;
    let mut value_encoder = key_encoder.encode_label_value()?;
    write!(value_encoder, "{value}")?;
    value_encoder.finish()
}

/// A label set struct whose field names are the label names, encoded in field order.
macro_rules! label_set {
    ($name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(super) struct $name {
            $(pub(super) $field: $ty,)*
        }

        impl EncodeLabelSet for $name {
            fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
                $(encode_label(encoder, stringify!($field), &self.$field)?;)*
                Ok(())
            }
        }
    };
}

label_set!(ServiceLabels { service: ServiceKey });
label_set!(BackendLabels { service: ServiceKey, backend: DestKey });
label_set!(CheckLabels { service: ServiceKey, backend: DestKey, outcome: CheckOutcome });
label_set!(LatencyLabels { check_type: CheckType, outcome: CheckOutcome });
label_set!(ReconcileLabels { result: ReconcileResult });
label_set!(TriggerLabels { trigger: Trigger });
label_set!(OperationLabels { kind: OperationKind });
label_set!(ReloadLabels { result: ReloadResult });
label_set!(VersionLabels { version: &'static str });
label_set!(ReasonLabels { reason: &'static str });
label_set!(SyncLabels { state: SyncState });
label_set!(VipLabels { vip: std::net::IpAddr });
label_set!(ResultLabels { result: &'static str });
label_set!(ReadLabels { read: &'static str });

/// How one health check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckOutcome {
    /// The backend answered as expected.
    Success,
    /// The backend answered, wrongly, or refused.
    Failure,
    /// No answer within the check's timeout.
    Timeout,
}

impl CheckOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

impl Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `check_type` label: the config's `health.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckType(&'static str);

impl From<&Check> for CheckType {
    fn from(check: &Check) -> Self {
        Self(check.type_name())
    }
}

impl Display for CheckType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Why a reconcile ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    Startup,
    ConfigReload,
    HealthChange,
    /// A drain was asked for, undone, or ended.
    Drain,
    /// A canary moved to its next step, was started, promoted or aborted.
    Canary,
    /// The periodic run; if it finds anything to do, the kernel drifted (someone ran ipvsadm).
    Interval,
}

impl Trigger {
    pub const ALL: [Self; 6] =
        [Self::Startup, Self::ConfigReload, Self::HealthChange, Self::Drain, Self::Canary, Self::Interval];
}

impl Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Startup => "startup",
            Self::ConfigReload => "config_reload",
            Self::HealthChange => "health_change",
            Self::Drain => "drain",
            Self::Canary => "canary",
            Self::Interval => "interval",
        })
    }
}

/// How one reconcile run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReconcileResult {
    /// The plan was applied (or there was nothing to do).
    Ok,
    /// Reading or changing IPVS failed.
    Error,
    /// A limit or pre-flight check refused the plan; nothing was touched.
    Refused,
}

impl Display for ReconcileResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Refused => "refused",
        })
    }
}

/// How a configuration reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum ReloadResult {
    Ok,
    Failed,
}

impl Display for ReloadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        })
    }
}

/// The `kind` label of `libraflux_reconcile_operations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum OperationKind {
    AddService,
    UpdateService,
    DeleteService,
    AddBackend,
    UpdateBackend,
    DeleteBackend,
}

impl From<&Op> for OperationKind {
    fn from(op: &Op) -> Self {
        match op {
            Op::AddService(_) => Self::AddService,
            Op::UpdateService(_) => Self::UpdateService,
            Op::DeleteService(_) => Self::DeleteService,
            Op::AddDest(..) => Self::AddBackend,
            Op::UpdateDest(..) => Self::UpdateBackend,
            Op::DeleteDest(..) => Self::DeleteBackend,
        }
    }
}

impl Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AddService => "add_service",
            Self::UpdateService => "update_service",
            Self::DeleteService => "delete_service",
            Self::AddBackend => "add_backend",
            Self::UpdateBackend => "update_backend",
            Self::DeleteBackend => "delete_backend",
        })
    }
}
