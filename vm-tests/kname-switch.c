/* Failed opens and the kernel's copy of their path (issue 16, point 6), the
 * cases a copy kept per CPU must not get wrong, run in a session by
 * vm-tests/run.sh. Usage: kname-switch DIR (a directory of the user's).
 *
 * 1. A copy left on a CPU by an open that ended on another must not name a
 *    later open of the same thread there. The thread, pinned to CPU 0,
 *    blocks in open(DIR/fifo) (its copy is made on CPU 0), is moved to
 *    CPU 1 and interrupted there (EINTR), comes back to CPU 0 and makes an
 *    open that fails before the kernel copies its path (O_TMPFILE without
 *    write access: EINVAL). That open is named DIR/einval, never fifo.
 * 2. A failed open through the 32-bit syscall entry (int $0x80) of
 *    DIR/missing32 (ENOENT) is named by the kernel's copy as a 64-bit one.
 *
 * Prints "SWITCH EINTR=<errno> EINVAL=<errno> IA32=<ret>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t tid;
static pthread_t main_thread;

static void on_signal(int sig)
{
    (void)sig;
}

static int pin(pid_t who, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(who, sizeof(set), &set);
}

static void *mover(void *arg)
{
    (void)arg;
    /* Time for the open to block in the FIFO's wait (it has no writer). */
    usleep(300 * 1000);
    if (pin(tid, 1) != 0)
        perror("sched_setaffinity 1");
    usleep(100 * 1000);
    pthread_kill(main_thread, SIGUSR1);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    char fifo[4096], einval[4096];
    snprintf(fifo, sizeof(fifo), "%s/fifo", argv[1]);
    snprintf(einval, sizeof(einval), "%s/einval", argv[1]);
    tid = (pid_t)syscall(SYS_gettid);
    main_thread = pthread_self();
    if (pin(0, 0) != 0) {
        perror("sched_setaffinity 0");
        return 2;
    }
    if (mkfifo(fifo, 0600) != 0) {
        perror("mkfifo");
        return 2;
    }
    /* No SA_RESTART: the blocked open returns EINTR. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, mover, NULL) != 0)
        return 2;
    int fd = open(fifo, O_RDONLY);
    int eintr = fd < 0 ? errno : 0;
    pthread_join(t, NULL);
    if (pin(0, 0) != 0) {
        perror("sched_setaffinity 0 again");
        return 2;
    }
    fd = open(einval, O_TMPFILE | O_RDONLY);
    int einval_errno = fd < 0 ? errno : 0;

    /* The ia32 entry takes 32-bit pointers: the path in a low page. */
    char *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                     -1, 0);
    if (low == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    snprintf(low, 4096, "%s/missing32", argv[1]);
    long ret;
    /* ia32 open(path, O_RDONLY); ebx is callee-saved, so swapped in. */
    __asm__ volatile("xchg %%rdi, %%rbx\n\tint $0x80\n\txchg %%rdi, %%rbx"
                     : "=a"(ret)
                     : "a"(5L), "D"((long)(unsigned long)low), "c"(0L), "d"(0L)
                     : "memory", "r8", "r9", "r10", "r11");
    printf("SWITCH EINTR=%d EINVAL=%d IA32=%ld\n", eintr, einval_errno, ret);
    return 0;
}
