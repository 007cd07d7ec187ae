"""Portal forms: uploading an FMU and asking for a run.

The run form only gathers what the user typed and turns it into the API's request dict;
whether the request makes sense for the model is decided by simulations.params, as for the API.
"""

from __future__ import annotations

import json
import math
from typing import cast

from django import forms

from fmuengine.inspection import FMUSummary, output_variable_names, settable_variable_names
from simulations.models import Model

# Above this many settable variables a field each would make a page (and a POST) too large to
# use; such models get one "name = value" text box instead.
MAX_START_VALUE_FIELDS = 100

_INTEGER_TYPES = {
    "Integer",
    "Enumeration",
    "Int8",
    "UInt8",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
}
_FLOAT_TYPES = {"Real", "Float32", "Float64"}
# Types a start value cannot be typed into a form for.
_UNSETTABLE_TYPES = {"Binary", "Clock"}

# The form's names for the API's request keys, in the order the page shows them.
_REQUEST_FIELDS = ("fmi_type", "start_time", "stop_time", "output_interval")


class ModelUploadForm(forms.Form):
    file = forms.FileField(
        label="FMU file",
        help_text="A Functional Mock-up Unit (.fmu) for FMI 1.0, 2.0 or 3.0 with a Linux binary.",
        widget=forms.ClearableFileInput(attrs={"accept": ".fmu"}),
    )


class ExperimentFields(forms.Form):
    """The fields a run and a study's base share, first on both forms (SimulationRunForm
    gives them the model's choices and defaults)."""

    fmi_type = forms.ChoiceField(label="Interface")
    start_time = forms.FloatField(label="Start time (s)", required=False)
    stop_time = forms.FloatField(label="Stop time (s)", required=False)
    output_interval = forms.FloatField(
        label="Output interval (s)",
        required=False,
        min_value=1e-12,
        help_text="Time between output points. Empty: chosen by the solver.",
    )
    output = forms.MultipleChoiceField(
        label="Output variables",
        required=False,
        help_text="Hold Ctrl (⌘ on a Mac) to select several. Empty: the model's outputs.",
    )


class SimulationRunForm(ExperimentFields):
    """One run of ``model``; start-value fields are built from the model's settable variables."""

    start_values_text = forms.CharField(
        label="Start values",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="One per line as name = value, e.g. e = 0.8",
    )

    def __init__(self, *args, model: Model, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = model
        self.summary = FMUSummary.from_json(model.summary)
        self.variables = {variable.name: variable for variable in self.summary.variables}
        self.start_values_errors: list[str] = []

        # self.fields holds copies of the declared fields, typed only as Field.
        fmi_type = cast(forms.ChoiceField, self.fields["fmi_type"])
        runnable = list(model.runnable_fmi_types)
        fmi_type.choices = [(name, name) for name in runnable]
        fmi_type.initial = (
            "CoSimulation" if "CoSimulation" in runnable else (runnable[0] if runnable else None)
        )

        experiment = model.default_experiment or {}
        for name in ("start_time", "stop_time"):
            default = experiment.get(name)
            if default is not None:
                self.fields[name].initial = default
        if experiment.get("step_size"):
            self.fields["output_interval"].widget.attrs["placeholder"] = (
                f"{experiment['step_size']:g} (model's step size)"
            )

        outputs = [
            variable.name
            for variable in self.summary.variables
            if variable.causality != "independent" and variable.type not in _UNSETTABLE_TYPES
        ]
        output = cast(forms.MultipleChoiceField, self.fields["output"])
        output.choices = [(name, name) for name in outputs]
        output.initial = output_variable_names(self.summary)
        output.widget.attrs["size"] = max(4, min(len(outputs), 12))

        self.settable_variables = self._settable_variables()
        self.start_value_field_names: list[str] = []
        if len(self.settable_variables) <= MAX_START_VALUE_FIELDS:
            del self.fields["start_values_text"]
            for index, variable in enumerate(self.settable_variables):
                field_name = f"start_{index}"
                self.fields[field_name] = _start_value_field(variable)
                self.start_value_field_names.append(field_name)

    def _settable_variables(self) -> list:
        fmi_type = self.fields["fmi_type"].initial
        if fmi_type not in self.summary.fmi_types:
            return []
        # The rule does not depend on the interface, so one list serves every choice.
        settable = settable_variable_names(self.summary, fmi_type=fmi_type)
        return [
            variable
            for variable in self.summary.variables
            if variable.name in settable and variable.type not in _UNSETTABLE_TYPES
        ]

    @property
    def start_value_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.start_value_field_names]

    @property
    def uses_start_values_text(self) -> bool:
        return "start_values_text" in self.fields

    def clean_start_values_text(self) -> dict:
        text = self.cleaned_data.get("start_values_text") or ""
        values: dict = {}
        problems = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, separator, raw_value = line.partition("=")
            name, raw_value = name.strip(), raw_value.strip()
            if not separator or not name:
                problems.append(f"Line {number}: write name = value.")
                continue
            variable = self.variables.get(name)
            try:
                values[name] = _parse_start_value(raw_value, variable.type if variable else None)
            except ValueError as exc:
                problems.append(f"Line {number} ({name}): {exc}")
        if problems:
            raise forms.ValidationError(problems)
        return values

    def simulation_request(self) -> dict:
        """The run as the API's request dict (only what the user gave; the rest are defaults)."""
        data = self.cleaned_data
        request = {name: data[name] for name in _REQUEST_FIELDS if data.get(name) not in (None, "")}
        if self.uses_start_values_text:
            start_values = dict(data.get("start_values_text") or {})
        else:
            start_values = {
                variable.name: data[field_name]
                for variable, field_name in zip(
                    self.settable_variables, self.start_value_field_names, strict=True
                )
                if data.get(field_name) not in (None, "")
            }
        if start_values:
            request["start_values"] = start_values
        if data.get("output"):
            request["output"] = list(data["output"])
        return request

    def add_request_errors(self, errors: dict[str, list[str]]) -> None:
        """Show the field errors of an InvalidSimulationRequest next to the fields they concern."""
        for field, messages in errors.items():
            if field == "start_values":
                if self.uses_start_values_text:
                    self.add_error("start_values_text", messages)
                else:
                    self.start_values_errors.extend(messages)
            elif field in self.fields:
                self.add_error(field, messages)
            else:
                self.add_error(None, [f"{field}: {message}" for message in messages])


