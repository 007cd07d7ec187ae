/*
 * Bouncing ball, FMI 3.0 Co-Simulation: the physics of bouncing_ball.c
 * (fixed-step internal Euler with state events on h). Every function the FMI
 * 3.0 header declares is exported; those the model does not support log an
 * error and return fmi3Error.
 *
 * Value references: 0 time, 1 h, 2 v, 3 g, 4 e.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmi3Functions.h"

#ifndef MODEL_GUID
#error "MODEL_GUID must be defined by the build"
#endif

enum { TIME, H, V, G, E, N_VARIABLES };

#define V_MIN 0.1
#define INTERNAL_STEP 1e-3

typedef struct {
    double values[N_VARIABLES];
    int resting;
    char instance_name[128];
    fmi3InstanceEnvironment environment;
    fmi3LogMessageCallback log_message;
} Instance;

static void log_error(Instance *instance, const char *fmt, const char *argument) {
    char message[512];
    snprintf(message, sizeof(message), fmt, argument);
    if (instance && instance->log_message) {
        instance->log_message(instance->environment, fmi3Error, "logStatusError", message);
    }
}

static void set_defaults(Instance *instance) {
    instance->values[TIME] = 0.0;
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

static fmi3Status unsupported(fmi3Instance instance, const char *function) {
    log_error(instance, "%s is not supported", function);
    return fmi3Error;
}

/* ---- inquire version, logging, instantiation ---- */

const char *fmi3GetVersion(void) { return fmi3Version; }

fmi3Status fmi3SetDebugLogging(fmi3Instance instance, fmi3Boolean loggingOn, size_t nCategories,
                               const fmi3String categories[]) {
    (void)instance;
    (void)loggingOn;
    (void)nCategories;
    (void)categories;
    return fmi3OK;
}

fmi3Instance fmi3InstantiateModelExchange(fmi3String instanceName, fmi3String instantiationToken,
                                          fmi3String resourcePath, fmi3Boolean visible,
                                          fmi3Boolean loggingOn,
                                          fmi3InstanceEnvironment instanceEnvironment,
                                          fmi3LogMessageCallback logMessage) {
    (void)instanceName;
    (void)instantiationToken;
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    if (logMessage) {
        logMessage(instanceEnvironment, fmi3Error, "logStatusError",
                   "Model Exchange is not supported");
    }
    return NULL;
}

fmi3Instance fmi3InstantiateCoSimulation(
    fmi3String instanceName, fmi3String instantiationToken, fmi3String resourcePath,
    fmi3Boolean visible, fmi3Boolean loggingOn, fmi3Boolean eventModeUsed,
    fmi3Boolean earlyReturnAllowed, const fmi3ValueReference requiredIntermediateVariables[],
    size_t nRequiredIntermediateVariables, fmi3InstanceEnvironment instanceEnvironment,
    fmi3LogMessageCallback logMessage, fmi3IntermediateUpdateCallback intermediateUpdate) {
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    (void)eventModeUsed;
    (void)earlyReturnAllowed;
    (void)requiredIntermediateVariables;
    (void)nRequiredIntermediateVariables;
    (void)intermediateUpdate;
    Instance *instance = calloc(1, sizeof(Instance));
    if (!instance) return NULL;
    instance->environment = instanceEnvironment;
    instance->log_message = logMessage;
    snprintf(instance->instance_name, sizeof(instance->instance_name), "%s",
             instanceName ? instanceName : "");
    if (!instantiationToken || strcmp(instantiationToken, MODEL_GUID) != 0) {
        log_error(instance, "instantiationToken mismatch: expected %s", MODEL_GUID);
        free(instance);
        return NULL;
    }
    set_defaults(instance);
    return instance;
}

fmi3Instance fmi3InstantiateScheduledExecution(
    fmi3String instanceName, fmi3String instantiationToken, fmi3String resourcePath,
    fmi3Boolean visible, fmi3Boolean loggingOn, fmi3InstanceEnvironment instanceEnvironment,
    fmi3LogMessageCallback logMessage, fmi3ClockUpdateCallback clockUpdate,
    fmi3LockPreemptionCallback lockPreemption, fmi3UnlockPreemptionCallback unlockPreemption) {
    (void)instanceName;
    (void)instantiationToken;
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    (void)clockUpdate;
    (void)lockPreemption;
    (void)unlockPreemption;
    if (logMessage) {
        logMessage(instanceEnvironment, fmi3Error, "logStatusError",
                   "Scheduled Execution is not supported");
    }
    return NULL;
}

void fmi3FreeInstance(fmi3Instance instance) { free(instance); }

