"""What a compiled GPU kernel costs, read from its PTX and cubin on a machine without a GPU.

The tools are the Triton wheel's own (`ptxas`, `cuobjdump`, `nvdisasm`): registers and spills as
ptxas reports them (and whether it serialized the kernel's wgmma), the SASS instructions, the
registers live at each of them, the loops (backward branches) and what a loop does (scalar global
loads, local-memory accesses, asynchronous copies), and the warps an SM keeps resident given the
registers and shared memory. `kernel_static.py` locates each HSTU kernel's loops with these and
turns them into per-logit costs.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

# One SASS instruction of `cuobjdump -sass`: its address, opcode with modifiers (after an optional
# predicate) and operands.
_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\s*([^;]*);")
# nvdisasm --print-life-ranges: an instruction's line ends in "// | <live registers> <one column per register>".
_LIVE_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/[^\n]*?;[ \t]*//[ \t]*\|[ \t]*(\d+)[ \t]")
# The .nv.info attribute holding a kernel's register count (EIATTR_REGCOUNT), and its value format (EIFMT_SVAL).
_EIATTR_REGCOUNT, _EIFMT_SVAL = 0x2F, 0x04
_REGISTERS = re.compile(r"Used (\d+) registers")
# ptxas (sm_90) serializing every wgmma of a kernel: each MMA waits for the one before it (C7515:
# an accumulator defined by another instruction inside a pipeline stage; C7512: too few registers).
_WGMMA_SERIALIZED = re.compile(r"\((C75\d\d)\)[^\n]*?wgmma[^\n]*?serialized due to ([^\n]*?) (?:in|for) the function")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


# The options Triton's own ptxas run adds (triton/backends/nvidia/compiler.py, `make_cubin`, 3.9,
# with FP fusion on, as `compile_kernel` pins it): line info, and the register-allocation level that
# works around a ptxas 13 bug. They change the allocation (dk/dv's 2-edge probe: 8 bytes of spill
# stores without them, 32 with), so `ptxas_usage` checks that its code is Triton's.
_TRITON_PTXAS_OPTIONS = ("-lineinfo", "--regAllocOptLevel=2")


def assemble(ptx: str, arch: int) -> tuple[bytes, str]:
    """(cubin, ptxas -v log) of `ptx`, assembled as Triton does: its ptxas for the architecture (the
    wheel ships two) with its options."""
    from triton.backends.nvidia.compiler import get_ptxas

    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "k.ptx", Path(tmp) / "k.o"
        src.write_text(ptx)
        done = subprocess.run([get_ptxas(arch).path, *_TRITON_PTXAS_OPTIONS, "-v", f"--gpu-name={gpu}", str(src), "-o",
                               str(out)], capture_output=True, text=True, check=True)
        return out.read_bytes(), done.stdout + done.stderr


def ptxas_usage(ptx: str, arch: int, triton_cubin: bytes | None = None) -> tuple[int, int, int, str | None]:
    """(registers, spill store bytes, spill load bytes, why ptxas serialized the kernel's wgmma or
    None) of the kernel in `ptx`, assembled as Triton does; with `triton_cubin`, an error unless the
    assembly has that cubin's SASS. (Not its bytes: with line info ptxas records each source
    file's size and modification time as it finds them on disk, so a Triton cache entry assembled
    before an edit outside the kernel, or a `touch`, differs in those bytes only.)

    Serialized (ptxas info C7515, C7512, ...), every wgmma waits for the previous one to finish:
    the tensor cores idle between the MMAs of a tile and nothing overlaps them. ptxas does it to
    the whole kernel for one offending spot, e.g. accumulator registers that an instruction other
    than a wgmma defines on a path into a wait (C7515: a zero-initialized accumulator reaching the
    wait after a loop that ran no iteration), or too few registers (C7512, under a register cap)."""
    cubin, log = assemble(ptx, arch)
    if triton_cubin is not None and cubin != triton_cubin and (
            not (ours := sass_instructions(cubin)) or ours != sass_instructions(triton_cubin)):
        raise RuntimeError(f"sm_{arch}: ptxas here did not assemble the code Triton did: update "
                           "_TRITON_PTXAS_OPTIONS to the options of Triton's make_cubin")
    regs = _REGISTERS.search(log)
    spills = _SPILLS.search(log)
    if regs is None or spills is None:
        raise RuntimeError(f"could not read ptxas -v output:\n{log}")
    serialized = _WGMMA_SERIALIZED.search(log)
    why = f"{serialized.group(1)}: {serialized.group(2)}" if serialized else None
    return int(regs.group(1)), int(spills.group(1)), int(spills.group(2)), why


def sass_instructions(cubin: bytes) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) of every SASS instruction."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([_tool("cuobjdump"), "-sass", str(path)], capture_output=True, text=True,
                              check=True).stdout
    return [(int(m.group(1), 16), m.group(2), m.group(3)) for m in _SASS_LINE.finditer(text)]


def _regcount_attributes(elf: bytes) -> Iterator[int]:
    """Offsets of the register-count values (EIATTR_REGCOUNT) in a cubin's .nv.info sections."""
    (section_headers,) = struct.unpack_from("<Q", elf, 0x28)
    header_size, num_sections, names_index = struct.unpack_from("<HHH", elf, 0x3A)
    (names,) = struct.unpack_from("<Q", elf, section_headers + names_index * header_size + 0x18)
    for i in range(num_sections):
        header = section_headers + i * header_size
        (name,) = struct.unpack_from("<I", elf, header)
        if not elf[names + name:].startswith(b".nv.info"):
            continue
        offset, size = struct.unpack_from("<QQ", elf, header + 0x18)
        at = offset
        while at < offset + size:  # attributes: a format byte, an attribute byte, a 2-byte field
            fmt, attr = elf[at], elf[at + 1]
            if fmt == _EIFMT_SVAL:  # the field is a length: (symbol index, value) for this attribute
                (length,) = struct.unpack_from("<H", elf, at + 2)
                if attr == _EIATTR_REGCOUNT:
                    yield at + 8
                at += 4 + length
            elif fmt in (1, 2, 3):  # EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL: the value (if any) is the field
                at += 4
            else:
                raise ValueError(f"unknown .nv.info attribute format {fmt} at byte {at}")
        if at != offset + size:
            raise ValueError(f".nv.info attributes overrun their section ({at} != {offset + size})")


