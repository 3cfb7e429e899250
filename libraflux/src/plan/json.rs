//! The plan as JSON for scripts. The schema is documented in `docs/plan-json.md` and versioned by
//! its `"schema"` field: fields may be added within a version, never renamed or removed. These
//! view types, not the model, define it, so the model can change without breaking scripts.

use serde::Serialize;

use super::{Change, DestinationUpdate, Op, Plan, ServiceUpdate};
use crate::model::{Destination, Service};

pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct PlanView {
    schema: u32,
    summary: Summary,
    create: Vec<ServiceView>,
    update: Vec<UpdateView>,
    delete: Vec<ServiceView>,
    drain_then_delete: DrainThenDelete,
    ops: Vec<OpView>,
}

#[derive(Serialize)]
struct DrainThenDelete {
    services: Vec<String>,
    backends: Vec<LeavingBackend>,
}

#[derive(Serialize)]
struct LeavingBackend {
    service: String,
    backend: String,
}

#[derive(Serialize)]
struct Summary {
    create: usize,
    update: usize,
    delete: usize,
}

#[derive(Serialize)]
struct ServiceView {
    service: String,
    scheduler: String,
    persistence: Option<u32>,
    persistence_netmask: Option<u8>,
    backends: Vec<BackendView>,
}

#[derive(Serialize)]
struct BackendView {
    backend: String,
    weight: u32,
    forwarding: &'static str,
    upper_threshold: u32,
    lower_threshold: u32,
}

#[derive(Serialize)]
struct UpdateView {
    service: String,
    changes: ServiceChanges,
    backends: BackendChanges,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<&'static str>,
}

#[derive(Serialize)]
struct ChangeView<T> {
    old: T,
    new: T,
}

#[derive(Serialize)]
struct ServiceChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<ChangeView<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence: Option<ChangeView<Option<u32>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence_netmask: Option<ChangeView<Option<u8>>>,
}

#[derive(Serialize)]
struct BackendChanges {
    add: Vec<BackendView>,
    update: Vec<BackendUpdateView>,
    remove: Vec<BackendView>,
}

#[derive(Serialize)]
struct BackendUpdateView {
    backend: String,
    changes: DestinationChanges,
}

#[derive(Serialize)]
struct DestinationChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<ChangeView<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forwarding: Option<ChangeView<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upper_threshold: Option<ChangeView<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lower_threshold: Option<ChangeView<u32>>,
}

#[derive(Serialize)]
struct OpView {
    op: &'static str,
    phase: &'static str,
    service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
}

/// Renders `plan` as pretty-printed JSON (schema 1), ending with a newline.
pub fn render_json(plan: &Plan) -> String {
    let view = PlanView {
        schema: JSON_SCHEMA_VERSION,
        summary: Summary { create: plan.create.len(), update: plan.update.len(), delete: plan.delete.len() },
        create: plan.create.iter().map(service).collect(),
        update: plan.update.iter().map(update).collect(),
        delete: plan.delete.iter().map(service).collect(),
        drain_then_delete: DrainThenDelete {
            services: plan.leaving.services.iter().map(ToString::to_string).collect(),
            backends: plan
                .leaving
                .backends
                .iter()
                .map(|(service, backend)| LeavingBackend {
                    service: service.to_string(),
                    backend: backend.to_string(),
                })
                .collect(),
        },
        ops: {
            let phases = plan.phases();
            let make = phases.make.iter().map(|o| op(o, "make"));
            make.chain(phases.reduce.iter().map(|o| op(o, "reduce"))).collect()
        },
    };
    let mut text =
        serde_json::to_string_pretty(&view).expect("plan views serialise: only strings and numbers");
    text.push('\n');
    text
}

fn service(service: &Service) -> ServiceView {
    ServiceView {
        service: service.key.to_string(),
        scheduler: service.scheduler.clone(),
        persistence: service.persistence,
        persistence_netmask: service.persistence_netmask,
        backends: service.destinations.values().map(backend).collect(),
    }
}

fn backend(dest: &Destination) -> BackendView {
    BackendView {
        backend: dest.key.to_string(),
        weight: dest.weight,
        forwarding: dest.forwarding.as_str(),
        upper_threshold: dest.upper_threshold,
        lower_threshold: dest.lower_threshold,
    }
}

fn change<T, U>(change: Option<Change<T>>, view: impl Fn(T) -> U) -> Option<ChangeView<U>> {
    change.map(|change| ChangeView { old: view(change.old), new: view(change.new) })
}

fn update(update: &ServiceUpdate) -> UpdateView {
    UpdateView {
        service: update.key().to_string(),
        changes: ServiceChanges {
            scheduler: change(update.scheduler.clone(), |scheduler| scheduler),
            persistence: change(update.persistence, |seconds| seconds),
            persistence_netmask: change(update.persistence_netmask, |prefix| prefix),
        },
        backends: BackendChanges {
            add: update.add.iter().map(backend).collect(),
            update: update.update.iter().map(backend_update).collect(),
            remove: update.remove.iter().map(backend).collect(),
        },
        warnings: update.scheduler.iter().map(|_| super::text::SCHEDULER_SWAP_WARNING).collect(),
    }
}

fn backend_update(update: &DestinationUpdate) -> BackendUpdateView {
    BackendUpdateView {
        backend: update.key().to_string(),
        changes: DestinationChanges {
            weight: change(update.weight, |weight| weight),
            forwarding: change(update.forwarding, |forwarding| forwarding.as_str()),
            upper_threshold: change(update.upper_threshold, |threshold| threshold),
            lower_threshold: change(update.lower_threshold, |threshold| threshold),
        },
    }
}

fn op(op: &Op, phase: &'static str) -> OpView {
    let (name, backend) = match op {
        Op::AddService(_) => ("add_service", None),
        Op::UpdateService(_) => ("update_service", None),
        Op::DeleteService(_) => ("delete_service", None),
        Op::AddDest(_, dest) => ("add_backend", Some(dest.key.to_string())),
        Op::UpdateDest(_, dest) => ("update_backend", Some(dest.key.to_string())),
        Op::DeleteDest(_, dest) => ("delete_backend", Some(dest.to_string())),
    };
    OpView { op: name, phase, service: op.service().to_string(), backend }
}
