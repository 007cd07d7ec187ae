"""The portal's "New study" form: what the user picked, turned into the API's study request.

As for runs (simulations.forms), the form only gathers and types what was typed; whether
the study makes sense for the model (names, ranges, sizes, statistics) is decided by the
study services, for the portal exactly as for the API, and their field errors are shown
next to the parameter or field they name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms

from fmuengine.inspection import VariableInfo
from simulations.forms import ExperimentFields, SimulationRunForm, _parse_start_value
from simulations.models import Model
from simulations.studies.designs import DesignKind, Distribution, settable_variables
from simulations.studies.summary import Statistic

# A row per variable a design may vary; past this many the page (and its POST) would be
# too large to use, and the API is the way.
MAX_PARAMETER_ROWS = 200

DESIGN_KIND_LABELS = {
    DesignKind.GRID: "Grid (every combination of lists or ranges)",
    DesignKind.LHS: "Latin hypercube (lhs)",
    DesignKind.SOBOL: "Sobol' sequence",
    DesignKind.HALTON: "Halton sequence",
    DesignKind.MONTE_CARLO: "Monte Carlo (distributions)",
}
_SAMPLED = (DesignKind.LHS, DesignKind.SOBOL, DesignKind.HALTON, DesignKind.MONTE_CARLO)


@dataclass
class ParameterRow:
    """One variable's row: its fields, by their role, and the errors the service named."""

    variable: VariableInfo
    prefix: str
    form: forms.Form
    errors: list[str]

    def __getitem__(self, role: str) -> forms.BoundField:
        return self.form[f"{self.prefix}_{role}"]

    @property
    def vary(self) -> forms.BoundField:
        return self["vary"]


