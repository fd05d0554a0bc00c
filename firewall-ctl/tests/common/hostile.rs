//! What a local unprivileged user, or another tool with root, does to
//! sgctl's edges in the tests: run code as uid 65534, detach a link
//! behind sgctl's back.
use std::{os::fd::AsRawFd as _, path::Path};

/// The uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Runs `f` on a thread of its own whose credentials are uid and gid 65534
/// (`setresgid`/`setresuid` as raw system calls change the calling thread
/// only): what it creates (sockets, files) is nobody's, and it has no
/// privilege. The test's other threads stay root.
pub fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's credentials.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()), 0, "setgroups");
            assert_eq!(libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY), 0, "setresgid");
            assert_eq!(libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY), 0, "setresuid");
        }
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Raises this process's soft descriptor limit to its hard one (a test
/// that holds many connections), which must allow 4096.
pub fn raise_descriptor_limit() {
    let hard = hard_descriptor_limit();
    assert!(hard >= 4096, "the hard descriptor limit ({hard}) is too low to hold the test's connections");
    let limit = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
}

/// This process's hard descriptor limit.
pub fn hard_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max
}

/// `BPF_LINK_DETACH` of the link pinned at `pin`: the link stays (pinned,
/// with its program) but no longer holds its device, as another tool with
/// CAP_NET_ADMIN can do.
pub fn link_detach(pin: &Path) {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).expect("path");
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: bpf(2) with a zeroed attr naming a valid path.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 128) };
    assert!(fd >= 0, "BPF_OBJ_GET {}: {}", pin.display(), std::io::Error::last_os_error());
    // SAFETY: the kernel just gave us this descriptor.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u64;
    // SAFETY: bpf(2) with link_fd as the first field.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_mut_ptr(), 128) };
    assert_eq!(ret, 0, "BPF_LINK_DETACH {}: {}", pin.display(), std::io::Error::last_os_error());
}

use std::os::fd::FromRawFd as _;
