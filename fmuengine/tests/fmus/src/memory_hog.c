/*
 * Hostile model: allocates and touches 4 GB in 64 MB chunks in its first
 * doStep. Logs and returns fmi2Error when malloc fails (a memory limit held);
 * logs "allocated and touched" and returns fmi2OK when it got everything.
 */
#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

#define CHUNK_BYTES ((size_t)64 << 20)
#define TARGET_BYTES ((size_t)4 << 30)

static void hostile_defaults(Model *m) { (void)m; }

static fmi2Status hostile_action(Model *m) {
    size_t total = 0;
    model_log(m, fmi2OK, "logAll", "memory_hog: allocating %zu MB in %zu MB chunks",
              TARGET_BYTES >> 20, CHUNK_BYTES >> 20);
    while (total < TARGET_BYTES) {
        char *chunk = malloc(CHUNK_BYTES);
        if (!chunk) {
            model_log(m, fmi2Error, "logStatusError", "memory_hog: malloc failed after %zu MB",
                      total >> 20);
            return fmi2Error;
        }
        memset(chunk, 0xAB, CHUNK_BYTES); /* touch every page; leaked on purpose */
        total += CHUNK_BYTES;
    }
    model_log(m, fmi2OK, "logAll", "memory_hog: allocated and touched %zu MB", total >> 20);
    return fmi2OK;
}