def _start_value_field(variable) -> forms.Field:
    label = variable.name
    help_parts = [part for part in (variable.description, _unit_hint(variable)) if part]
    options = {
        "label": label,
        "required": False,
        "help_text": " · ".join(help_parts),
    }
    placeholder = variable.start if variable.start is not None else ""
    if variable.type == "Boolean":
        default = "model default"
        if variable.start is not None:
            default = f"model default ({variable.start})"
        return forms.TypedChoiceField(
            choices=[("", default), ("true", "true"), ("false", "false")],
            coerce=lambda value: value == "true",
            empty_value=None,
            **options,
        )
    field: forms.Field
    if variable.type in _INTEGER_TYPES:
        field = forms.IntegerField(**options)
    elif variable.type in _FLOAT_TYPES:
        field = forms.FloatField(**options)
        field.widget.attrs["step"] = "any"
    else:
        field = forms.CharField(max_length=10_000, **options)
    field.widget.attrs["placeholder"] = placeholder
    return field


def _unit_hint(variable) -> str:
    return f"unit {variable.unit}" if variable.unit else ""


def _parse_start_value(raw_value: str, variable_type: str | None):
    """A typed start value from text; unknown names keep a best guess (the service refuses them)."""
    if variable_type == "Boolean" or (variable_type is None and raw_value in ("true", "false")):
        if raw_value.lower() in ("true", "1"):
            return True
        if raw_value.lower() in ("false", "0"):
            return False
        raise ValueError("a Boolean is true or false.")
    if variable_type in _INTEGER_TYPES:
        try:
            return int(raw_value)
        except ValueError:
            raise ValueError("an integer is expected.") from None
    if variable_type in _FLOAT_TYPES or variable_type is None:
        try:
            value = float(raw_value)
        except ValueError:
            if variable_type is None:
                return raw_value
            raise ValueError("a number is expected.") from None
        if not math.isfinite(value):
            raise ValueError("a finite number is expected.")
        return value
    # String variables: quotes are optional.
    if len(raw_value) >= 2 and raw_value[0] == raw_value[-1] == '"':
        try:
            return json.loads(raw_value)
        except ValueError:
            return raw_value[1:-1]
    return raw_value
