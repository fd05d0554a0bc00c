#!/usr/bin/env python3
"""Where a loaded BPF program spends its cycles, by source line.

Debian's perf and bpftool are built without libbfd/libopcodes, so neither
can annotate a JIT-compiled BPF program. This reads what they would need
straight from the kernel: the program's JIT image and its line info
(`BPF_OBJ_GET_INFO_BY_FD`), and the source lines from its BTF; then it
folds `perf script` samples onto them.

    # a program loaded by sgctl (e.g. `sgctl attach -n NS eth0 --groups G
    # --mode xdp`), run in a loop while perf samples it:
    perf record -o perf.data -e cycles -c 20000 -- \
        bpftool prog run id ID data_in FRAME repeat 20000000
    bench/tools/bpf-profile-lines.py ID perf.data

It prints the kernel symbols' shares of all samples (helpers, map code),
then the program's samples by source line, and writes the program's JIT
image to jit.bin (`objdump -D -b binary -m i386:x86-64 jit.bin` shows the
instructions; offsets are the `+0x...` perf reports). Samples land a few
instructions after the slow one (skid): a line just after a helper call
carries that call's return.
"""
import bisect
import collections
import ctypes
import os
import struct
import subprocess
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_BTF_GET_FD_BY_ID = 13, 15, 19
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    """The bpf(2) system call; its result (an fd, or 0)."""
    buf = ctypes.create_string_buffer(attr, 128)
    result = libc.syscall(SYS_BPF, cmd, buf, 128)
    if result < 0:
        raise OSError(ctypes.get_errno(), f"bpf command {cmd}")
    return result


def fd_of(cmd, object_id):
    return bpf(cmd, struct.pack("I", object_id))


def info(fd, request):
    out = ctypes.create_string_buffer(bytes(request), len(request))
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, len(request), ctypes.addressof(out)))
    return out.raw


def program_lines(prog_id):
    """(JIT image of the main program, [(offset, 'file:line source')])."""
    fd = fd_of(BPF_PROG_GET_FD_BY_ID, prog_id)
    # struct bpf_prog_info offsets (include/uapi/linux/bpf.h).
    first = info(fd, bytearray(232))
    jited_len, = struct.unpack_from("I", first, 16)
    n_ksyms, n_lens = struct.unpack_from("II", first, 104)
    btf_id, = struct.unpack_from("I", first, 128)
    n_lines, = struct.unpack_from("I", first, 148)
    n_jited_lines, line_size, jited_line_size = struct.unpack_from("III", first, 168)
    image = ctypes.create_string_buffer(jited_len)
    ksyms = (ctypes.c_uint64 * n_ksyms)()
    lens = (ctypes.c_uint32 * n_lens)()
    lines = ctypes.create_string_buffer(n_lines * line_size)
    jited_lines = (ctypes.c_uint64 * n_jited_lines)()
    req = bytearray(232)
    struct.pack_into("I", req, 16, jited_len)
    struct.pack_into("Q", req, 24, ctypes.addressof(image))
    struct.pack_into("IIQQ", req, 104, n_ksyms, n_lens, ctypes.addressof(ksyms), ctypes.addressof(lens))
    struct.pack_into("I", req, 148, n_lines)
    struct.pack_into("QQ", req, 152, ctypes.addressof(lines), ctypes.addressof(jited_lines))
    struct.pack_into("III", req, 168, n_jited_lines, line_size, jited_line_size)
    info(fd, req)

    btf_fd = fd_of(BPF_BTF_GET_FD_BY_ID, btf_id)
    btf_size, = struct.unpack_from("I", info(btf_fd, bytearray(32)), 8)
    btf = ctypes.create_string_buffer(btf_size)
    req = bytearray(32)
    struct.pack_into("QI", req, 0, ctypes.addressof(btf), btf_size)
    info(btf_fd, req)
    raw = btf.raw
    hdr_len, = struct.unpack_from("I", raw, 4)
    str_off, str_len = struct.unpack_from("II", raw, 16)
    strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]

    def string(off):
        return strings[off : strings.index(b"\0", off)].decode(errors="replace")

    base = ksyms[0]
    out = []
    for i in range(n_lines):
        _insn, file_off, line_off, line_col = struct.unpack_from("IIII", lines.raw, i * line_size)
        offset = jited_lines[i] - base
        if 0 <= offset < lens[0]:  # the main program; subprograms are symbols of their own
            out.append((offset, f"{os.path.basename(string(file_off))}:{line_col >> 10} {string(line_off).strip()}"))
    return image.raw[: lens[0]], sorted(out)


def samples(perf_data):
    script = subprocess.run(
        ["perf", "script", "-i", perf_data, "-F", "sym,symoff"], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in script.splitlines() if line.strip()]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    prog_id, perf_data = int(sys.argv[1]), sys.argv[2]
    image, lines = program_lines(prog_id)
    with open("jit.bin", "wb") as f:
        f.write(image)
    offsets = [offset for offset, _ in lines]
    by_symbol, by_line = collections.Counter(), collections.Counter()
    for sample in samples(perf_data):
        symbol, _, off = sample.partition("+")
        by_symbol[symbol] += 1
        if symbol.endswith("_" + program_name(prog_id)) and off:
            i = bisect.bisect_right(offsets, int(off, 16)) - 1
            by_line[lines[i][1] if i >= 0 else "?"] += 1
    total = sum(by_symbol.values())
    print("share of all samples, by symbol:")
    for symbol, n in by_symbol.most_common(15):
        print(f"  {100 * n / total:5.1f}%  {symbol}")
    in_program = sum(by_line.values()) or 1
    print("the program's samples, by source line:")
    for line, n in by_line.most_common(30):
        print(f"  {100 * n / in_program:5.1f}%  {line[:110]}")


def program_name(prog_id):
    shown = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True, text=True).stdout
    return shown.split("name", 1)[1].split()[0] if "name" in shown else ""


if __name__ == "__main__":
    main()
