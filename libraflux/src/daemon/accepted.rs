//! The configuration the daemon last accepted (`state/accepted.json`): what a change of the
//! configuration is measured against by the change limits, across restarts. A daemon killed in
//! the middle of applying a large accepted change comes back, finds the same configuration
//! accepted, and finishes it instead of refusing it against the half-written table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{config::DesiredState, model::Service};

const FILE: &str = "accepted.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct AcceptedFile {
    version: u32,
    services: Vec<Service>,
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptedError {
    #[error("{operation} {path}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not an accepted-configuration file")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The last accepted desired state; `None` when none was recorded.
pub fn load(dir: &Path) -> Result<Option<DesiredState>, AcceptedError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AcceptedError::Io { operation: "reading", path, source }),
    };
    let file: AcceptedFile =
        serde_json::from_str(&text).map_err(|source| AcceptedError::Corrupt { path, source })?;
    Ok(Some(file.services.into_iter().map(|service| (service.key, service)).collect()))
}

pub fn save(dir: &Path, desired: &DesiredState) -> Result<(), AcceptedError> {
    let file = AcceptedFile { version: VERSION, services: desired.values().cloned().collect() };
    let text = serde_json::to_string(&file).expect("services serialise");
    crate::state_file::write_atomic(dir, FILE, text.as_bytes())
        .map_err(|(operation, path, source)| AcceptedError::Io { operation, path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Forwarding, ServiceKey};

    #[test]
    fn round_trips_and_is_absent_until_saved() {
        let dir = std::env::temp_dir().join(format!("libraflux-accepted-{}", std::process::id()));
        assert!(load(&dir).unwrap().is_none());
        let key: ServiceKey = "udp:[2001:db8::1]:53".parse().unwrap();
        let dest = Destination::new("[2001:db8::10]:53".parse().unwrap(), 3, Forwarding::Dr);
        let desired = DesiredState::from([(key, Service::new(key, "wrr").with_destinations([dest]))]);
        save(&dir, &desired).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(desired));
        std::fs::write(dir.join(FILE), "[").unwrap();
        assert!(matches!(load(&dir), Err(AcceptedError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