class StudyForm(ExperimentFields):
    """A study of ``model``: the run fields every case shares, a design, and statistics."""

    kind = forms.ChoiceField(
        label="Design",
        choices=[(kind.value, label) for kind, label in DESIGN_KIND_LABELS.items()],
        initial=DesignKind.GRID.value,
    )
    samples = forms.IntegerField(
        label="Samples",
        required=False,
        min_value=1,
        initial=64,
        help_text="Sampled designs: how many cases.",
    )
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        min_value=0,
        help_text="Sampled designs: the same seed gives the same cases. Empty: drawn for you.",
    )
    statistics = forms.MultipleChoiceField(
        label="Statistics",
        required=False,
        choices=[(statistic.value, statistic.value) for statistic in Statistic],
        initial=[Statistic.FINAL.value],
        widget=forms.CheckboxSelectMultiple,
        help_text="Computed per case for every output. None ticked: the final values.",
    )

    def __init__(self, *args, model: Model, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = model
        # The experiment and output fields are a run's: the same choices and defaults.
        run_form = SimulationRunForm(model=model)
        for name in ExperimentFields.base_fields:
            self.fields[name] = run_form.fields[name]
        settable = list(settable_variables(model).values())
        self.parameter_rows: list[ParameterRow] = []
        for index, variable in enumerate(settable):
            if index >= MAX_PARAMETER_ROWS:
                break
            prefix = f"p{index}"
            for role, field in _parameter_fields(variable).items():
                self.fields[f"{prefix}_{role}"] = field
            self.parameter_rows.append(ParameterRow(variable, prefix, self, []))
        self.too_many_parameters = len(settable) > MAX_PARAMETER_ROWS

    # --- the request -------------------------------------------------------------------

    def study_request(self) -> dict[str, Any]:
        """The study as the API's request dict (base, design, summary)."""
        data = self.cleaned_data
        base = {
            name: data[name]
            for name in ("fmi_type", "start_time", "stop_time", "output_interval")
            if data.get(name) not in (None, "")
        }
        if data.get("output"):
            base["output"] = list(data["output"])
        kind = DesignKind(data["kind"])
        parameters = {
            row.variable.name: self._parameter_spec(row, kind)
            for row in self.parameter_rows
            if data.get(f"{row.prefix}_vary")
        }
        design: dict[str, Any] = {
            "kind": kind.value,
            "parameters": parameters,
            "parameter_order": list(parameters),
        }
        if kind in _SAMPLED:
            design["samples"] = data.get("samples")
            if data.get("seed") is not None:
                design["seed"] = data["seed"]
        statistics = list(data.get("statistics") or [])
        return {"base": base, "design": design, "summary": statistics or None}

    def _parameter_spec(self, row: ParameterRow, kind: DesignKind) -> Any:
        data = self.cleaned_data

        def value(role: str) -> Any:
            return data.get(f"{row.prefix}_{role}")

        if kind == DesignKind.GRID:
            listed = value("values")
            if listed:
                return listed
            return {"start": value("low"), "stop": value("high"), "num": value("num")}
        if kind != DesignKind.MONTE_CARLO:
            return {"low": value("low"), "high": value("high")}
        distribution = value("distribution") or Distribution.UNIFORM.value
        if distribution == Distribution.NORMAL:
            spec = {"distribution": distribution, "mean": value("mean"), "std": value("std")}
            bounds = {role: value(role) for role in ("low", "high") if value(role) is not None}
            return {**spec, **bounds}
        if distribution == Distribution.LOGNORMAL:
            return {"distribution": distribution, "mean": value("mean"), "sigma": value("std")}
        return {"distribution": distribution, "low": value("low"), "high": value("high")}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not any(data.get(f"{row.prefix}_vary") for row in self.parameter_rows):
            raise forms.ValidationError("Tick at least one parameter to vary.")
        for row in self.parameter_rows:
            if not data.get(f"{row.prefix}_vary"):
                # An unticked row's typos are no error: it is not part of the study.
                for name in list(self.errors):
                    if name.startswith(row.prefix + "_"):
                        del self.errors[name]
        return data

    def add_request_errors(self, errors: dict[str, list[str]]) -> None:
        """Show an InvalidStudyRequest's errors next to what they name: a parameter's row,
        a base field, the size or the statistics; the rest above the form."""
        rows = {row.variable.name: row for row in self.parameter_rows}
        for path, messages in errors.items():
            target = _field_for_path(path, rows)
            if isinstance(target, ParameterRow):
                target.errors.extend(messages)
            elif target and target in self.fields:
                self.add_error(target, messages)
            else:
                self.add_error(None, [f"{path}: {message}" for message in messages])


def _field_for_path(path: str, rows: dict[str, ParameterRow]) -> ParameterRow | str | None:
    parts = path.split(".")
    if parts[0] == "base" and len(parts) > 1:
        return parts[1]
    if parts[0] == "design" and len(parts) > 2 and parts[1] == "parameters":
        # The parameter's name may contain dots itself: the longest known prefix wins.
        rest = path[len("design.parameters.") :]
        for name in sorted(rows, key=len, reverse=True):
            if rest == name or rest.startswith(name + "."):
                return rows[name]
        return None
    if path in ("design.samples", "design.seed"):
        return parts[1]
    if parts[0] == "summary":
        return "statistics"
    return None


class _ListOfValues(forms.Field):
    """A comma-separated list of the variable's values (grid designs)."""

    widget = forms.TextInput
    max_length = 10_000

    def __init__(self, *, variable: VariableInfo, **kwargs) -> None:
        super().__init__(**kwargs)
        self.variable_type = variable.type

    def to_python(self, value: Any) -> list[Any]:
        text = value.strip() if isinstance(value, str) else ""
        if len(text) > self.max_length:
            raise forms.ValidationError(f"At most {self.max_length} characters.")
        if not text:
            return []
        values = []
        for item in text.split(","):
            try:
                values.append(_parse_start_value(item.strip(), self.variable_type))
            except ValueError as exc:
                raise forms.ValidationError(f"{item.strip()!r}: {exc}") from None
        return values


def _parameter_fields(variable: VariableInfo) -> dict[str, forms.Field]:
    def number(label: str) -> forms.FloatField:
        field = forms.FloatField(label=label, required=False)
        field.widget.attrs.update({"step": "any", "inputmode": "decimal"})
        return field

    start = variable.start if variable.start is not None else ""
    values = _ListOfValues(variable=variable, label="Values", required=False)
    values.widget.attrs["placeholder"] = f"e.g. {start}" if start != "" else "e.g. 1, 2, 3"
    num = forms.IntegerField(label="Points", required=False, min_value=1, initial=3)
    distribution = forms.ChoiceField(
        label="Distribution",
        required=False,
        choices=[(item.value, item.value) for item in Distribution],
    )
    return {
        "vary": forms.BooleanField(label=f"Vary {variable.name}", required=False),
        "values": values,
        "low": number("From / low"),
        "high": number("To / high"),
        "num": num,
        "distribution": distribution,
        "mean": number("Mean"),
        "std": number("Std / sigma"),
    }
