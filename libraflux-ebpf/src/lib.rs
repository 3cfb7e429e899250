//! Empty library target: lets `libraflux` name this crate as a build dependency so cargo rebuilds
//! the eBPF object when it changes. The programs live in `main.rs`.
#![no_std]
