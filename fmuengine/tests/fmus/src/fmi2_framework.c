/*
 * Shared FMI 2.0 implementation for the test FMUs (Co-Simulation and Model Exchange).
 *
 * Not compiled on its own: every FMI 2.0 model file defines its sizes, then
 * includes this file, then defines the model hooks. One translation unit per
 * FMU keeps the build a single gcc call and needs no extra header.
 *
 * Before the include a model defines:
 *   N_REALS, N_INTEGERS, N_STRINGS    number of variables per type (value
 *                                     references are indices per type)
 *   N_STATES                          continuous states are r[0..N_STATES-1],
 *                                     their derivatives r[N_STATES..2*N_STATES-1]
 *   N_EVENT_INDICATORS
 * and after it the hooks declared below. MODEL_GUID comes from build.py (-D).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmi2Functions.h"

#ifndef MODEL_GUID
#error "MODEL_GUID must be defined by the build"
#endif

#define STRING_CAPACITY 256
/* Internal Euler step of the Co-Simulation interface. */
#define CS_INTERNAL_STEP 1e-3

typedef struct {
    double time;
    double r[N_REALS + 1];
    int i[N_INTEGERS + 1];
    char s[N_STRINGS + 1][STRING_CAPACITY];
    fmi2CallbackFunctions callbacks;
    char instance_name[128];
    fmi2Type type;
    int logging_on;
} Model;

/* Hooks every model defines. */
static void model_defaults(Model *m);
/* Computes derivatives and calculated outputs from states, inputs and parameters. */
static void model_update(Model *m);
/* Checks parameters when initialization ends; returns fmi2OK or an error after logging it. */
static fmi2Status model_check(Model *m);
static void model_event_indicators(Model *m, double z[]);
/* Handles a state event; returns 1 when continuous states changed. */
static int model_state_event(Model *m);
/* One Co-Simulation communication step; most models call euler_step_with_events(). */
static fmi2Status model_do_step(Model *m, double t, double h);

static void model_log(Model *m, fmi2Status status, const char *category, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void model_log(Model *m, fmi2Status status, const char *category, const char *fmt, ...) {
    char message[2048];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    if (m->callbacks.logger) {
        /* The message is passed as an argument so that '%' in it is never a format. */
        m->callbacks.logger(m->callbacks.componentEnvironment, m->instance_name, status, category,
                            "%s", message);
    }
}

/* A long comparison keeps gcc quiet for models with zero variables of a type. */
static int value_reference_exists(fmi2ValueReference vr, long count) { return (long)vr < count; }

static fmi2Status euler_step_with_events(Model *m, double t, double h) __attribute__((unused));

static fmi2Status euler_step_with_events(Model *m, double t, double h) {
    int steps = (int)ceil(h / CS_INTERNAL_STEP - 1e-9);
    if (steps < 1) steps = 1;
    double dt = h / steps;
    double z_before[N_EVENT_INDICATORS + 1];
    double z_after[N_EVENT_INDICATORS + 1];
    for (int step = 0; step < steps; step++) {
        model_update(m);
        model_event_indicators(m, z_before);
        for (int k = 0; k < N_STATES; k++) m->r[k] += dt * m->r[N_STATES + k];
        m->time = t + (step + 1) * dt;
        model_update(m);
        model_event_indicators(m, z_after);
        int crossed = 0;
        for (int k = 0; k < N_EVENT_INDICATORS; k++) {
            if ((z_before[k] > 0) != (z_after[k] > 0)) crossed = 1;
        }
        if (crossed) {
            model_state_event(m);
            model_update(m);
        }
    }
    m->time = t + h;
    return fmi2OK;
}

/* ---- common functions ---- */

const char *fmi2GetTypesPlatform(void) { return fmi2TypesPlatform; }

const char *fmi2GetVersion(void) { return fmi2Version; }

fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean loggingOn, size_t nCategories,
                               const fmi2String categories[]) {
    (void)nCategories;
    (void)categories;
    ((Model *)c)->logging_on = loggingOn;
    return fmi2OK;
}

fmi2Component fmi2Instantiate(fmi2String instanceName, fmi2Type fmuType, fmi2String fmuGUID,
                              fmi2String fmuResourceLocation,
                              const fmi2CallbackFunctions *functions, fmi2Boolean visible,
                              fmi2Boolean loggingOn) {
    (void)fmuResourceLocation;
    (void)visible;
    Model *m = calloc(1, sizeof(Model));
    if (!m) return NULL;
    if (functions) m->callbacks = *functions;
    snprintf(m->instance_name, sizeof(m->instance_name), "%s", instanceName ? instanceName : "");
    m->type = fmuType;
    m->logging_on = loggingOn;
    if (!fmuGUID || strcmp(fmuGUID, MODEL_GUID) != 0) {
        model_log(m, fmi2Error, "logStatusError", "GUID mismatch: expected %s", MODEL_GUID);
        free(m);
        return NULL;
    }
    model_defaults(m);
    return m;
}

void fmi2FreeInstance(fmi2Component c) { free(c); }

