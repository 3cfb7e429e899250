//! `cargo xtask demo`: LibraFlux's main job end to end, in the VM on Debian's stock kernel.

use anyhow::bail;

use crate::{
    util::{cargo, checked},
    vm::Vm,
};

/// The guest side of the demo; it narrates each step.
const SCRIPT: &str = include_str!("demo.sh");

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    checked(cargo().args(["build", "-p", "libraflux"]))?;
    let status = Vm::default().run(SCRIPT)?;
    if status != 0 {
        bail!("the demo failed in the VM (exit {status})");
    }
    Ok(())
}
