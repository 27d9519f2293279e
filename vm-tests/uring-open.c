/* Opens files through io_uring (IORING_OP_OPENAT), which makes no open(2)
 * call, for vm-tests/run.sh (the guest's python has no ctypes; the host
 * tests use tests/escape.py uring-open). Usage: uring-open SPEC...
 * SPEC: "/path", or "sqpoll:/path" to have a SQPOLL ring's kernel thread
 * submit it. Prints "SPEC=FD" or "SPEC=errno N" per SPEC. */
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int uring_open(const char *path, int sqpoll)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    if (sqpoll) {
        p.flags = IORING_SETUP_SQPOLL;
        p.sq_thread_idle = 1000;
    }
    int ring = syscall(__NR_io_uring_setup, 4, &p);
    if (ring < 0)
        return -errno;
    char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
                    MAP_SHARED, ring, IORING_OFF_SQ_RING);
    char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
                    PROT_READ | PROT_WRITE, MAP_SHARED, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe),
                                     PROT_READ | PROT_WRITE, MAP_SHARED, ring, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
        return -errno;
    memset(&sqes[0], 0, sizeof sqes[0]);
    sqes[0].opcode = IORING_OP_OPENAT;
    sqes[0].fd = AT_FDCWD;
    sqes[0].addr = (unsigned long)path;
    sqes[0].open_flags = O_RDONLY;
    unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
    unsigned mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    ((unsigned *)(sq + p.sq_off.array))[*tail & mask] = 0;
    __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
    unsigned flags = IORING_ENTER_GETEVENTS | (sqpoll ? IORING_ENTER_SQ_WAKEUP : 0);
    if (syscall(__NR_io_uring_enter, ring, 1, 1, flags, NULL, 0) < 0)
        return -errno;
    unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
    unsigned cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return cqes[head & cmask].res;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int sqpoll = strncmp(argv[i], "sqpoll:", 7) == 0;
        int r = uring_open(argv[i] + (sqpoll ? 7 : 0), sqpoll);
        if (r >= 0)
            printf("%s=%d\n", argv[i], r);
        else
            printf("%s=errno %d\n", argv[i], -r);
    }
    return 0;
}
