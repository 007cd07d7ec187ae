/* Hostile model: ends the whole process with _exit(3) in its first doStep. */
#include <unistd.h>

#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

static void hostile_defaults(Model *m) { (void)m; }

static fmi2Status hostile_action(Model *m) {
    model_log(m, fmi2OK, "logAll", "exit_early: calling _exit(3)");
    _exit(3);
}
