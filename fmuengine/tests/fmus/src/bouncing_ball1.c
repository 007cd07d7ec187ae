/*
 * Bouncing ball, FMI 1.0 Co-Simulation (stand-alone): the physics of
 * bouncing_ball3.c (fixed-step internal Euler with state events on h).
 *
 * fmpy's fmi1Functions.h declares the FMI 1.0 types and the function *types*
 * (fmi1...TYPE); FMI 1.0 exports every function prefixed with the model
 * identifier (<modelIdentifier>_fmiDoStep, ...), which FMI1_FUNCTION builds.
 * Every Co-Simulation function of the standard is exported (fmpy binds them
 * all when it loads the library); those the model does not support log an
 * error and return fmi1Error.
 *
 * Value references (Real): 0 h, 1 v, 2 g, 3 e.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmi1Functions.h"

#ifndef MODEL_GUID
#error "MODEL_GUID must be defined by the build"
#endif

#define MODEL_IDENTIFIER bouncing_ball1
#define FMI1_PASTE(a, b) a##_##b
#define FMI1_NAME(a, b) FMI1_PASTE(a, b)
#define FMI1_FUNCTION(name) FMI1_NAME(MODEL_IDENTIFIER, name)

enum { H, V, G, E, N_VARIABLES };

#define V_MIN 0.1
#define INTERNAL_STEP 1e-3

typedef struct {
    double values[N_VARIABLES];
    double time;
    int resting;
    char instance_name[128];
    fmi1CallbackFunctions functions;
} Instance;

static void log_error(Instance *instance, const char *fmt, const char *argument) {
    char message[512];
    snprintf(message, sizeof(message), fmt, argument);
    if (instance && instance->functions.logger) {
        /* The logger formats its message like printf: pass ours as an argument. */
        instance->functions.logger(instance, instance->instance_name, fmi1Error, "error", "%s",
                                   message);
    }
}

static void set_defaults(Instance *instance) {
    instance->time = 0.0;
    instance->values[H] = 1.0;
    instance->values[V] = 0.0;
    instance->values[G] = 9.81;
    instance->values[E] = 0.7;
    instance->resting = 0;
}

static void bounce_if_on_floor(Instance *instance) {
    double *x = instance->values;
    if (instance->resting || x[H] > 0 || x[V] >= 0) return;
    x[H] = 0.0;
    x[V] = -x[E] * x[V];
    if (x[V] < V_MIN) {
        x[V] = 0.0;
        instance->resting = 1;
    }
}

static fmi1Status unsupported(fmi1Component c, const char *function) {
    log_error(c, "%s is not supported", function);
    return fmi1Error;
}

/* ---- version, platform, logging ---- */

const char *FMI1_FUNCTION(fmiGetTypesPlatform)(void) { return "standard32"; }

const char *FMI1_FUNCTION(fmiGetVersion)(void) { return "1.0"; }

fmi1Status FMI1_FUNCTION(fmiSetDebugLogging)(fmi1Component c, fmi1Boolean loggingOn) {
    (void)c;
    (void)loggingOn;
    return fmi1OK;
}

/* ---- creation, initialisation, destruction ---- */

fmi1Component FMI1_FUNCTION(fmiInstantiateSlave)(fmi1String instanceName, fmi1String fmuGUID,
                                                 fmi1String fmuLocation, fmi1String mimeType,
                                                 fmi1Real timeout, fmi1Boolean visible,
                                                 fmi1Boolean interactive,
                                                 fmi1CallbackFunctions functions,
                                                 fmi1Boolean loggingOn) {
    (void)fmuLocation;
    (void)mimeType;
    (void)timeout;
    (void)visible;
    (void)loggingOn;
    Instance *instance = calloc(1, sizeof(Instance));
    if (!instance) return NULL;
    instance->functions = functions;
    snprintf(instance->instance_name, sizeof(instance->instance_name), "%s",
             instanceName ? instanceName : "");
    if (!fmuGUID || strcmp(fmuGUID, MODEL_GUID) != 0) {
        log_error(instance, "GUID mismatch: expected %s", MODEL_GUID);
        free(instance);
        return NULL;
    }
    if (interactive) {
        log_error(instance, "%s", "interactive mode is not supported");
        free(instance);
        return NULL;
    }
    set_defaults(instance);
    return instance;
}

fmi1Status FMI1_FUNCTION(fmiInitializeSlave)(fmi1Component c, fmi1Real tStart,
                                             fmi1Boolean StopTimeDefined, fmi1Real tStop) {
    (void)StopTimeDefined;
    (void)tStop;
    Instance *self = c;
    if (self->values[E] < 0 || self->values[E] > 1) {
        log_error(self, "%s must be in [0, 1]", "e");
        return fmi1Error;
    }
    self->time = tStart;
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiTerminateSlave)(fmi1Component c) {
    (void)c;
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiResetSlave)(fmi1Component c) {
    set_defaults(c);
    return fmi1OK;
}

void FMI1_FUNCTION(fmiFreeSlaveInstance)(fmi1Component c) { free(c); }

/* ---- getters and setters ---- */

