/*
 * Hostile model: in its first doStep writes what the runner reads after a run into its
 * cwd (/sandbox), shaped to break the reader, then ends the process itself. Integer
 * parameter "how":
 *   1  error.json nested 100,000 levels deep, then _exit(113) (a "reported failure");
 *   2  error.json nested 2,000 levels deep (it fits in 4 KB), then _exit(113);
 *   3  result.npy whose header claims 10^12 rows, then _exit(0);
 *   4  a directory tree 5,000 levels deep and result.npy as a directory, then _exit(0);
 *   5  result.npy as a FIFO and error.json as a symlink to /proc/self/environ, _exit(113);
 *   6  a binary, 10 MB single-line fmu.log, then _exit(0) without a result.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_INTEGERS 1
#define N_STRINGS 0

#include "hostile_base.c"

enum { HOW };

static void hostile_defaults(Model *m) { m->i[HOW] = 1; }

static void write_nested_json(int depth) {
    FILE *f = fopen("error.json", "w");
    if (!f) return;
    for (int k = 0; k < depth; k++) fputc('[', f);
    for (int k = 0; k < depth; k++) fputc(']', f);
    fclose(f);
}

static void write_lying_npy(void) {
    const char *header =
        "{'descr': [('time', '<f8'), ('h', '<f8')], 'fortran_order': False, "
        "'shape': (1000000000000,), }";
    char padded[128];
    int length = snprintf(padded, sizeof(padded), "%s", header);
    while ((10 + length + 1) % 64) padded[length++] = ' ';
    padded[length++] = '\n';
    FILE *f = fopen("result.npy", "wb");
    if (!f) return;
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char size[2] = {(unsigned char)(length & 0xff), (unsigned char)(length >> 8)};
    fwrite(size, 1, 2, f);
    fwrite(padded, 1, (size_t)length, f);
    double row[2] = {0.0, 1.0};
    fwrite(row, sizeof(row), 1, f);
    fclose(f);
}

static fmi2Status hostile_action(Model *m) {
    int how = m->i[HOW];
    model_log(m, fmi2OK, "logAll", "output_forger: how=%d", how);
    if (how == 1 || how == 2) {
        write_nested_json(how == 1 ? 100000 : 2000);
        _exit(113);
    }
    if (how == 3) {
        write_lying_npy();
        _exit(0);
    }
    if (how == 4) {
        if (chdir("/sandbox") == 0) {
            for (int k = 0; k < 5000; k++) {
                if (mkdir("t", 0700) != 0 || chdir("t") != 0) break;
            }
        }
        if (chdir("/sandbox") == 0) mkdir("result.npy", 0700);
        _exit(0);
    }
    if (how == 5) {
        mkfifo("result.npy", 0600);
        symlink("/proc/self/environ", "error.json");
        _exit(113);
    }
    if (how == 6) {
        FILE *f = fopen("fmu.log", "w");
        if (f) {
            for (int k = 0; k < 10 << 20; k++) fputc((k * 7919) & 0xff, f);
            fclose(f);
        }
        _exit(0);
    }
    return fmi2Error;
}
