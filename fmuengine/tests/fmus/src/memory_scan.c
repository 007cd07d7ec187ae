/*
 * Hostile model: in its first doStep looks through its own process memory for a
 * text, to find what the process that forked it left there (for example another
 * account's model description). The text arrives with every character shifted
 * up by one (string parameter "shifted_needle"), so that the only unshifted copy
 * made on purpose is the one decoded here, which the scan skips. Walks the
 * readable anonymous mappings of /proc/self/maps (heap, stack and what malloc
 * and Python mapped: where data a parent process left would be). Logs
 * "memory_scan: found" or "memory_scan: not found".
 */

#define N_INTEGERS 0
#define N_STRINGS 1

#include "hostile_base.c"

enum { SHIFTED_NEEDLE };

static void hostile_defaults(Model *m) { m->s[SHIFTED_NEEDLE][0] = '\0'; }

/* The address of the first copy of needle in [start, end) other than `own`, or 0. */
static unsigned long search(unsigned long start, unsigned long end, const char *needle,
                            size_t length) {
    for (unsigned long at = start; at + length <= end; at++) {
        const char *here = (const char *)at;
        if (here != needle && *here == needle[0] && memcmp(here, needle, length) == 0) return at;
    }
    return 0;
}

static fmi2Status hostile_action(Model *m) {
    size_t length = strlen(m->s[SHIFTED_NEEDLE]);
    char line[512];
    unsigned long found_at = 0;
    if (length == 0) return fmi2Error;
    char *needle = malloc(length + 1);
    if (!needle) return fmi2Error;
    for (size_t k = 0; k < length; k++) needle[k] = (char)(m->s[SHIFTED_NEEDLE][k] - 1);
    needle[length] = '\0';

    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) {
        model_log(m, fmi2Error, "logAll", "memory_scan: cannot read /proc/self/maps");
        return fmi2Error;
    }
    while (!found_at && fgets(line, sizeof(line), maps)) {
        unsigned long start, end, inode;
        char permissions[5];
        if (sscanf(line, "%lx-%lx %4s %*s %*s %lu", &start, &end, permissions, &inode) != 4) {
            continue;
        }
        if (permissions[0] != 'r' || inode != 0 || strstr(line, "[v")) continue;  /* vdso, vvar */
        found_at = search(start, end, needle, length);
    }
    fclose(maps);
    model_log(m, fmi2OK, "logAll", found_at ? "memory_scan: found" : "memory_scan: not found");
    free(needle);
    return fmi2OK;
}
