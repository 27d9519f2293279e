"""Opens PATH through the 32-bit syscall entry (`int $0x80`, ia32 open),
as any 64-bit process can without a compiler: the per-syscall tracepoints
never see such a call. Prints the result (fd or -errno)."""
import ctypes
import mmap
import struct
import sys

MAP_32BIT = 0x40  # x86-64: the ia32 entry takes 32-bit pointers
page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT,
                 prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
base = ctypes.addressof(ctypes.c_char.from_buffer(page))
path = sys.argv[1].encode() + b"\0"
page[256:256 + len(path)] = path
code = (b"\x53"                                   # push rbx
        + b"\xb8" + struct.pack("<I", 5)          # mov eax, 5 (ia32 open)
        + b"\xbb" + struct.pack("<I", base + 256)  # mov ebx, path
        + b"\x31\xc9\x31\xd2"                     # xor ecx, ecx; xor edx, edx
        + b"\xcd\x80"                             # int 0x80
        + b"\x5b\xc3")                            # pop rbx; ret
page[:len(code)] = code
print(ctypes.CFUNCTYPE(ctypes.c_int)(base)(), flush=True)
