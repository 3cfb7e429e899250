//! Typed IPVS errors: each names the operation and the object; callers read the errno with
//! [`IpvsError::errno`], never by matching text.

use std::io;

use netlink_packet_core::DecodeError;

use super::Operation;

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel answered with a negative errno, e.g.
    /// `creating destination 10.0.0.2:80 in tcp:10.0.0.1:80: File exists (os error 17)`.
    #[error("{operation}: {source}")]
    Kernel {
        operation: Operation,
        #[source]
        source: io::Error,
    },
    /// The netlink socket itself failed (open, send, receive).
    #[error("{operation}: netlink socket: {source}")]
    Socket {
        operation: Operation,
        #[source]
        source: io::Error,
    },
    /// The kernel's reply did not decode, or did not say what a reply must.
    #[error("{operation}: unexpected reply from the kernel: {source}")]
    Decode {
        operation: Operation,
        #[source]
        source: DecodeError,
    },
    /// The request cannot be expressed on the wire (checked before anything is sent).
    #[error("{operation}: {reason}")]
    Invalid { operation: Operation, reason: String },
    /// No generic netlink family "IPVS": the ip_vs module is not loaded.
    #[error("{operation}: the kernel has no \"IPVS\" generic netlink family (is the ip_vs module loaded?)")]
    NotAvailable { operation: Operation },
}

impl IpvsError {
    pub(crate) fn kernel(operation: Operation, errno: i32) -> Self {
        Self::Kernel { operation, source: io::Error::from_raw_os_error(errno) }
    }

    pub(crate) fn decode(operation: Operation, reason: impl Into<DecodeError>) -> Self {
        Self::Decode { operation, source: reason.into() }
    }

    /// The errno the kernel (or the socket) reported, e.g. `libc::EEXIST`.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Socket { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel refused the request (as opposed to a local or transport failure).
    pub fn is_kernel_refusal(&self) -> bool {
        matches!(self, Self::Kernel { .. })
    }

    pub fn operation(&self) -> Operation {
        match self {
            Self::Kernel { operation, .. }
            | Self::Socket { operation, .. }
            | Self::Decode { operation, .. }
            | Self::Invalid { operation, .. }
            | Self::NotAvailable { operation } => *operation,
        }
    }
}
