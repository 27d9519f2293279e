/* The attack on failed-open names (issue 16, point 6), run in a session by
 * vm-tests/run.sh: one thread opens the path in a buffer whose one byte
 * another thread keeps switching, so that the path names a file below a
 * regular file (/etc/hostname/f: ENOTDIR) or in a directory that does not
 * exist (/etc/hostnamX/f: ENOENT). The errno says which path the kernel
 * tried. Prints the count of each errno. Usage: kname-race N */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char buf[] = "/etc/hostname/f";
static atomic_int stop;

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
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 400;
    int enoent = 0, enotdir = 0, other = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, flip, NULL) != 0)
        return 2;
    for (int i = 0; i < n; i++) {
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
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("RACE ENOENT=%d ENOTDIR=%d other=%d\n", enoent, enotdir, other);
    return 0;
}
