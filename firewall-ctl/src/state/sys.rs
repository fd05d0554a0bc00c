//! The few raw `bpf(2)` calls aya does not expose for objects we create
//! ourselves: blob maps and link info.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

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

/// A one-element array map holding `value` (value size = its length).
pub fn create_array_with(name: &str, value: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_MAP_TYPE_ARRAY).u32_at(4, 4).u32_at(8, value.len() as u32).u32_at(12, 1);
    let name = name.as_bytes();
    let n = name.len().min(15);
    attr.0[28..28 + n].copy_from_slice(&name[..n]);
    let fd = owned(bpf(BPF_MAP_CREATE, &mut attr)?);
    let key = 0u32;
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32).u64_at(8, std::ptr::from_ref(&key) as u64).u64_at(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    Ok(fd)
}

/// The value of element 0 of an array map.
pub fn read_array(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let value_size = map_value_size(fd)?;
    let mut value = vec![0u8; value_size as usize];
    let key = 0u32;
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u64_at(8, std::ptr::from_ref(&key) as u64)
        .u64_at(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
    Ok(value)
}

fn obj_info(fd: &OwnedFd, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32).u32_at(4, info.len() as u32).u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(())
}

fn map_value_size(fd: &OwnedFd) -> io::Result<u32> {
    // struct bpf_map_info: type, id, key_size, value_size, ...
    let mut info = [0u8; 80];
    obj_info(fd, &mut info)?;
    Ok(u32::from_ne_bytes([info[12], info[13], info[14], info[15]]))
}

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