def _regcount_below_255(cubin: bytes) -> bytes:
    """The cubin with its register count capped at 254: nvdisasm 13.1 refuses to print life ranges
    for 255 ("Invalid register count"), and the count does not change the code it reads."""
    elf = bytearray(cubin)
    for at in list(_regcount_attributes(bytes(elf))):
        struct.pack_into("<I", elf, at, min(struct.unpack_from("<I", elf, at)[0], 254))
    return bytes(elf)


def live_registers(cubin: bytes) -> dict[int, int] | None:
    """SASS address -> general-purpose registers live at that instruction (`nvdisasm
    --print-life-ranges`): where in the kernel its register count is needed. None where nvdisasm
    13.1 cannot trace the flow ("flow analysis is disabled": so far its sm_80 cubins)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(_regcount_below_255(cubin))
        done = subprocess.run([_tool("nvdisasm"), "--print-life-ranges", "-c", str(path)], capture_output=True,
                              text=True)
    if done.returncode != 0 and "flow analysis is disabled" in done.stderr:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm --print-life-ranges failed: {done.stderr}")
    live = {int(m.group(1), 16): int(m.group(2)) for m in _LIVE_LINE.finditer(done.stdout)}
    if not live:
        raise RuntimeError("nvdisasm printed no life ranges")
    return live


def loops(instructions: list[tuple[int, str, str]], within: tuple[int, int] | None = None
          ) -> list[tuple[int, int]]:
    """(start, end) addresses of the outermost loops (backward branches), in program order; with
    `within`, of the outermost loops nested strictly inside that one."""
    spans = []
    for addr, op, operands in instructions:
        if op.startswith("BRA") and (target := re.search(r"0x([0-9a-f]+)", operands)):
            start = int(target.group(1), 16)
            if start < addr:
                spans.append((start, addr))
    if within is not None:
        spans = [a for a in spans if a != within and within[0] <= a[0] and a[1] <= within[1]]
    outer = [a for a in spans if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in spans)]
    return sorted(set(outer))


def scalar_global_loads(loop: list[tuple[int, str, str]]) -> int:
    """Global loads of 4 bytes or less (LDG/LDGSTS without a .64/.128 width): one element each."""
    count = 0
    for _, op, _ in loop:
        if op.startswith(("LDG.", "LDGSTS.")) and not re.search(r"\.(64|128)\b", op):
            count += 1
    return count


def local_accesses(loop: list[tuple[int, str, str]]) -> int:
    """Local-memory loads and stores (register spills and their reloads) in `loop`."""
    return sum(op.startswith(("LDL", "STL")) for _, op, _ in loop)


def pipelined(loop: list[tuple[int, str, str]]) -> bool:
    """True when the loop issues asynchronous global->shared copies (LDGSTS on sm_80/90, TMA on
    sm_90): the software pipeliner staged its tile loads ahead of use."""
    return any(op.startswith(("LDGSTS", "UTMALDG", "UBLKCP")) for _, op, _ in loop)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SmLimits:
    """Per-SM resources that bound how many blocks (CTAs) of a kernel are resident at once (CUDA C++
    Programming Guide, technical specifications per compute capability)."""

    shared_bytes: int  # shared memory per SM
    registers: int = 65536  # 32-bit registers per SM
    register_unit: int = 256  # a warp's registers are allocated in units of this many
    warps: int = 64
    blocks: int = 32
    reserved_shared_bytes: int = 1024  # the system's share of shared memory per resident block


# sm_80: A100 (164 KB of shared memory per SM); sm_90: H100 and H200 (228 KB).
SM_LIMITS = {80: SmLimits(shared_bytes=164 * 1024), 90: SmLimits(shared_bytes=228 * 1024)}


def resident_warps(arch: int, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Warps of a kernel an SM holds at once: its blocks that fit by registers (per thread, allocated
    per warp in units), by shared memory (per block, plus the system's reserve) and by the warp and
    block limits, times the warps per block. More resident warps hide more latency; a kernel with
    one block per SM relies on its own software pipeline alone."""
    limits = SM_LIMITS[arch]
    unit = limits.register_unit
    per_warp = -(-registers * 32 // unit) * unit
    blocks = min(limits.registers // per_warp // num_warps,
                 limits.shared_bytes // (shared_bytes + limits.reserved_shared_bytes),
                 limits.warps // num_warps, limits.blocks)
    return blocks * num_warps


def registers_for_warps(arch: int, warps: int, shared_bytes: int, num_warps: int) -> int | None:
    """The most registers per thread at which a kernel with this shared memory and block size keeps
    `warps` resident, or None when its shared memory (or the warp limits) alone keep it below."""
    for registers in range(255, 0, -1):
        if resident_warps(arch, registers, shared_bytes, num_warps) >= warps:
            return registers
    return None
