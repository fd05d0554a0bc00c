//! The few raw `bpf(2)` calls aya does not expose: blob maps we create
//! ourselves, replacing a link's program, and batched map updates.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_UPDATE: libc::c_long = 29;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_LOAD: libc::c_long = 5;

/// `union bpf_attr`, as bytes: every command reads its fields at fixed offsets.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32_at(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-initialised bpf_attr of the size we pass.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// An array map whose elements are the `chunk`-byte pieces of `value`
/// (`value.len()` a multiple of `chunk`).
pub fn create_array_with(name: &str, chunk: usize, value: &[u8]) -> io::Result<OwnedFd> {
    debug_assert!(chunk > 0 && value.len().is_multiple_of(chunk));
    let elements = (value.len() / chunk).max(1) as u32;
    let fd = create_map(name, BPF_MAP_TYPE_ARRAY, (4, chunk as u32), elements, 0, None)?;
    for (i, piece) in value.chunks(chunk).enumerate() {
        let key = i as u32;
        let mut attr = Attr::new();
        attr.u32_at(0, fd.as_raw_fd() as u32)
            .u64_at(8, std::ptr::from_ref(&key) as u64)
            .u64_at(16, piece.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    }
    Ok(fd)
}

/// Writes `count` elements into the map `fd` with `BPF_MAP_UPDATE_BATCH`:
/// `keys` and `values` hold them back to back, `key_size` and `value_size`
/// bytes each. One system call for many elements: the kernel still inserts
/// them one by one (`generic_map_update_batch`), but skips a system call,
/// a descriptor lookup and a copy per element. Returns how many the kernel
/// wrote; on an error, those before the failing one are in the map.
pub fn update_batch(fd: BorrowedFd<'_>, keys: &[u8], values: &[u8], count: u32) -> (u32, io::Result<()>) {
    let mut attr = Attr::new();
    attr.u64_at(16, keys.as_ptr() as u64)
        .u64_at(24, values.as_ptr() as u64)
        .u32_at(32, count)
        .u32_at(36, fd.as_raw_fd() as u32);
    let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map(|_| ());
    let done = u32::from_ne_bytes([attr.0[32], attr.0[33], attr.0[34], attr.0[35]]);
    (done, result)
}

/// Writes one element (`BPF_ANY`).
pub fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    update_with(fd, key, value, 0)
}

/// `BPF_NOEXIST` for [`update_with`]: only if the key is not there.
pub const NOEXIST: u64 = 1;
/// `BPF_EXIST` for [`update_with`]: only if the key is there.
pub const EXIST: u64 = 2;

/// Writes one element with `flags` ([`NOEXIST`], [`EXIST`], 0 for any).
pub fn update_with(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u64_at(8, key.as_ptr() as u64)
        .u64_at(16, value.as_ptr() as u64)
        .u64_at(24, flags);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    Ok(())
}

