/*
 * Hostile model: in its first doStep tries to hold more memory than its run may, in
 * a way RLIMIT_AS does not count. Integer parameter "how":
 *   1  memfd: memfd_create files, 64 MB each, written until 4 GB; where memfd_create is
 *      refused (seccomp) the same with unnamed tmpfs files (open("/tmp", O_TMPFILE)),
 *      which is what a memfd is;
 *   2  tmpfs: named files in /tmp, 64 MB each, until 4 GB;
 *   3  children: forks 6 children that each allocate and touch 100 MB (each under its
 *      own RLIMIT_AS, together over the run's cap), then waits.
 * Logs what it does; returns fmi2Error when a write or fork fails, fmi2OK when it got
 * everything (the caps did not hold).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_INTEGERS 1
#define N_STRINGS 0

#include "hostile_base.c"

enum { HOW };
#define CHUNK ((size_t)64 << 20)
#define TARGET ((size_t)4 << 30)

static void hostile_defaults(Model *m) { m->i[HOW] = 1; }

static int fill_fd(int fd, char *buffer) {
    for (size_t written = 0; written < CHUNK;) {
        ssize_t n = write(fd, buffer, 1 << 20);
        if (n <= 0) return -1;
        written += (size_t)n;
    }
    return 0;
}

static int open_anonymous(Model *m, int k) {
    int fd = (int)syscall(SYS_memfd_create, "fill", 0);
    if (fd >= 0) return fd;
    if (k == 0) model_log(m, fmi2OK, "logAll", "memory_fill: memfd_create: %s", strerror(errno));
    return open("/tmp", O_TMPFILE | O_RDWR, 0600);
}

static fmi2Status fill_files(Model *m, int named) {
    static char buffer[1 << 20];
    memset(buffer, 0xAB, sizeof(buffer));
    for (int k = 0; (size_t)k * CHUNK < TARGET; k++) {
        int fd;
        if (named) {
            char name[64];
            snprintf(name, sizeof(name), "/tmp/fill-%d", k);
            fd = open(name, O_CREAT | O_WRONLY, 0600);
        } else {
            fd = open_anonymous(m, k);
        }
        if (fd < 0 || fill_fd(fd, buffer) != 0) {
            model_log(m, fmi2Error, "logStatusError", "memory_fill: stopped after %d MB: %s",
                      k * 64, strerror(errno));
            return fmi2Error;
        }
        /* kept open (and, for named files, on the tmpfs): the memory stays used */
    }
    model_log(m, fmi2OK, "logAll", "memory_fill: holds 4096 MB in files");
    return fmi2OK;
}

static fmi2Status fill_children(Model *m) {
    int started = 0;
    for (int k = 0; k < 6; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            size_t size = (size_t)100 << 20;
            volatile char *block = malloc(size);
            if (!block) _exit(2);
            for (size_t at = 0; at < size; at += 4096) block[at] = (char)at;
            sleep(30);
            _exit(0);
        }
        if (pid > 0) started++;
    }
    model_log(m, fmi2OK, "logAll", "memory_fill: %d children allocate 100 MB each", started);
    int failed = 0, status;
    while (wait(&status) > 0) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    }
    if (failed) return fmi2Error;
    model_log(m, fmi2OK, "logAll", "memory_fill: children held 600 MB");
    return fmi2OK;
}

static fmi2Status hostile_action(Model *m) {
    model_log(m, fmi2OK, "logAll", "memory_fill: how=%d", m->i[HOW]);
    if (m->i[HOW] == 3) return fill_children(m);
    return fill_files(m, m->i[HOW] == 2);
}
