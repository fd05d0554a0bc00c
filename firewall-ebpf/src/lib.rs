//! Empty on purpose: the programs are the `firewall` binary (src/main.rs).
//! This library target lets `firewall-ctl` list the crate as a
//! build-dependency, so cargo rebuilds the embedded object when it changes.
#![no_std]