/* ---- modes ---- */

fmi3Status fmi3EnterInitializationMode(fmi3Instance instance, fmi3Boolean toleranceDefined,
                                       fmi3Float64 tolerance, fmi3Float64 startTime,
                                       fmi3Boolean stopTimeDefined, fmi3Float64 stopTime) {
    (void)toleranceDefined;
    (void)tolerance;
    (void)stopTimeDefined;
    (void)stopTime;
    ((Instance *)instance)->values[TIME] = startTime;
    return fmi3OK;
}

fmi3Status fmi3ExitInitializationMode(fmi3Instance instance) {
    Instance *self = instance;
    if (self->values[E] < 0 || self->values[E] > 1) {
        log_error(self, "%s must be in [0, 1]", "e");
        return fmi3Error;
    }
    return fmi3OK;
}

fmi3Status fmi3EnterEventMode(fmi3Instance instance) { (void)instance; return fmi3OK; }

fmi3Status fmi3Terminate(fmi3Instance instance) { (void)instance; return fmi3OK; }

fmi3Status fmi3Reset(fmi3Instance instance) {
    set_defaults(instance);
    return fmi3OK;
}

/* ---- getters and setters ---- */

fmi3Status fmi3GetFloat64(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                          size_t nValueReferences, fmi3Float64 values[], size_t nValues) {
    Instance *self = instance;
    if (nValues < nValueReferences) return fmi3Error;
    for (size_t k = 0; k < nValueReferences; k++) {
        if (valueReferences[k] >= N_VARIABLES) return fmi3Error;
        values[k] = self->values[valueReferences[k]];
    }
    return fmi3OK;
}

fmi3Status fmi3SetFloat64(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                          size_t nValueReferences, const fmi3Float64 values[], size_t nValues) {
    Instance *self = instance;
    if (nValues < nValueReferences) return fmi3Error;
    for (size_t k = 0; k < nValueReferences; k++) {
        if (valueReferences[k] == TIME || valueReferences[k] >= N_VARIABLES) return fmi3Error;
        self->values[valueReferences[k]] = values[k];
    }
    return fmi3OK;
}

