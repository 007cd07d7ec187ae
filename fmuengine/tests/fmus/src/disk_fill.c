/*
 * Hostile model: in its first doStep tries to write more than its run's disk quota.
 * Integer parameter "how":
 *   1  many files in its cwd, each 15 MB (just under a 16 MB file size limit), up to
 *      4 GB;
 *   2  a directory tree, one level inside the last, up to 200,000 levels deep (chdir
 *      into each new level, so no path gets long).
 * Returns fmi2Error when a write or mkdir fails (a quota held), fmi2OK otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_INTEGERS 1
#define N_STRINGS 0

#include "hostile_base.c"

enum { HOW };

static void hostile_defaults(Model *m) { m->i[HOW] = 1; }

static fmi2Status many_files(Model *m) {
    static char buffer[1 << 20];
    memset(buffer, 0x5A, sizeof(buffer));
    for (int k = 0; k < 4096 / 15; k++) {
        char name[64];
        snprintf(name, sizeof(name), "fill-%d.bin", k);
        int fd = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0600);
        if (fd < 0) goto failed;
        for (int mb = 0; mb < 15; mb++) {
            if (write(fd, buffer, sizeof(buffer)) != (ssize_t)sizeof(buffer)) {
                close(fd);
                goto failed;
            }
        }
        close(fd);
        continue;
    failed:
        model_log(m, fmi2Error, "logStatusError", "disk_fill: stopped after %d files: %s", k,
                  strerror(errno));
        return fmi2Error;
    }
    model_log(m, fmi2OK, "logAll", "disk_fill: wrote 4 GB");
    return fmi2OK;
}

static fmi2Status deep_tree(Model *m) {
    int level;
    for (level = 0; level < 200000; level++) {
        if (mkdir("d", 0700) != 0 || chdir("d") != 0) {
            model_log(m, fmi2Error, "logStatusError", "disk_fill: tree stopped at level %d: %s",
                      level, strerror(errno));
            return fmi2Error;
        }
    }
    model_log(m, fmi2OK, "logAll", "disk_fill: tree of %d levels", level);
    return fmi2OK;
}

static fmi2Status hostile_action(Model *m) {
    model_log(m, fmi2OK, "logAll", "disk_fill: how=%d", m->i[HOW]);
    return m->i[HOW] == 2 ? deep_tree(m) : many_files(m);
}