fmi2Status fmi2SetupExperiment(fmi2Component c, fmi2Boolean toleranceDefined,
                               fmi2Real tolerance, fmi2Real startTime,
                               fmi2Boolean stopTimeDefined, fmi2Real stopTime) {
    (void)toleranceDefined;
    (void)tolerance;
    (void)stopTimeDefined;
    (void)stopTime;
    ((Model *)c)->time = startTime;
    return fmi2OK;
}

fmi2Status fmi2EnterInitializationMode(fmi2Component c) { (void)c; return fmi2OK; }

fmi2Status fmi2ExitInitializationMode(fmi2Component c) {
    Model *m = c;
    fmi2Status status = model_check(m);
    model_update(m);
    return status;
}

fmi2Status fmi2Terminate(fmi2Component c) { (void)c; return fmi2OK; }

fmi2Status fmi2Reset(fmi2Component c) {
    Model *m = c;
    m->time = 0;
    model_defaults(m);
    return fmi2OK;
}

fmi2Status fmi2GetReal(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                       fmi2Real value[]) {
    Model *m = c;
    model_update(m);
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_REALS)) return fmi2Error;
        value[k] = m->r[vr[k]];
    }
    return fmi2OK;
}

fmi2Status fmi2GetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          fmi2Integer value[]) {
    Model *m = c;
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_INTEGERS)) return fmi2Error;
        value[k] = m->i[vr[k]];
    }
    return fmi2OK;
}

fmi2Status fmi2GetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          fmi2Boolean value[]) {
    (void)c;
    (void)vr;
    (void)value;
    return nvr == 0 ? fmi2OK : fmi2Error;
}

fmi2Status fmi2GetString(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                         fmi2String value[]) {
    Model *m = c;
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_STRINGS)) return fmi2Error;
        value[k] = m->s[vr[k]];
    }
    return fmi2OK;
}

fmi2Status fmi2SetReal(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                       const fmi2Real value[]) {
    Model *m = c;
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_REALS)) return fmi2Error;
        m->r[vr[k]] = value[k];
    }
    return fmi2OK;
}

fmi2Status fmi2SetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          const fmi2Integer value[]) {
    Model *m = c;
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_INTEGERS)) return fmi2Error;
        m->i[vr[k]] = value[k];
    }
    return fmi2OK;
}

fmi2Status fmi2SetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          const fmi2Boolean value[]) {
    (void)c;
    (void)vr;
    (void)value;
    return nvr == 0 ? fmi2OK : fmi2Error;
}

fmi2Status fmi2SetString(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                         const fmi2String value[]) {
    Model *m = c;
    for (size_t k = 0; k < nvr; k++) {
        if (!value_reference_exists(vr[k], N_STRINGS)) return fmi2Error;
        snprintf(m->s[vr[k]], STRING_CAPACITY, "%s", value[k] ? value[k] : "");
    }
    return fmi2OK;
}

/* FMU state and directional derivatives are declared unsupported in modelDescription.xml. */

fmi2Status fmi2GetFMUstate(fmi2Component c, fmi2FMUstate *FMUstate) {
    (void)c;
    (void)FMUstate;
    return fmi2Error;
}

fmi2Status fmi2SetFMUstate(fmi2Component c, fmi2FMUstate FMUstate) {
    (void)c;
    (void)FMUstate;
    return fmi2Error;
}

fmi2Status fmi2FreeFMUstate(fmi2Component c, fmi2FMUstate *FMUstate) {
    (void)c;
    (void)FMUstate;
    return fmi2Error;
}

fmi2Status fmi2SerializedFMUstateSize(fmi2Component c, fmi2FMUstate FMUstate, size_t *size) {
    (void)c;
    (void)FMUstate;
    (void)size;
    return fmi2Error;
}

fmi2Status fmi2SerializeFMUstate(fmi2Component c, fmi2FMUstate FMUstate, fmi2Byte serialized[],
                                 size_t size) {
    (void)c;
    (void)FMUstate;
    (void)serialized;
    (void)size;
    return fmi2Error;
}

fmi2Status fmi2DeSerializeFMUstate(fmi2Component c, const fmi2Byte serialized[], size_t size,
                                   fmi2FMUstate *FMUstate) {
    (void)c;
    (void)serialized;
    (void)size;
    (void)FMUstate;
    return fmi2Error;
}

fmi2Status fmi2GetDirectionalDerivative(fmi2Component c, const fmi2ValueReference vUnknown_ref[],
                                        size_t nUnknown, const fmi2ValueReference vKnown_ref[],
                                        size_t nKnown, const fmi2Real dvKnown[],
                                        fmi2Real dvUnknown[]) {
    (void)c;
    (void)vUnknown_ref;
    (void)nUnknown;
    (void)vKnown_ref;
    (void)nKnown;
    (void)dvKnown;
    (void)dvUnknown;
    return fmi2Error;
}

/* ---- Model Exchange ---- */

fmi2Status fmi2EnterEventMode(fmi2Component c) { (void)c; return fmi2OK; }

