/*
 * Hostile model: forks in a loop in its first doStep; every child sleeps
 * forever. When fork fails (a process limit held) it logs how many children it
 * made and returns fmi2Error, leaving the children behind. Stops by itself after
 * MAX_CHILDREN so that an unconfined run cannot take the machine down.
 */
#include <errno.h>
#include <unistd.h>

#define N_INTEGERS 0
#define N_STRINGS 0

#include "hostile_base.c"

#define MAX_CHILDREN 2000

static void hostile_defaults(Model *m) { (void)m; }

static fmi2Status hostile_action(Model *m) {
    model_log(m, fmi2OK, "logAll", "fork_bomb: forking in a loop");
    for (int children = 0; children < MAX_CHILDREN; children++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        if (pid < 0) {
            model_log(m, fmi2Error, "logStatusError", "fork_bomb: fork failed after %d children: %s",
                      children, strerror(errno));
            return fmi2Error;
        }
    }
    model_log(m, fmi2OK, "logAll", "fork_bomb: started %d children", MAX_CHILDREN);
    return fmi2OK;
}
