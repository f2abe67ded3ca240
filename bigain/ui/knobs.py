"""Method choice and method settings, built from the registry (:data:`bigain.methods.METHODS`).

Every compressing method gets a settings group with one widget per ``knob=True`` parameter: a slider
for a bounded number, a checkbox for a flag, a dropdown for choices, a text box accepting "none" for an
optional number. Labels and help come from the :class:`~bigain.methods.Param`. Widgets are keyed
``<method>_<param>`` (``tome_ratio``, ``iekvd_alpha_end``): events bind them by that name, and the API
shows it. A method registered before the page is built appears with its settings; nothing here names one.
"""

from __future__ import annotations

import html
import math
from typing import Any

import gradio as gr

from bigain.methods import METHODS, Method, Param
from bigain.ui.checked import (
    CheckedCheckbox,
    CheckedCheckboxGroup,
    CheckedDropdown,
    CheckedRadio,
    CheckedSlider,
    CheckedTextbox,
    check_number,
    fail,
)

OURS = ("lgtm", "iekvd")  # BiGain's own methods, marked in the lists
PAPER = ("tome", "lgtm", "todo", "iekvd")  # the paper's four
#: checked when the page opens: ToMe against BiGain's L-GTM (the baseline always runs first), what the
#: default comparison on the glyph models can afford within 20 s on 2 CPUs (docs/app.md)
DEFAULT = ("tome", "lgtm")
#: checked in the classification tab: the same pair
CLASSIFY = DEFAULT


def compressing() -> list[type[Method]]:
    return [c for c in METHODS.values() if c.compresses]


def method_choices() -> list[tuple[str, str]]:
    """Every compressing method of the registry (read when the page is built); BiGain's own are marked."""
    return [(f"{c.title} (BiGain)" if c.name in OURS else c.title, c.name) for c in compressing()]


def knob_params(cls: type[Method]) -> list[Param]:
    return [p for p in cls.parameters() if p.knob]


def key(cls: type[Method], p: Param) -> str:
    return f"{cls.name}_{p.name}"


def keys() -> list[str]:
    return [key(c, p) for c in compressing() for p in knob_params(c)]


def defaults() -> dict[str, Any]:
    """API defaults of every knob (what the widget starts at)."""
    return {key(c, p): _initial(p) for c in compressing() for p in knob_params(c)}


def _initial(p: Param) -> Any:
    if p.optional and p.kind in (int, float):
        return "none" if p.default is None else f"{p.default:g}"
    return p.default


def _step(p: Param) -> float:
    if p.kind is int:
        return 1
    span = (p.hi or 1) - (p.lo or 0)
    return 0.01 if span <= 1 else 0.05 if span <= 10 else 0.5


def label_of(cls: type[Method], p: Param) -> str:
    """ "ToMe merge ratio": the method's title and the parameter's label (errors and the API name both)."""
    text = p.label[:1].lower() + p.label[1:] if p.label[1:2].islower() else p.label
    return f"{cls.title} {text}"


def widget(cls: type[Method], p: Param, prefix: str) -> gr.components.Component:
    """The widget of one parameter (labels say the method: the API and error messages name it)."""
    label = label_of(cls, p)
    info = p.help or None
    elem_id = f"{prefix}-{key(cls, p)}"
    if p.optional and p.kind in (int, float):
        return CheckedTextbox(
            value=_initial(p),
            label=label,
            elem_id=elem_id,
            max_lines=1,
            info=f'{p.help} ({p.allowed()}; type "none" for the default)',
        )
    if p.kind is bool:
        return CheckedCheckbox(value=bool(p.default), label=label, info=info, elem_id=elem_id)
    if p.choices is not None:
        return CheckedDropdown(list(p.choices), value=p.default, label=label, info=info, elem_id=elem_id)
    if p.kind in (int, float) and p.lo is not None and p.hi is not None:
        return CheckedSlider(
            p.lo, p.hi, value=p.default, step=_step(p), label=label, info=info, elem_id=elem_id, integer=p.kind is int
        )
    return CheckedTextbox(value=str(p.default), label=label, info=info, elem_id=elem_id, max_lines=1)


def method_picker(prefix: str, single: bool = False, value: tuple[str, ...] = DEFAULT) -> Any:
    if single:
        return CheckedRadio(
            method_choices(),
            value="lgtm" if "lgtm" in METHODS else method_choices()[0][1],
            label="Method",
            elem_id=f"{prefix}-methods",
        )
    return CheckedCheckboxGroup(
        method_choices(),
        value=[m for m in value if m in METHODS],
        label="Methods (the baseline always runs first)",
        elem_id=f"{prefix}-methods",
    )


def settings_panel(prefix: str) -> dict[str, gr.components.Component]:
    """The folded settings of every compressing method: {knob key: widget}."""
    out: dict[str, gr.components.Component] = {}
    with gr.Accordion("Method settings", open=False, elem_id=f"{prefix}-settings"):
        for cls in compressing():
            params = knob_params(cls)
            if not params:
                continue
            with gr.Group(elem_id=f"{prefix}-settings-{cls.name}"):
                gr.Markdown(
                    f"**{html.escape(cls.title)}** · {html.escape((cls.__doc__ or '').strip().splitlines()[0])}"
                    if cls.__doc__
                    else f"**{html.escape(cls.title)}**",
                    elem_classes=["note"],
                )
                with gr.Row():
                    for p in params:
                        out[key(cls, p)] = widget(cls, p, prefix)
    return out


def _value(cls: type[Method], p: Param, v: Any) -> Any:
    """A widget's value as the parameter's type (sliders send floats; the optional box sends text)."""
    label = label_of(cls, p)
    if p.optional and p.kind in (int, float):
        text = "" if v is None else str(v).strip().lower()
        if text in ("", "none"):
            return None
        try:
            num = float(text)
        except ValueError:
            raise fail(label, f'{p.allowed().removesuffix(" or None")} or "none"', v) from None
        v = num if math.isfinite(num) else v
    if p.kind in (int, float):
        num = check_number(label, v, integer=p.kind is int, lo=p.lo, hi=p.hi)
        return int(num) if p.kind is int else float(num)
    if p.kind is bool and not isinstance(v, bool):
        raise fail(label, "true or false", v)
    if p.kind is str and (not isinstance(v, str) or (p.choices is not None and v not in p.choices)):
        raise fail(label, p.allowed(), v)
    return v


def settings(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{method: {param: value}} from the knob values by key (missing keys keep the defaults)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in compressing():
        for p in knob_params(cls):
            k = key(cls, p)
            if k in values:
                out.setdefault(cls.name, {})[p.name] = _value(cls, p, values[k])
    return out
