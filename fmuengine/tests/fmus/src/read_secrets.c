/*
 * Hostile model: in its first doStep tries to read /etc/passwd, the
 * environment of process "probe_pid" (integer parameter, default 1) and its own
 * environment (/proc/self/environ, getenv(<env_name>) with string parameter
 * "env_name", default SECRET_KEY, and every entry of environ), and lists "/".
 * Everything it reads goes to the FMU log. Returns fmi2Error "could not read
 * ..." when a read of another party's data was blocked, fmi2OK otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define N_INTEGERS 1
#define N_STRINGS 1

#include "hostile_base.c"

enum { PROBE_PID };
enum { ENV_NAME };

extern char **environ;

static void hostile_defaults(Model *m) {
    m->i[PROBE_PID] = 1;
    snprintf(m->s[ENV_NAME], STRING_CAPACITY, "SECRET_KEY");
}

/* Logs the file's first bytes (NULs shown as spaces); returns 0 when it could be read. */
static int log_file(Model *m, const char *path) {
    char content[1024];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        model_log(m, fmi2Warning, "logAll", "read_secrets: could not read %s: %s", path,
                  strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, content, sizeof(content) - 1);
    int saved_errno = errno;
    close(fd);
    if (n < 0) {
        model_log(m, fmi2Warning, "logAll", "read_secrets: could not read %s: %s", path,
                  strerror(saved_errno));
        return -1;
    }
    for (ssize_t k = 0; k < n; k++) {
        if (content[k] == '\0') content[k] = ' ';
    }
    content[n] = '\0';
    model_log(m, fmi2OK, "logAll", "read_secrets: read %s: %s", path, content);
    return 0;
}

static void log_root_listing(Model *m) {
    char listing[1024] = "";
    DIR *dir = opendir("/");
    if (!dir) {
        model_log(m, fmi2Warning, "logAll", "read_secrets: could not list /: %s", strerror(errno));
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strlen(listing) + strlen(entry->d_name) + 2 >= sizeof(listing)) break;
        strcat(listing, " ");
        strcat(listing, entry->d_name);
    }
    closedir(dir);
    model_log(m, fmi2OK, "logAll", "read_secrets: / contains:%s", listing);
}

static fmi2Status hostile_action(Model *m) {
    char blocked[512] = "";
    char probe_path[64];

    log_root_listing(m);
    if (log_file(m, "/etc/passwd") != 0) strcat(blocked, " /etc/passwd");
    snprintf(probe_path, sizeof(probe_path), "/proc/%d/environ", m->i[PROBE_PID]);
    if (log_file(m, probe_path) != 0) {
        strcat(blocked, " ");
        strcat(blocked, probe_path);
    }
    log_file(m, "/proc/self/environ");

    const char *value = getenv(m->s[ENV_NAME]);
    if (value) {
        model_log(m, fmi2OK, "logAll", "read_secrets: getenv(%s) = %s", m->s[ENV_NAME], value);
    } else {
        model_log(m, fmi2Warning, "logAll", "read_secrets: getenv(%s) is not set", m->s[ENV_NAME]);
        size_t used = strlen(blocked);
        snprintf(blocked + used, sizeof(blocked) - used, " $%.100s", m->s[ENV_NAME]);
    }
    int count = 0;
    for (char **entry = environ; entry && *entry; entry++, count++) {
        model_log(m, fmi2OK, "logAll", "read_secrets: environ: %s", *entry);
    }
    model_log(m, fmi2OK, "logAll", "read_secrets: environ has %d entries", count);

    if (blocked[0]) {
        model_log(m, fmi2Error, "logStatusError", "read_secrets: could not read:%s", blocked);
        return fmi2Error;
    }
    return fmi2OK;
}
