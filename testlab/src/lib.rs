//! Throwaway network namespaces joined by veth, for end-to-end tests and the demo;
//! and a real etcd on loopback ([`etcd`]) for the fleet's.
//!
//! A [`Lab`] is one private L2 segment: a "switch" namespace holding a bridge,
//! and one namespace per [`LabHost`], each with an `eth0` (a veth whose peer is a
//! bridge port). Every lab's namespaces carry a prefix unique to the process,
//! the lab and a random tag, so parallel tests and concurrent runs never
//! collide; dropping the lab deletes them, also when a test panics. Namespaces
//! left by a killed run (their owner's pid is gone) are removed by the next
//! `Lab::new`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use testlab::{Lab, Outcome};
//!
//! let lab = Lab::new("web")?;
//! let srv = lab.host("srv", &["10.0.0.2/24", "fd00::2/64"])?;
//! let cli = lab.host("cli", &["10.0.0.3/24", "fd00::3/64"])?;
//! let _echo = srv.tcp_listen("10.0.0.2:80".parse()?)?;
//! let t = Duration::from_secs(1);
//! assert_eq!(cli.tcp_connect("10.0.0.2:80".parse()?, t), Outcome::Connected);
//! assert_eq!(cli.tcp_connect("10.0.0.2:81".parse()?, t), Outcome::Refused);
//! # Ok(()) }
//! ```
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2;
//! without them [`Lab::new`] fails with a message saying so.
mod bpffs;
pub mod etcd;
mod lab;
mod netns;
mod raw;
mod sockets;
mod tun;

pub use lab::{Lab, LabHost};
pub use raw::inet_checksum;
pub use sockets::{Listener, Outcome};
pub use tun::TunLink;