/* The model has no variables of these types: only empty requests succeed. */
#define NO_VARIABLES_GETTER(NAME, TYPE)                                                        \
    fmi3Status NAME(fmi3Instance instance, const fmi3ValueReference valueReferences[],         \
                    size_t nValueReferences, TYPE values[], size_t nValues) {                  \
        (void)valueReferences;                                                                 \
        (void)values;                                                                          \
        (void)nValues;                                                                         \
        return nValueReferences == 0 ? fmi3OK : unsupported(instance, #NAME);                  \
    }
#define NO_VARIABLES_SETTER(NAME, TYPE)                                                        \
    fmi3Status NAME(fmi3Instance instance, const fmi3ValueReference valueReferences[],         \
                    size_t nValueReferences, const TYPE values[], size_t nValues) {            \
        (void)valueReferences;                                                                 \
        (void)values;                                                                          \
        (void)nValues;                                                                         \
        return nValueReferences == 0 ? fmi3OK : unsupported(instance, #NAME);                  \
    }

NO_VARIABLES_GETTER(fmi3GetFloat32, fmi3Float32)
NO_VARIABLES_GETTER(fmi3GetInt8, fmi3Int8)
NO_VARIABLES_GETTER(fmi3GetUInt8, fmi3UInt8)
NO_VARIABLES_GETTER(fmi3GetInt16, fmi3Int16)
NO_VARIABLES_GETTER(fmi3GetUInt16, fmi3UInt16)
NO_VARIABLES_GETTER(fmi3GetInt32, fmi3Int32)
NO_VARIABLES_GETTER(fmi3GetUInt32, fmi3UInt32)
NO_VARIABLES_GETTER(fmi3GetInt64, fmi3Int64)
NO_VARIABLES_GETTER(fmi3GetUInt64, fmi3UInt64)
NO_VARIABLES_GETTER(fmi3GetBoolean, fmi3Boolean)
NO_VARIABLES_GETTER(fmi3GetString, fmi3String)
NO_VARIABLES_SETTER(fmi3SetFloat32, fmi3Float32)
NO_VARIABLES_SETTER(fmi3SetInt8, fmi3Int8)
NO_VARIABLES_SETTER(fmi3SetUInt8, fmi3UInt8)
NO_VARIABLES_SETTER(fmi3SetInt16, fmi3Int16)
NO_VARIABLES_SETTER(fmi3SetUInt16, fmi3UInt16)
NO_VARIABLES_SETTER(fmi3SetInt32, fmi3Int32)
NO_VARIABLES_SETTER(fmi3SetUInt32, fmi3UInt32)
NO_VARIABLES_SETTER(fmi3SetInt64, fmi3Int64)
NO_VARIABLES_SETTER(fmi3SetUInt64, fmi3UInt64)
NO_VARIABLES_SETTER(fmi3SetBoolean, fmi3Boolean)
NO_VARIABLES_SETTER(fmi3SetString, fmi3String)

fmi3Status fmi3GetBinary(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                         size_t nValueReferences, size_t valueSizes[], fmi3Binary values[],
                         size_t nValues) {
    (void)valueReferences;
    (void)valueSizes;
    (void)values;
    (void)nValues;
    return nValueReferences == 0 ? fmi3OK : unsupported(instance, "fmi3GetBinary");
}

fmi3Status fmi3SetBinary(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                         size_t nValueReferences, const size_t valueSizes[],
                         const fmi3Binary values[], size_t nValues) {
    (void)valueReferences;
    (void)valueSizes;
    (void)values;
    (void)nValues;
    return nValueReferences == 0 ? fmi3OK : unsupported(instance, "fmi3SetBinary");
}

fmi3Status fmi3GetClock(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                        size_t nValueReferences, fmi3Clock values[]) {
    (void)valueReferences;
    (void)values;
    return nValueReferences == 0 ? fmi3OK : unsupported(instance, "fmi3GetClock");
}

fmi3Status fmi3SetClock(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                        size_t nValueReferences, const fmi3Clock values[]) {
    (void)valueReferences;
    (void)values;
    return nValueReferences == 0 ? fmi3OK : unsupported(instance, "fmi3SetClock");
}

/* ---- variable dependencies ---- */

fmi3Status fmi3GetNumberOfVariableDependencies(fmi3Instance instance,
                                               fmi3ValueReference valueReference,
                                               size_t *nDependencies) {
    (void)valueReference;
    (void)nDependencies;
    return unsupported(instance, "fmi3GetNumberOfVariableDependencies");
}

fmi3Status fmi3GetVariableDependencies(fmi3Instance instance, fmi3ValueReference dependent,
                                       size_t elementIndicesOfDependent[],
                                       fmi3ValueReference independents[],
                                       size_t elementIndicesOfIndependents[],
                                       fmi3DependencyKind dependencyKinds[], size_t nDependencies) {
    (void)dependent;
    (void)elementIndicesOfDependent;
    (void)independents;
    (void)elementIndicesOfIndependents;
    (void)dependencyKinds;
    (void)nDependencies;
    return unsupported(instance, "fmi3GetVariableDependencies");
}

/* ---- FMU state ---- */

fmi3Status fmi3GetFMUState(fmi3Instance instance, fmi3FMUState *FMUState) {
    (void)FMUState;
    return unsupported(instance, "fmi3GetFMUState");
}

fmi3Status fmi3SetFMUState(fmi3Instance instance, fmi3FMUState FMUState) {
    (void)FMUState;
    return unsupported(instance, "fmi3SetFMUState");
}

fmi3Status fmi3FreeFMUState(fmi3Instance instance, fmi3FMUState *FMUState) {
    (void)FMUState;
    return unsupported(instance, "fmi3FreeFMUState");
}

fmi3Status fmi3SerializedFMUStateSize(fmi3Instance instance, fmi3FMUState FMUState,
                                      size_t *size) {
    (void)FMUState;
    (void)size;
    return unsupported(instance, "fmi3SerializedFMUStateSize");
}

fmi3Status fmi3SerializeFMUState(fmi3Instance instance, fmi3FMUState FMUState,
                                 fmi3Byte serializedState[], size_t size) {
    (void)FMUState;
    (void)serializedState;
    (void)size;
    return unsupported(instance, "fmi3SerializeFMUState");
}

fmi3Status fmi3DeserializeFMUState(fmi3Instance instance, const fmi3Byte serializedState[],
                                   size_t size, fmi3FMUState *FMUState) {
    (void)serializedState;
    (void)size;
    (void)FMUState;
    return unsupported(instance, "fmi3DeserializeFMUState");
}

/* ---- partial derivatives ---- */

fmi3Status fmi3GetDirectionalDerivative(fmi3Instance instance, const fmi3ValueReference unknowns[],
                                        size_t nUnknowns, const fmi3ValueReference knowns[],
                                        size_t nKnowns, const fmi3Float64 seed[], size_t nSeed,
                                        fmi3Float64 sensitivity[], size_t nSensitivity) {
    (void)unknowns;
    (void)nUnknowns;
    (void)knowns;
    (void)nKnowns;
    (void)seed;
    (void)nSeed;
    (void)sensitivity;
    (void)nSensitivity;
    return unsupported(instance, "fmi3GetDirectionalDerivative");
}

fmi3Status fmi3GetAdjointDerivative(fmi3Instance instance, const fmi3ValueReference unknowns[],
                                    size_t nUnknowns, const fmi3ValueReference knowns[],
                                    size_t nKnowns, const fmi3Float64 seed[], size_t nSeed,
                                    fmi3Float64 sensitivity[], size_t nSensitivity) {
    (void)unknowns;
    (void)nUnknowns;
    (void)knowns;
    (void)nKnowns;
    (void)seed;
    (void)nSeed;
    (void)sensitivity;
    (void)nSensitivity;
    return unsupported(instance, "fmi3GetAdjointDerivative");
}

/* ---- configuration mode and clocks ---- */

fmi3Status fmi3EnterConfigurationMode(fmi3Instance instance) {
    return unsupported(instance, "fmi3EnterConfigurationMode");
}

fmi3Status fmi3ExitConfigurationMode(fmi3Instance instance) {
    return unsupported(instance, "fmi3ExitConfigurationMode");
}

fmi3Status fmi3GetIntervalDecimal(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                                  size_t nValueReferences, fmi3Float64 intervals[],
                                  fmi3IntervalQualifier qualifiers[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)intervals;
    (void)qualifiers;
    return unsupported(instance, "fmi3GetIntervalDecimal");
}

fmi3Status fmi3GetIntervalFraction(fmi3Instance instance,
                                   const fmi3ValueReference valueReferences[],
                                   size_t nValueReferences, fmi3UInt64 counters[],
                                   fmi3UInt64 resolutions[], fmi3IntervalQualifier qualifiers[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)counters;
    (void)resolutions;
    (void)qualifiers;
    return unsupported(instance, "fmi3GetIntervalFraction");
}

fmi3Status fmi3GetShiftDecimal(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                               size_t nValueReferences, fmi3Float64 shifts[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)shifts;
    return unsupported(instance, "fmi3GetShiftDecimal");
}

fmi3Status fmi3GetShiftFraction(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                                size_t nValueReferences, fmi3UInt64 counters[],
                                fmi3UInt64 resolutions[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)counters;
    (void)resolutions;
    return unsupported(instance, "fmi3GetShiftFraction");
}

fmi3Status fmi3SetIntervalDecimal(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                                  size_t nValueReferences, const fmi3Float64 intervals[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)intervals;
    return unsupported(instance, "fmi3SetIntervalDecimal");
}

fmi3Status fmi3SetIntervalFraction(fmi3Instance instance,
                                   const fmi3ValueReference valueReferences[],
                                   size_t nValueReferences, const fmi3UInt64 counters[],
                                   const fmi3UInt64 resolutions[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)counters;
    (void)resolutions;
    return unsupported(instance, "fmi3SetIntervalFraction");
}

fmi3Status fmi3SetShiftDecimal(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                               size_t nValueReferences, const fmi3Float64 shifts[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)shifts;
    return unsupported(instance, "fmi3SetShiftDecimal");
}

fmi3Status fmi3SetShiftFraction(fmi3Instance instance, const fmi3ValueReference valueReferences[],
                                size_t nValueReferences, const fmi3UInt64 counters[],
                                const fmi3UInt64 resolutions[]) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)counters;
    (void)resolutions;
    return unsupported(instance, "fmi3SetShiftFraction");
}

