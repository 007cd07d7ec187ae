/*
 * Hostile model: in its first doStep tries to change its own FMU as extracted on
 * disk (append to its shared library, create a file beside it), which would reach
 * every later run of the same file if the extraction were shared and writable.
 * Logs what happened; returns fmi2Error "tamper: modified ..." if a write went
 * through, fmi2OK when every write was refused.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <unistd.h>

#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

static void hostile_defaults(Model *m) { (void)m; }

/* Returns 1 when the write went through. */
static int try_write(Model *m, const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        model_log(m, fmi2OK, "logAll", "tamper: blocked %s: %s", path, strerror(errno));
        return 0;
    }
    ssize_t written = write(fd, "tampered", 8);
    close(fd);
    if (written != 8) {
        model_log(m, fmi2OK, "logAll", "tamper: blocked %s: short write", path);
        return 0;
    }
    model_log(m, fmi2Error, "logAll", "tamper: modified %s", path);
    return 1;
}

static fmi2Status hostile_action(Model *m) {
    Dl_info info;
    char library[1024];
    char beside[1100];
    if (!dladdr((void *)hostile_action, &info) || !info.dli_fname) {
        model_log(m, fmi2Error, "logAll", "tamper: cannot find my own library");
        return fmi2Error;
    }
    snprintf(library, sizeof(library), "%s", info.dli_fname);
    model_log(m, fmi2OK, "logAll", "tamper: my library is %s", library);
    int modified = try_write(m, library, O_WRONLY | O_APPEND);
    snprintf(beside, sizeof(beside), "%s/tampered.txt", dirname(library));
    modified += try_write(m, beside, O_WRONLY | O_CREAT | O_TRUNC);
    return modified ? fmi2Error : fmi2OK;
}
