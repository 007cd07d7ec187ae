/* Hostile model: never returns from its first doStep (busy loop). */
#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

static void hostile_defaults(Model *m) { (void)m; }

static fmi2Status hostile_action(Model *m) {
    volatile unsigned long spins = 0;
    model_log(m, fmi2OK, "logAll", "endless_loop: entering an endless loop");
    for (;;) spins++;
    return fmi2OK;
}