fmi3Status fmi3EvaluateDiscreteStates(fmi3Instance instance) { (void)instance; return fmi3OK; }

fmi3Status fmi3UpdateDiscreteStates(fmi3Instance instance, fmi3Boolean *discreteStatesNeedUpdate,
                                    fmi3Boolean *terminateSimulation,
                                    fmi3Boolean *nominalsOfContinuousStatesChanged,
                                    fmi3Boolean *valuesOfContinuousStatesChanged,
                                    fmi3Boolean *nextEventTimeDefined,
                                    fmi3Float64 *nextEventTime) {
    (void)instance;
    *discreteStatesNeedUpdate = fmi3False;
    *terminateSimulation = fmi3False;
    *nominalsOfContinuousStatesChanged = fmi3False;
    *valuesOfContinuousStatesChanged = fmi3False;
    *nextEventTimeDefined = fmi3False;
    *nextEventTime = 0.0;
    return fmi3OK;
}

/* ---- Model Exchange (not supported by this FMU) ---- */

fmi3Status fmi3EnterContinuousTimeMode(fmi3Instance instance) {
    return unsupported(instance, "fmi3EnterContinuousTimeMode");
}

fmi3Status fmi3CompletedIntegratorStep(fmi3Instance instance,
                                       fmi3Boolean noSetFMUStatePriorToCurrentPoint,
                                       fmi3Boolean *enterEventMode,
                                       fmi3Boolean *terminateSimulation) {
    (void)noSetFMUStatePriorToCurrentPoint;
    (void)enterEventMode;
    (void)terminateSimulation;
    return unsupported(instance, "fmi3CompletedIntegratorStep");
}

