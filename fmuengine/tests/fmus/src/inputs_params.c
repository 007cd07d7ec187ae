/*
 * First-order lag, FMI 2.0 Co-Simulation and Model Exchange:
 * der(x) = (k*u - x) / T, y = x, with input u, tunable gain k and fixed time
 * constant T. Used to test inputs and start values.
 */
#define N_REALS 6
#define N_INTEGERS 0
#define N_STRINGS 0
#define N_STATES 1
#define N_EVENT_INDICATORS 0

#include "fmi2_framework.c"

enum { X, DER_X, U, K, T, Y };

static void model_defaults(Model *m) {
    m->r[X] = 0.0;
    m->r[U] = 0.0;
    m->r[K] = 1.0;
    m->r[T] = 1.0;
    model_update(m);
}

static void model_update(Model *m) {
    m->r[DER_X] = m->r[T] > 0 ? (m->r[K] * m->r[U] - m->r[X]) / m->r[T] : 0.0;
    m->r[Y] = m->r[X];
}

static fmi2Status model_check(Model *m) {
    if (!(m->r[T] > 0)) {
        model_log(m, fmi2Error, "logStatusError", "T must be > 0, got %g", m->r[T]);
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

static fmi2Status model_do_step(Model *m, double t, double h) {
    return euler_step_with_events(m, t, h);
}
