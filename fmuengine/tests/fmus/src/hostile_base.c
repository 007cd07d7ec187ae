/*
 * Common part of the hostile FMI 2.0 Co-Simulation test models.
 *
 * Not compiled on its own: a hostile model defines N_INTEGERS and N_STRINGS,
 * includes this file and defines hostile_defaults() and hostile_action(). The
 * action runs in the first fmi2DoStep and logs what it is about to do first, so
 * tests can see in the FMU log how far it got. The only real variable is the
 * output "steps" (number of completed doStep calls).
 */
#define N_REALS 1
#define N_STATES 0
#define N_EVENT_INDICATORS 0

#include "fmi2_framework.c"

enum { STEPS };

static void hostile_defaults(Model *m);
static fmi2Status hostile_action(Model *m);

static void model_defaults(Model *m) {
    m->r[STEPS] = 0.0;
    hostile_defaults(m);
}

static void model_update(Model *m) { (void)m; }

static fmi2Status model_check(Model *m) {
    (void)m;
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

static fmi2Status model_do_step(Model *m, double t, double h) {
    fmi2Status status = fmi2OK;
    if (m->r[STEPS] == 0) status = hostile_action(m);
    m->r[STEPS] += 1;
    m->time = t + h;
    return status;
}
