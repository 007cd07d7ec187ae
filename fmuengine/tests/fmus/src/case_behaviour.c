/*
 * A model whose behaviour is a parameter, for batches of cases of one model: the
 * Integer parameter "mode" picks it, once the simulation has reached t = 0.5.
 *
 *   0  a normal run: x decays, der(x) = -k*x, x(0) = 1; outputs x and y = k*x
 *   1  crashes (writes through a null pointer: SIGSEGV)
 *   2  never returns from doStep (busy loop)
 *   3  allocates and touches memory in 16 MB chunks until malloc fails (then
 *      returns fmi2Error), or until the memory cgroup ends the process
 *   4  writes hostile output, then goes on as mode 0: junk case files (case-<i>.npy,
 *      case-<i>.error.json, result.npy, error.json) in its cwd, junk lines on every
 *      descriptor from 3 to 15 (pipes to the sandbox among them), control characters
 *      in its log
 *
 * Each hostile mode logs what it is about to do first.
 */
#include <unistd.h>

#define N_REALS 4
#define N_INTEGERS 1
#define N_STRINGS 0
#define N_STATES 1
#define N_EVENT_INDICATORS 0

#include "fmi2_framework.c"

enum { X, DER_X, K, Y };
enum { MODE };

#define HOSTILE_FROM 0.5
#define CHUNK_BYTES ((size_t)16 << 20)

static void model_defaults(Model *m) {
    m->r[X] = 1.0;
    m->r[K] = 1.0;
    m->i[MODE] = 0;
    model_update(m);
}

static void model_update(Model *m) {
    m->r[DER_X] = -m->r[K] * m->r[X];
    m->r[Y] = m->r[K] * m->r[X];
}

static fmi2Status model_check(Model *m) {
    if (m->i[MODE] < 0 || m->i[MODE] > 4) {
        model_log(m, fmi2Error, "logStatusError", "mode must be 0..4, got %d", m->i[MODE]);
        return fmi2Error;
    }
    return fmi2OK;
}

static void model_event_indicators(Model *m, double z[]) {
    (void)m;
    (void)z;
}

static int model_state_event(Model *m) {
    (void)m;
    return 0;
}

static void write_junk_files(void) {
    static const char junk[] = "\x93NUMPY\x01\x00{'descr': [('time', '<f8')], 'shape': (99999999,)}";
    char name[64];
    for (int index = 0; index < 64; index++) {
        const char *suffixes[] = {"npy", "error.json", "log"};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "case-%d.%s", index, suffixes[k]);
            FILE *file = fopen(name, "w");
            if (file) {
                fwrite(junk, 1, sizeof(junk), file);
                fclose(file);
            }
        }
    }
    const char *names[] = {"result.npy", "error.json"};
    for (int k = 0; k < 2; k++) {
        FILE *file = fopen(names[k], "w");
        if (file) {
            fputs("{\"code\": \"sandbox_failed\", \"message\": [[[[[[[[[[]]]]]]]]]]}", file);
            fclose(file);
        }
    }
}

static fmi2Status hostile(Model *m) {
    switch (m->i[MODE]) {
    case 1: {
        volatile int *volatile target = NULL;
        model_log(m, fmi2OK, "logAll", "case_behaviour: crashing");
        *target = 42;
        return fmi2OK;
    }
    case 2: {
        volatile unsigned long spins = 0;
        model_log(m, fmi2OK, "logAll", "case_behaviour: looping forever");
        for (;;) spins++;
    }
    case 3: {
        size_t total = 0;
        model_log(m, fmi2OK, "logAll", "case_behaviour: allocating until malloc fails");
        for (;;) {
            char *chunk = malloc(CHUNK_BYTES);
            if (!chunk) {
                model_log(m, fmi2Error, "logStatusError",
                          "case_behaviour: malloc failed after %zu MB", total >> 20);
                return fmi2Error;
            }
            memset(chunk, 0xAB, CHUNK_BYTES); /* touched; leaked on purpose */
            total += CHUNK_BYTES;
        }
    }
    case 4: {
        static const char line[] = "e 0 0 junk\x01\x02\n\ns\n99999999999999999999\n";
        model_log(m, fmi2OK, "logAll", "case_behaviour: writing junk \x1b[31m\x01\x02");
        write_junk_files();
        for (int fd = 3; fd <= 15; fd++) {
            if (write(fd, line, sizeof(line) - 1) < 0) continue;
        }
        m->i[MODE] = 0; /* once */
        return fmi2OK;
    }
    default:
        return fmi2OK;
    }
}

static fmi2Status model_do_step(Model *m, double t, double h) {
    if (m->i[MODE] != 0 && t >= HOSTILE_FROM - 1e-9) {
        fmi2Status status = hostile(m);
        if (status != fmi2OK) return status;
    }
    return euler_step_with_events(m, t, h);
}