fmi3Status fmi3SetTime(fmi3Instance instance, fmi3Float64 time) {
    (void)time;
    return unsupported(instance, "fmi3SetTime");
}

fmi3Status fmi3SetContinuousStates(fmi3Instance instance, const fmi3Float64 continuousStates[],
                                   size_t nContinuousStates) {
    (void)continuousStates;
    (void)nContinuousStates;
    return unsupported(instance, "fmi3SetContinuousStates");
}

fmi3Status fmi3GetContinuousStateDerivatives(fmi3Instance instance, fmi3Float64 derivatives[],
                                             size_t nContinuousStates) {
    (void)derivatives;
    (void)nContinuousStates;
    return unsupported(instance, "fmi3GetContinuousStateDerivatives");
}

fmi3Status fmi3GetEventIndicators(fmi3Instance instance, fmi3Float64 eventIndicators[],
                                  size_t nEventIndicators) {
    (void)eventIndicators;
    (void)nEventIndicators;
    return unsupported(instance, "fmi3GetEventIndicators");
}

fmi3Status fmi3GetContinuousStates(fmi3Instance instance, fmi3Float64 continuousStates[],
                                   size_t nContinuousStates) {
    (void)continuousStates;
    (void)nContinuousStates;
    return unsupported(instance, "fmi3GetContinuousStates");
}

fmi3Status fmi3GetNominalsOfContinuousStates(fmi3Instance instance, fmi3Float64 nominals[],
                                             size_t nContinuousStates) {
    (void)nominals;
    (void)nContinuousStates;
    return unsupported(instance, "fmi3GetNominalsOfContinuousStates");
}

fmi3Status fmi3GetNumberOfEventIndicators(fmi3Instance instance, size_t *nEventIndicators) {
    (void)instance;
    *nEventIndicators = 0;
    return fmi3OK;
}

fmi3Status fmi3GetNumberOfContinuousStates(fmi3Instance instance, size_t *nContinuousStates) {
    (void)instance;
    *nContinuousStates = 0;
    return fmi3OK;
}

/* ---- Co-Simulation ---- */

fmi3Status fmi3EnterStepMode(fmi3Instance instance) { (void)instance; return fmi3OK; }

fmi3Status fmi3GetOutputDerivatives(fmi3Instance instance,
                                    const fmi3ValueReference valueReferences[],
                                    size_t nValueReferences, const fmi3Int32 orders[],
                                    fmi3Float64 values[], size_t nValues) {
    (void)valueReferences;
    (void)nValueReferences;
    (void)orders;
    (void)values;
    (void)nValues;
    return unsupported(instance, "fmi3GetOutputDerivatives");
}

fmi3Status fmi3DoStep(fmi3Instance instance, fmi3Float64 currentCommunicationPoint,
                      fmi3Float64 communicationStepSize,
                      fmi3Boolean noSetFMUStatePriorToCurrentPoint,
                      fmi3Boolean *eventHandlingNeeded, fmi3Boolean *terminateSimulation,
                      fmi3Boolean *earlyReturn, fmi3Float64 *lastSuccessfulTime) {
    (void)noSetFMUStatePriorToCurrentPoint;
    Instance *self = instance;
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
        x[TIME] = currentCommunicationPoint + (step + 1) * dt;
    }
    x[TIME] = currentCommunicationPoint + communicationStepSize;
    *eventHandlingNeeded = fmi3False;
    *terminateSimulation = fmi3False;
    *earlyReturn = fmi3False;
    *lastSuccessfulTime = x[TIME];
    return fmi3OK;
}

/* ---- Scheduled Execution (not supported) ---- */

fmi3Status fmi3ActivateModelPartition(fmi3Instance instance, fmi3ValueReference clockReference,
                                      fmi3Float64 activationTime) {
    (void)clockReference;
    (void)activationTime;
    return unsupported(instance, "fmi3ActivateModelPartition");
}
