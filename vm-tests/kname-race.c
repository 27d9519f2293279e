/* The attack on failed-open names (issue 16, point 6), run in a session by
 * vm-tests/run.sh: one thread opens the path in a buffer whose one byte
 * another thread keeps switching, so that the path names a file below a
 * regular file (/etc/hostname/f: ENOTDIR) or in a directory that does not
 * exist (/etc/hostnamX/f: ENOENT). The errno says which path the kernel
 * tried. The opens start once the other thread is switching, in rounds of
 * N a second apart (under the default disk rate limit) until both errnos
 * were seen, at most 10 rounds. Prints the count of each errno and the
 * total. Usage: kname-race N */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char buf[] = "/etc/hostname/f";
static atomic_int stop;
static atomic_int flips;

static void *flip(void *arg)
{
    (void)arg;
    /* One byte: a store no reader can see half done. */
    volatile char *c = &buf[12];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        *c = 'X';
        for (volatile int i = 0; i < 200; i++)
            ;
        *c = 'e';
        for (volatile int i = 0; i < 200; i++)
            ;
        atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 400;
    int enoent = 0, enotdir = 0, other = 0, total = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, flip, NULL) != 0)
        return 2;
    /* Without this the opens can all be over before the other thread
     * first runs (a race that never happened). */
    while (atomic_load_explicit(&flips, memory_order_relaxed) < 2)
        sched_yield();
    for (int round = 0; round < 10; round++) {
        if (round > 0)
            usleep(1100 * 1000);
        for (int i = 0; i < n; i++, total++) {
            int fd = open(buf, O_RDONLY);
            if (fd >= 0) {
                close(fd);
                other++;
            } else if (errno == ENOENT) {
                enoent++;
            } else if (errno == ENOTDIR) {
                enotdir++;
            } else {
                other++;
            }
        }
        if (enoent > 0 && enotdir > 0)
            break;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("RACE ENOENT=%d ENOTDIR=%d other=%d TOTAL=%d\n", enoent, enotdir, other, total);
    return 0;
}