fmi1Status FMI1_FUNCTION(fmiGetReal)(fmi1Component c, const fmi1ValueReference vr[], size_t nvr,
                                     fmi1Real value[]) {
    Instance *self = c;
    for (size_t k = 0; k < nvr; k++) {
        if (vr[k] >= N_VARIABLES) return unsupported(c, "value reference");
        value[k] = self->values[vr[k]];
    }
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiSetReal)(fmi1Component c, const fmi1ValueReference vr[], size_t nvr,
                                     const fmi1Real value[]) {
    Instance *self = c;
    for (size_t k = 0; k < nvr; k++) {
        if (vr[k] >= N_VARIABLES) return unsupported(c, "value reference");
        self->values[vr[k]] = value[k];
    }
    return fmi1OK;
}

/* The model has no variables of these types: only empty requests succeed. */
#define NO_VARIABLES_ACCESSOR(NAME, CONST, TYPE)                                               \
    fmi1Status FMI1_FUNCTION(NAME)(fmi1Component c, const fmi1ValueReference vr[], size_t nvr, \
                                   CONST TYPE value[]) {                                       \
        (void)vr;                                                                              \
        (void)value;                                                                           \
        return nvr == 0 ? fmi1OK : unsupported(c, #NAME);                                      \
    }

NO_VARIABLES_ACCESSOR(fmiGetInteger, , fmi1Integer)
NO_VARIABLES_ACCESSOR(fmiGetBoolean, , fmi1Boolean)
NO_VARIABLES_ACCESSOR(fmiGetString, , fmi1String)
NO_VARIABLES_ACCESSOR(fmiSetInteger, const, fmi1Integer)
NO_VARIABLES_ACCESSOR(fmiSetBoolean, const, fmi1Boolean)
NO_VARIABLES_ACCESSOR(fmiSetString, const, fmi1String)

/* ---- stepping ---- */

fmi1Status FMI1_FUNCTION(fmiSetRealInputDerivatives)(fmi1Component c,
                                                     const fmi1ValueReference vr[], size_t nvr,
                                                     const fmi1Integer order[],
                                                     const fmi1Real value[]) {
    (void)vr;
    (void)order;
    (void)value;
    return nvr == 0 ? fmi1OK : unsupported(c, "fmiSetRealInputDerivatives");
}

fmi1Status FMI1_FUNCTION(fmiGetRealOutputDerivatives)(fmi1Component c,
                                                      const fmi1ValueReference vr[], size_t nvr,
                                                      const fmi1Integer order[],
                                                      fmi1Real value[]) {
    (void)vr;
    (void)order;
    (void)value;
    return nvr == 0 ? fmi1OK : unsupported(c, "fmiGetRealOutputDerivatives");
}

fmi1Status FMI1_FUNCTION(fmiDoStep)(fmi1Component c, fmi1Real currentCommunicationPoint,
                                    fmi1Real communicationStepSize, fmi1Boolean newStep) {
    (void)newStep;
    Instance *self = c;
    double *x = self->values;
    int steps = (int)ceil(communicationStepSize / INTERNAL_STEP - 1e-9);
    if (steps < 1) steps = 1;
    double dt = communicationStepSize / steps;
    for (int step = 0; step < steps; step++) {
        if (!self->resting) {
            int was_above = x[H] > 0;
            x[H] += dt * x[V];
            x[V] += dt * -x[G];
            if (was_above != (x[H] > 0)) bounce_if_on_floor(self);
        }
    }
    self->time = currentCommunicationPoint + communicationStepSize;
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiCancelStep)(fmi1Component c) {
    return unsupported(c, "fmiCancelStep");
}

/* ---- status (doStep never returns fmiPending, so there is nothing asynchronous) ---- */

fmi1Status FMI1_FUNCTION(fmiGetStatus)(fmi1Component c, const fmi1StatusKind s,
                                       fmi1Status *value) {
    if (s != fmi1DoStepStatus) return unsupported(c, "fmiGetStatus for this status kind");
    *value = fmi1OK;
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiGetRealStatus)(fmi1Component c, const fmi1StatusKind s,
                                           fmi1Real *value) {
    if (s != fmi1LastSuccessfulTime) return unsupported(c, "fmiGetRealStatus for this kind");
    *value = ((Instance *)c)->time;
    return fmi1OK;
}

fmi1Status FMI1_FUNCTION(fmiGetIntegerStatus)(fmi1Component c, const fmi1StatusKind s,
                                              fmi1Integer *value) {
    (void)s;
    (void)value;
    return unsupported(c, "fmiGetIntegerStatus");
}

fmi1Status FMI1_FUNCTION(fmiGetBooleanStatus)(fmi1Component c, const fmi1StatusKind s,
                                              fmi1Boolean *value) {
    (void)s;
    (void)value;
    return unsupported(c, "fmiGetBooleanStatus");
}

fmi1Status FMI1_FUNCTION(fmiGetStringStatus)(fmi1Component c, const fmi1StatusKind s,
                                             fmi1String *value) {
    (void)s;
    (void)value;
    return unsupported(c, "fmiGetStringStatus");
}