/// Deletes `key` and returns the value it held at that instant, in one
/// step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, hash maps since Linux 5.14):
/// `None` when the key was not there.
pub fn lookup_and_delete(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32).u64_at(8, key.as_ptr() as u64).u64_at(16, value.as_mut_ptr() as u64);
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every `(key, value)` of the hash map `fd`, `key_size` and `value_size`
/// bytes each, back to back, with `BPF_MAP_LOOKUP_BATCH`: a few system
/// calls for millions of entries, where one lookup and one next-key call
/// per entry would take seconds. Entries added or removed meanwhile may be
/// seen or not.
pub fn read_all(fd: BorrowedFd<'_>, key_size: usize, value_size: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut chunk: u32 = 4096;
    // The kernel's cursor for a hash map: a bucket index.
    let (mut in_batch, mut out_batch) = (0_u32, 0_u32);
    let mut first = true;
    loop {
        let start = keys.len();
        keys.resize(start + chunk as usize * key_size, 0);
        values.resize(values.len() + chunk as usize * value_size, 0);
        let mut attr = Attr::new();
        attr.u64_at(0, if first { 0 } else { std::ptr::from_ref(&in_batch) as u64 })
            .u64_at(8, std::ptr::from_mut(&mut out_batch) as u64)
            .u64_at(16, keys[start..].as_mut_ptr() as u64)
            .u64_at(24, values[start / key_size * value_size..].as_mut_ptr() as u64)
            .u32_at(32, chunk)
            .u32_at(36, fd.as_raw_fd() as u32);
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = u32::from_ne_bytes([attr.0[32], attr.0[33], attr.0[34], attr.0[35]]) as usize;
        let kept = match &result {
            Ok(_) => got,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => got,
            // One bucket holds more entries than a chunk: ask for more at once.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => 0,
            Err(_) => 0,
        };
        keys.truncate(start + kept * key_size);
        values.truncate(keys.len() / key_size * value_size);
        match result {
            Ok(_) => {
                in_batch = out_batch;
                first = false;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((keys, values)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && kept == 0 => chunk = chunk.saturating_mul(2),
            Err(e) => return Err(e),
        }
    }
}

/// Every element of an array map, concatenated.
pub fn read_array(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let (value_size, elements) = map_sizes(fd)?;
    let mut out = vec![0u8; value_size as usize * elements as usize];
    for (i, piece) in out.chunks_mut(value_size as usize).enumerate() {
        let key = i as u32;
        let mut attr = Attr::new();
        attr.u32_at(0, fd.as_raw_fd() as u32)
            .u64_at(8, std::ptr::from_ref(&key) as u64)
            .u64_at(16, piece.as_mut_ptr() as u64);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
    }
    Ok(out)
}

/// Makes the link run `prog` instead of its program, atomically (tcx and
/// XDP links): no packet meets neither program.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, link.as_raw_fd() as u32).u32_at(4, prog.as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut attr)?;
    Ok(())
}

fn obj_info(fd: &OwnedFd, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32).u32_at(4, info.len() as u32).u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(())
}

/// Deletes element `key` of an array-like map keyed by `u32` (for a
/// map-in-map array: empties the slot).
pub fn map_delete_u32(fd: &OwnedFd, key: u32) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32).u64_at(8, std::ptr::from_ref(&key) as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr)?;
    Ok(())
}

/// What the kernel says of a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkInfo {
    /// `BPF_LINK_TYPE_*`.
    pub link_type: u32,
    pub prog_id: u32,
    /// The device of an XDP or tcx link; 0 once the device is gone.
    pub ifindex: u32,
}

pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

pub fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose
    // xdp and tcx members both start with the ifindex.
    let mut info = [0u8; 64];
    obj_info(fd, &mut info)?;
    let word = |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    Ok(LinkInfo { link_type: word(0), prog_id: word(8), ifindex: word(16) })
}

/// The ids of the maps program `prog_id` uses (empty if it is gone).
pub fn prog_map_ids(prog_id: u32) -> io::Result<Vec<u32>> {
    let mut attr = Attr::new();
    attr.u32_at(0, prog_id);
    let fd = owned(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?);
    // struct bpf_prog_info: nr_map_ids (u32) at 52, map_ids (u64 pointer) at 56.
    let mut info = [0u8; 232];
    obj_info(&fd, &mut info)?;
    let count = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]);
    let mut ids = vec![0u32; count as usize];
    let mut info = [0u8; 232];
    info[52..56].copy_from_slice(&count.to_ne_bytes());
    info[56..64].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    obj_info(&fd, &mut info)?;
    let written = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]).min(count);
    ids.truncate(written as usize);
    Ok(ids)
}