fmi2Status fmi2NewDiscreteStates(fmi2Component c, fmi2EventInfo *eventInfo) {
    Model *m = c;
    eventInfo->newDiscreteStatesNeeded = fmi2False;
    eventInfo->terminateSimulation = fmi2False;
    eventInfo->nominalsOfContinuousStatesChanged = fmi2False;
    eventInfo->valuesOfContinuousStatesChanged = model_state_event(m) ? fmi2True : fmi2False;
    eventInfo->nextEventTimeDefined = fmi2False;
    eventInfo->nextEventTime = 0;
    model_update(m);
    return fmi2OK;
}

fmi2Status fmi2EnterContinuousTimeMode(fmi2Component c) { (void)c; return fmi2OK; }

fmi2Status fmi2CompletedIntegratorStep(fmi2Component c, fmi2Boolean noSetFMUStatePriorToCurrentPoint,
                                       fmi2Boolean *enterEventMode, fmi2Boolean *terminateSimulation) {
    (void)c;
    (void)noSetFMUStatePriorToCurrentPoint;
    *enterEventMode = fmi2False;
    *terminateSimulation = fmi2False;
    return fmi2OK;
}

fmi2Status fmi2SetTime(fmi2Component c, fmi2Real time) {
    ((Model *)c)->time = time;
    return fmi2OK;
}

fmi2Status fmi2SetContinuousStates(fmi2Component c, const fmi2Real x[], size_t nx) {
    Model *m = c;
    if (nx != N_STATES) return fmi2Error;
    for (size_t k = 0; k < nx; k++) m->r[k] = x[k];
    return fmi2OK;
}

fmi2Status fmi2GetDerivatives(fmi2Component c, fmi2Real derivatives[], size_t nx) {
    Model *m = c;
    if (nx != N_STATES) return fmi2Error;
    model_update(m);
    for (size_t k = 0; k < nx; k++) derivatives[k] = m->r[N_STATES + k];
    return fmi2OK;
}

fmi2Status fmi2GetEventIndicators(fmi2Component c, fmi2Real eventIndicators[], size_t ni) {
    Model *m = c;
    if (ni != N_EVENT_INDICATORS) return fmi2Error;
    model_update(m);
    model_event_indicators(m, eventIndicators);
    return fmi2OK;
}

fmi2Status fmi2GetContinuousStates(fmi2Component c, fmi2Real x[], size_t nx) {
    Model *m = c;
    if (nx != N_STATES) return fmi2Error;
    for (size_t k = 0; k < nx; k++) x[k] = m->r[k];
    return fmi2OK;
}

fmi2Status fmi2GetNominalsOfContinuousStates(fmi2Component c, fmi2Real x_nominal[], size_t nx) {
    (void)c;
    for (size_t k = 0; k < nx; k++) x_nominal[k] = 1.0;
    return fmi2OK;
}

/* ---- Co-Simulation ---- */

fmi2Status fmi2SetRealInputDerivatives(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                                       const fmi2Integer order[], const fmi2Real value[]) {
    (void)c;
    (void)vr;
    (void)order;
    (void)value;
    return nvr == 0 ? fmi2OK : fmi2Error;
}

fmi2Status fmi2GetRealOutputDerivatives(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                                        const fmi2Integer order[], fmi2Real value[]) {
    (void)c;
    (void)vr;
    (void)order;
    (void)value;
    return nvr == 0 ? fmi2OK : fmi2Error;
}

fmi2Status fmi2DoStep(fmi2Component c, fmi2Real currentCommunicationPoint,
                      fmi2Real communicationStepSize, fmi2Boolean noSetFMUStatePriorToCurrentPoint) {
    (void)noSetFMUStatePriorToCurrentPoint;
    return model_do_step((Model *)c, currentCommunicationPoint, communicationStepSize);
}

fmi2Status fmi2CancelStep(fmi2Component c) { (void)c; return fmi2Error; }

fmi2Status fmi2GetStatus(fmi2Component c, const fmi2StatusKind s, fmi2Status *value) {
    (void)c;
    (void)s;
    (void)value;
    return fmi2Discard;
}

fmi2Status fmi2GetRealStatus(fmi2Component c, const fmi2StatusKind s, fmi2Real *value) {
    Model *m = c;
    if (s != fmi2LastSuccessfulTime) return fmi2Discard;
    *value = m->time;
    return fmi2OK;
}

fmi2Status fmi2GetIntegerStatus(fmi2Component c, const fmi2StatusKind s, fmi2Integer *value) {
    (void)c;
    (void)s;
    (void)value;
    return fmi2Discard;
}

fmi2Status fmi2GetBooleanStatus(fmi2Component c, const fmi2StatusKind s, fmi2Boolean *value) {
    (void)c;
    (void)s;
    (void)value;
    return fmi2Discard;
}

fmi2Status fmi2GetStringStatus(fmi2Component c, const fmi2StatusKind s, fmi2String *value) {
    (void)c;
    (void)s;
    (void)value;
    return fmi2Discard;
}
