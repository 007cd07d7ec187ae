/* Hostile model: writes through a null pointer in its first doStep (SIGSEGV). */
#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

static void hostile_defaults(Model *m) { (void)m; }

static fmi2Status hostile_action(Model *m) {
    /* volatile so the compiler emits the store instead of a trap instruction */
    volatile int *volatile target = NULL;
    model_log(m, fmi2OK, "logAll", "segfault: writing through a null pointer");
    *target = 42;
    return fmi2OK;
}