/// The id of the map pinned at `path`.
pub fn map_id(path: &Path) -> io::Result<u32> {
    let fd = obj_get(path)?;
    let mut info = [0u8; 80];
    obj_info(&fd, &mut info)?;
    // struct bpf_map_info: type, id, ...
    Ok(u32::from_ne_bytes([info[4], info[5], info[6], info[7]]))
}
/// A new map without BTF: `inner`, for a map of maps, is the template
/// its inner maps must match. Kernels 5.15-6.1 also compare whether the
/// template and an inner map carry BTF (their `timer_off`): every map that
/// goes into a map-in-map slot, and every template, is made without it.
pub fn create_map(
    name: &str,
    map_type: u32,
    (key_size, value_size): (u32, u32),
    max_entries: u32,
    flags: u32,
    inner: Option<BorrowedFd<'_>>,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, map_type).u32_at(4, key_size).u32_at(8, value_size).u32_at(12, max_entries).u32_at(16, flags);
    if let Some(inner) = inner {
        attr.u32_at(20, inner.as_raw_fd() as u32);
    }
    let name = name.as_bytes();
    let n = name.len().min(15);
    attr.0[28..28 + n].copy_from_slice(&name[..n]);
    Ok(owned(bpf(BPF_MAP_CREATE, &mut attr)?))
}

pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Returns after one RCU grace period: every eBPF program that was running
/// when this was called has finished. The kernel waits for one after an
/// update of a map-in-map from userspace (so that no program still sees the
/// old inner map); a throwaway one is updated here for that wait.
pub fn rcu_barrier() -> io::Result<()> {
    use std::os::fd::AsFd as _;
    let inner = create_map("sg_rcu_inner", BPF_MAP_TYPE_ARRAY, (4, 4), 1, 0, None)?;
    let outer = create_map("sg_rcu", BPF_MAP_TYPE_ARRAY_OF_MAPS, (4, 4), 1, 0, Some(inner.as_fd()))?;
    let key = 0u32;
    let value = inner.as_raw_fd() as u32;
    let mut attr = Attr::new();
    attr.u32_at(0, outer.as_raw_fd() as u32)
        .u64_at(8, std::ptr::from_ref(&key) as u64)
        .u64_at(16, std::ptr::from_ref(&value) as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    Ok(())
}

/// The id of the program open as `fd` (`bpf_prog_info.id`).
pub fn prog_info_id(fd: &OwnedFd) -> io::Result<u32> {
    // struct bpf_prog_info: type, id, ...
    let mut info = [0u8; 64];
    obj_info(fd, &mut info)?;
    Ok(u32::from_ne_bytes([info[4], info[5], info[6], info[7]]))
}

/// `(value_size, max_entries)` of a map.
fn map_sizes(fd: &OwnedFd) -> io::Result<(u32, u32)> {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries, ...
    let mut info = [0u8; 80];
    obj_info(fd, &mut info)?;
    let word = |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    Ok((word(12), word(16)))
}

/// How many programs are attached to `ifindex` at `attach_type`
/// (`BPF_PROG_QUERY`; tcx answers for a device, older kernels refuse its
/// attach types with EINVAL).
pub fn prog_query_count(ifindex: u32, attach_type: u32) -> io::Result<u32> {
    let mut attr = Attr::new();
    attr.u32_at(0, ifindex).u32_at(4, attach_type);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(u32::from_ne_bytes([attr.0[24], attr.0[25], attr.0[26], attr.0[27]]))
}

/// Loads a tc classifier that lets every packet go on (`TC_ACT_UNSPEC`):
/// what `sgctl doctor` attaches to probe a hook.
pub fn load_pass_classifier() -> io::Result<OwnedFd> {
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    // r0 = -1; exit
    let insns: [u64; 2] = [0xffff_ffff_0000_00b7_u64.to_le(), 0x95_u64.to_le()];
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_PROG_TYPE_SCHED_CLS)
        .u32_at(4, 2)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64);
    Ok(owned(bpf(BPF_PROG_LOAD, &mut attr)?))
}

/// `BPF_TCX_INGRESS`.
pub const BPF_TCX_INGRESS: u32 = 46;

pub fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = Attr::new();
    attr.u64_at(0, path.as_ptr() as u64).u32_at(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr)?;
    Ok(())
}

pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = Attr::new();
    attr.u64_at(0, path.as_ptr() as u64);
    Ok(owned(bpf(BPF_OBJ_GET, &mut attr)?))
}
