/*
 * Bouncing ball, FMI 2.0 Co-Simulation and Model Exchange in one binary.
 *
 * States h (height) and v (velocity); parameters g and e (coefficient of
 * restitution). The event indicator is h: when the ball reaches the floor
 * moving down it bounces with v := -e*v; once the bounce speed falls below
 * V_MIN the ball rests on the floor (no Zeno chattering).
 */
#define N_REALS 7
#define N_INTEGERS 0
#define N_STRINGS 0
#define N_STATES 2
#define N_EVENT_INDICATORS 1

#include "fmi2_framework.c"

enum { H, V, DER_H, DER_V, G, E, RESTING };

#define V_MIN 0.1

static void model_defaults(Model *m) {
    m->r[H] = 1.0;
    m->r[V] = 0.0;
    m->r[G] = 9.81;
    m->r[E] = 0.7;
    m->r[RESTING] = 0.0;
    model_update(m);
}

static void model_update(Model *m) {
    if (m->r[RESTING] > 0) {
        m->r[DER_H] = 0.0;
        m->r[DER_V] = 0.0;
    } else {
        m->r[DER_H] = m->r[V];
        m->r[DER_V] = -m->r[G];
    }
}

static fmi2Status model_check(Model *m) {
    if (m->r[E] < 0 || m->r[E] > 1) {
        model_log(m, fmi2Error, "logStatusError", "e must be in [0, 1], got %g", m->r[E]);
        return fmi2Error;
    }
    return fmi2OK;
}

static void model_event_indicators(Model *m, double z[]) {
    z[0] = m->r[RESTING] > 0 ? 1.0 : m->r[H];
}

static int model_state_event(Model *m) {
    if (m->r[RESTING] > 0 || m->r[H] > 0 || m->r[V] >= 0) return 0;
    m->r[H] = 0.0;
    m->r[V] = -m->r[E] * m->r[V];
    if (m->r[V] < V_MIN) {
        m->r[V] = 0.0;
        m->r[RESTING] = 1.0;
    }
    return 1;
}

static fmi2Status model_do_step(Model *m, double t, double h) {
    return euler_step_with_events(m, t, h);
}
