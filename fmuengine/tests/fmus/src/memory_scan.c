/*
 * Hostile model: in its first doStep looks through ALL of its own readable memory for
 * a text, to find what the process that forked it left there (another tenant's file
 * names, model description, sha256, run id). The text arrives with every character
 * shifted up by one (string parameter "shifted_needle"), so that the only unshifted
 * copy made on purpose is the one decoded here, which the scan skips. Every readable
 * mapping of /proc/self/maps (heap, stack, anonymous and file-backed, except the
 * kernel's [vvar]/[vsyscall]) is read through /proc/self/mem in chunks, so pages that
 * cannot be read are skipped instead of faulting. The chunk buffer is a mapping of its
 * own, skipped too. It makes itself dumpable first, as an attacker would. Logs "memory_scan: found" or "memory_scan: not found".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define N_INTEGERS 0
#define N_STRINGS 1

#include "hostile_base.c"

enum { SHIFTED_NEEDLE };
#define CHUNK ((size_t)1 << 20)

static void hostile_defaults(Model *m) { m->s[SHIFTED_NEEDLE][0] = '\0'; }

static int scan_range(int mem, unsigned long start, unsigned long end, const char *needle,
                      size_t length, char *buffer) {
    unsigned long at = start;
    while (at < end) {
        size_t want = end - at < CHUNK ? end - at : CHUNK;
        ssize_t got = pread(mem, buffer, want, (off_t)at);
        if (got <= 0) { /* unreadable page: skip it */
            at = (at + 4096) & ~4095UL;
            continue;
        }
        const char *from = buffer;
        size_t left = (size_t)got;
        const char *hit;
        while ((hit = memmem(from, left, needle, length)) != NULL) {
            unsigned long address = at + (unsigned long)(hit - buffer);
            if (address != (unsigned long)needle) return 1;
            left -= (size_t)(hit - from) + 1;
            from = hit + 1;
        }
        /* overlap by length-1 so a copy across chunks is seen */
        at += (size_t)got > length ? (size_t)got - length + 1 : (size_t)got;
    }
    return 0;
}

static fmi2Status hostile_action(Model *m) {
    size_t length = strlen(m->s[SHIFTED_NEEDLE]);
    char line[512];
    int found = 0;
    if (length == 0) return fmi2Error;
    char *needle = malloc(length + 1);
    if (!needle) return fmi2Error;
    for (size_t k = 0; k < length; k++) needle[k] = (char)(m->s[SHIFTED_NEEDLE][k] - 1);
    needle[length] = '\0';
    /* A process that changed its uid is not dumpable, so /proc/self/mem is root's;
     * an attacker simply makes itself dumpable again. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    char *buffer = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FILE *maps = fopen("/proc/self/maps", "r");
    int mem = open("/proc/self/mem", O_RDONLY);
    if (buffer == MAP_FAILED || !maps || mem < 0) {
        model_log(m, fmi2Error, "logAll", "memory_scan: cannot read its own memory");
        return fmi2Error;
    }
    unsigned long mapped = 0;
    while (!found && fgets(line, sizeof(line), maps)) {
        unsigned long start, end;
        char permissions[5];
        if (sscanf(line, "%lx-%lx %4s", &start, &end, permissions) != 3) continue;
        if (permissions[0] != 'r' || strstr(line, "[vvar") || strstr(line, "[vsyscall")) continue;
        if (start == (unsigned long)buffer) continue;
        mapped += end - start;
        found = scan_range(mem, start, end, needle, length, buffer);
    }
    fclose(maps);
    close(mem);
    model_log(m, fmi2OK, "logAll", "memory_scan: read %lu MB", mapped >> 20);
    model_log(m, fmi2OK, "logAll", found ? "memory_scan: found" : "memory_scan: not found");
    free(needle);
    return fmi2OK;
}
