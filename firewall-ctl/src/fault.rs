//! How a failure ends `sgctl` (docs/cli.md): exit status 2 when the input
//! is at fault (a policy, a name, a flag value: nothing in the kernel has
//! changed), 1 for the rest (the system: the kernel, the filesystem).
//!
//! Each error type of the library says which it is through [`Fault`];
//! `main` asks the errors in an error's chain, outermost first.
use crate::{
    compile::{image::ImageError, CompileError},
    datapath::memory::OverLimit,
    export::ExportError,
    import::aws::ImportError,
    model::PacketError,
    policy::PolicyError,
    InputError,
};

/// `sgctl`'s exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Done = 0,
    /// A runtime failure.
    Failure = 1,
    /// Invalid input or usage.
    Invalid = 2,
}

/// An error that knows whose fault it is.
pub trait Fault: std::error::Error {
    /// The exit status it ends `sgctl` with.
    fn exit(&self) -> Exit {
        Exit::Invalid
    }

    /// Whether its message starts with where the input is wrong
    /// (`FILE:LINE:COL` or `FILE: JSON-PATH`), printed as compilers print
    /// them, without the `sgctl: ` prefix.
    fn located(&self) -> bool {
        false
    }
}

impl Fault for InputError {}
impl Fault for CompileError {}
impl Fault for ExportError {}
impl Fault for ImageError {}
impl Fault for PacketError {}
impl Fault for OverLimit {}

impl Fault for PolicyError {
    fn located(&self) -> bool {
        true
    }
}

impl Fault for ImportError {
    fn located(&self) -> bool {
        true
    }
}

/// `e` as a [`Fault`], if it is one of the library's typed errors: the one
/// list of them.
fn fault_of<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn Fault> {
    macro_rules! first_of {
        ($($t:ty),*) => {
            $(if let Some(f) = e.downcast_ref::<$t>() { return Some(f); })*
        };
    }
    first_of!(InputError, PolicyError, ImportError, ExportError, CompileError, ImageError, PacketError, OverLimit);
    None
}

/// How `sgctl` ends after `e`: the status of the outermost typed error in
/// its chain (context added on the way up keeps it), else a failure.
pub fn exit_status(e: &anyhow::Error) -> Exit {
    e.chain().find_map(fault_of).map_or(Exit::Failure, |f| f.exit())
}

/// Whether `e`'s message starts with the place in the input (see [`Fault::located`]).
pub fn is_located(e: &anyhow::Error) -> bool {
    e.chain().filter_map(fault_of).any(|f| f.located())
}
