//! The plan as text for people, in the manner of `terraform plan`: `+` create, `~` update,
//! `-` delete, changed fields as `old -> new`, and a summary line. Colour only when asked: the
//! command line decides whether its output is a terminal.

use std::fmt::Write as _;

use super::{Change, DestinationUpdate, Leaving, Plan, ServiceUpdate};
use crate::model::{Destination, Service};

#[derive(Clone, Copy)]
enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    const fn marker(self) -> char {
        match self {
            Self::Create => '+',
            Self::Update => '~',
            Self::Delete => '-',
        }
    }

    const fn colour(self) -> &'static str {
        match self {
            Self::Create => "\x1b[32m",
            Self::Update => "\x1b[33m",
            Self::Delete => "\x1b[31m",
        }
    }
}

struct Writer {
    out: String,
    colour: bool,
}

impl Writer {
    /// A line that starts with an action marker, the marker and head coloured when asked.
    fn action(&mut self, indent: usize, action: Action, head: &str, rest: &str) {
        let (start, end) = if self.colour { (action.colour(), "\x1b[0m") } else { ("", "") };
        let _ = writeln!(self.out, "{:indent$}{start}{} {head}{end}{rest}", "", action.marker());
    }

    fn line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{:indent$}{text}", "");
    }
}

/// Renders `plan` for a terminal or a log; `colour` adds ANSI colours to the markers.
pub fn render_text(plan: &Plan, colour: bool) -> String {
    if plan.is_empty() && plan.leaving.is_empty() {
        return "No changes. IPVS matches the configuration.\n".to_owned();
    }
    if plan.is_empty() {
        return format!(
            "No changes. {} backend(s) that left the configuration are at weight 0, draining before they are \
             deleted.\n",
            plan.leaving.backends.len()
        );
    }
    let mut w = Writer { out: String::new(), colour };
    w.line(0, "LibraFlux will make these changes to IPVS:");
    for service in &plan.create {
        w.line(0, "");
        created(&mut w, service);
    }
    for update in &plan.update {
        w.line(0, "");
        updated(&mut w, update, &plan.leaving);
    }
    for service in &plan.delete {
        w.line(0, "");
        let backends = match service.destinations.len() {
            1 => "  (and its 1 backend)".to_owned(),
            count => format!("  (and its {count} backends)"),
        };
        w.action(2, Action::Delete, &format!("service {}", service.key), &backends);
    }
    let draining = if plan.leaving.is_empty() {
        String::new()
    } else {
        format!(" {} backend(s) to drain, then delete.", plan.leaving.backends.len())
    };
    let _ = writeln!(
        w.out,
        "\nPlan: {} to create, {} to update, {} to delete.{draining}",
        plan.create.len(),
        plan.update.len(),
        plan.delete.len()
    );
    w.out
}

fn created(w: &mut Writer, service: &Service) {
    w.action(2, Action::Create, &format!("service {}", service.key), "");
    w.line(6, &format!("scheduler   = {}", service.scheduler));
    w.line(6, &format!("persistence = {}", persistence(service.persistence)));
    if service.persistence_netmask.is_some() {
        w.line(6, &format!("netmask     = {}", netmask(service.persistence_netmask)));
    }
    for dest in service.destinations.values() {
        w.action(6, Action::Create, &format!("backend {}", dest.key), &format!("  {}", attributes(dest)));
    }
}

/// What a scheduler change costs on the kernels we test (6.1): said in the plan, text and JSON.
pub const SCHEDULER_SWAP_WARNING: &str = "the kernel refuses new connections for a moment while the scheduler \
     is swapped; LibraFlux holds those refusals back (clients retry) with eBPF at the egress of node.interface";

fn updated(w: &mut Writer, update: &ServiceUpdate, leaving: &Leaving) {
    if leaving.services.contains(&update.key()) {
        let rest = "  drain, then delete: its backends go to weight 0, the service goes when all are drained";
        w.action(2, Action::Delete, &format!("service {}", update.key()), rest);
    } else {
        w.action(2, Action::Update, &format!("service {}", update.key()), "");
    }
    if let Some(change) = &update.scheduler {
        w.line(6, &format!("scheduler:   {} -> {}", change.old, change.new));
        w.line(8, &format!("note: {SCHEDULER_SWAP_WARNING}"));
    }
    if let Some(change) = update.persistence {
        w.line(6, &format!("persistence: {} -> {}", persistence(change.old), persistence(change.new)));
    }
    if let Some(change) = update.persistence_netmask {
        w.line(6, &format!("netmask:     {} -> {}", netmask(change.old), netmask(change.new)));
    }
    for dest in &update.add {
        w.action(6, Action::Create, &format!("backend {}", dest.key), &format!("  {}", attributes(dest)));
    }
    for change in &update.update {
        if leaving.backends.contains(&(update.key(), change.key())) {
            let rest = format!("  drain, then delete ({})", changes(change));
            w.action(6, Action::Delete, &format!("backend {}", change.key()), &rest);
        } else {
            w.action(
                6,
                Action::Update,
                &format!("backend {}", change.key()),
                &format!("  {}", changes(change)),
            );
        }
    }
    for dest in &update.remove {
        w.action(6, Action::Delete, &format!("backend {}", dest.key), &format!("  {}", attributes(dest)));
    }
}

/// `weight=1 forwarding=nat`, with thresholds when set.
fn attributes(dest: &Destination) -> String {
    let mut text = format!("weight={} forwarding={}", dest.weight, dest.forwarding);
    if dest.upper_threshold != 0 {
        let _ = write!(text, " upper_threshold={}", dest.upper_threshold);
    }
    if dest.lower_threshold != 0 {
        let _ = write!(text, " lower_threshold={}", dest.lower_threshold);
    }
    text
}

/// `weight: 1 -> 0, forwarding: nat -> dr`.
fn changes(update: &DestinationUpdate) -> String {
    fn field<T: std::fmt::Display>(name: &str, change: Option<Change<T>>) -> Option<String> {
        change.map(|change| format!("{name}: {} -> {}", change.old, change.new))
    }
    [
        field("weight", update.weight),
        field("forwarding", update.forwarding),
        field("upper_threshold", update.upper_threshold),
        field("lower_threshold", update.lower_threshold),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

fn persistence(seconds: Option<u32>) -> String {
    seconds.map_or_else(|| "none".to_owned(), |seconds| format!("{seconds}s"))
}

fn netmask(prefix: Option<u8>) -> String {
    prefix.map_or_else(|| "none".to_owned(), |prefix| format!("/{prefix}"))
}
