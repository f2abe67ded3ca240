"""Gradio components that check what they are sent before the event runs.

Each one's ``preprocess`` turns any bad payload into ``gr.Error("<Label> must be …")``: the visitor (or
an API client) reads which field is wrong and what is allowed, never Gradio's generic "the app has not
enabled verbose error reporting". Types are checked, not coerced: a seed of 2.5, "abc" or NaN is an
error naming the field. Images arrive as file paths and are decoded here with
:func:`bigain.images.read_image` (header checked before decoding: empty, truncated, HTML, huge).
Every echoed value is HTML-escaped and cut short.
"""

from __future__ import annotations

import html
import inspect
import math
from typing import Any

import gradio as gr
from gradio import component_meta

from bigain.errors import BigainError
from bigain.images import read_image

MAX_TEXT = 4000  # characters a text field accepts


#: Gradio's component metaclass writes a ``.pyi`` stub next to the source of every component subclass (for
#: custom-component packages); these are plain subclasses, so it is switched off while they are defined.
_write_stub = component_meta.create_or_modify_pyi
component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


class _Checked:
    """Mixin: the component is drawn as its Gradio base class (same widget, same props: subclasses that
    add constructor arguments get their base's signature, which Gradio reads the props from)."""

    def _gradio_base(self) -> type:
        cls = self if isinstance(self, type) else type(self)
        return next(c for c in cls.__mro__[1:] if c.__module__.startswith("gradio."))

    def get_block_name(self) -> str:
        return self._gradio_base().__name__.lower()

    def get_block_class(self) -> str:
        return self._gradio_base().__name__.lower()


def show(v: Any, limit: int = 40) -> str:
    """A short, HTML-safe rendering of a value a visitor sent."""
    text = repr(v) if isinstance(v, str) else f"{type(v).__name__} {v!r}" if v is not None else "nothing"
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…", quote=False)


def fail(label: str | None, allowed: str, got: Any) -> gr.Error:
    return gr.Error(f"{html.escape(label or 'This field')} must be {allowed}, got {show(got)}.", print_exception=False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{_num(lo)}, {_num(hi)}]"
    return f" ≥ {_num(lo)}" if lo is not None else f" ≤ {_num(hi)}" if hi is not None else ""


def check_number(
    label: str | None, v: Any, *, integer: bool, lo: float | None, hi: float | None, optional: bool = False
) -> int | float | None:
    """``v`` if it is a finite real number (a whole one if ``integer``) in [lo, hi]; a gr.Error otherwise."""
    what = ("a whole number" if integer else "a number") + _range(lo, hi) + (" or empty" if optional else "")
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise fail(label, what, v)
    if integer and v != int(v):
        raise fail(label, what, v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise fail(label, what, v)
    return int(v) if integer else float(v)


class CheckedNumber(_Checked, gr.Number):
    """A number box: ``integer`` refuses 2.5 (instead of rounding it), ``optional`` allows empty (None)."""

    def __init__(self, *args: Any, integer: bool = False, optional: bool = False, **kwargs: Any) -> None:
        self.integer, self.optional = integer, optional
        kwargs["precision"] = 0 if integer else None
        super().__init__(*args, **kwargs)

    def preprocess(self, payload: Any) -> int | float | None:
        return check_number(
            self.label, payload, integer=self.integer, lo=self.minimum, hi=self.maximum, optional=self.optional
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "integer" if self.integer else "number"}


class CheckedSlider(_Checked, gr.Slider):
    """A slider whose value must be a number in its range (a whole one when ``integer``)."""

    def __init__(self, minimum: float = 0, maximum: float = 100, value: Any = None, *, integer: bool = False,
                 **kwargs: Any) -> None:  # fmt: skip
        # positional arguments named here: Gradio's constructor wrapper binds them by this signature
        self.integer = integer
        super().__init__(minimum=minimum, maximum=maximum, value=value, **kwargs)

    def preprocess(self, payload: Any) -> int | float:
        return check_number(self.label, payload, integer=self.integer, lo=self.minimum, hi=self.maximum)

    def api_info(self) -> dict[str, Any]:  # API clients (and MCP tools) see whole-number knobs as integers
        info = super().api_info()
        return {**info, "type": "integer"} if self.integer else info


class CheckedCheckbox(_Checked, gr.Checkbox):
    def preprocess(self, payload: Any) -> bool:
        if not isinstance(payload, bool):
            raise fail(self.label, "true or false", payload)
        return payload


class CheckedTextbox(_Checked, gr.Textbox):
    """Text (None counts as empty), at most :data:`MAX_TEXT` characters."""

    def preprocess(self, payload: Any) -> str:
        if payload is None:
            return ""
        if not isinstance(payload, str):
            raise fail(self.label, "text", payload)
        if len(payload) > MAX_TEXT:
            raise gr.Error(
                f"{html.escape(self.label or 'Text')} must be at most {MAX_TEXT} characters, got {len(payload)}.",
                print_exception=False,
            )
        return payload


def _values(choices: Any) -> list[Any]:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in choices or []]


class CheckedDropdown(_Checked, gr.Dropdown):
    """One of its choices (or any text when ``allow_custom_value``); never None."""

    def preprocess(self, payload: Any) -> Any:
        values = _values(self.choices)
        allowed = "one of " + ", ".join(map(str, values[:12])) + (" …" if len(values) > 12 else "")
        if self.multiselect:
            if not isinstance(payload, list) or any(v not in values for v in payload):
                raise fail(self.label, f"a list of {allowed}", payload)
            return payload
        if self.allow_custom_value:
            if not isinstance(payload, (str, int, float)) or isinstance(payload, bool) or not str(payload).strip():
                raise fail(self.label, "a non-empty text", payload)
            if len(str(payload)) > MAX_TEXT:
                raise gr.Error(f"{html.escape(self.label or 'Text')} must be at most {MAX_TEXT} characters.")
            return str(payload)
        if payload not in values:
            raise fail(self.label, allowed, payload)
        return payload


class CheckedRadio(_Checked, gr.Radio):
    def preprocess(self, payload: Any) -> Any:
        values = _values(self.choices)
        if payload not in values:
            raise fail(self.label, "one of " + ", ".join(map(str, values)), payload)
        return payload


class CheckedCheckboxGroup(_Checked, gr.CheckboxGroup):
    """A list of its choices (empty allowed, duplicates not); None is an error, not 'nothing chosen'."""

    def preprocess(self, payload: Any) -> list[Any]:
        values = _values(self.choices)
        allowed = "a list of " + ", ".join(map(str, values))
        if not isinstance(payload, list) or any(v not in values for v in payload) or len(set(payload)) != len(payload):
            raise fail(self.label, allowed + " (each at most once)", payload)
        return payload


class CheckedImage(_Checked, gr.Image):
    """An image upload decoded here from its file path with :func:`bigain.images.read_image`, so a
    file that is not an image, is empty, truncated or claims billions of pixels gets one sentence
    naming the field. The event receives a PIL image (or None when ``optional``)."""

    def __init__(self, *args: Any, optional: bool = False, **kwargs: Any) -> None:
        self.optional = optional
        kwargs["type"] = "filepath"  # decoded in preprocess (Gradio re-creates components with their props)
        super().__init__(*args, **kwargs)

    def preprocess(self, payload: Any) -> Any:
        label = html.escape(self.label or "Image")
        if payload is None:
            if self.optional:
                return None
            raise gr.Error(f"{label} is missing: upload an image or pick an example first.", print_exception=False)
        path = getattr(payload, "path", None)
        if not isinstance(path, str):
            raise fail(self.label, "an uploaded image file", payload)
        try:
            return read_image(path)
        except BigainError as e:
            why = html.escape(str(e), quote=False)
            raise gr.Error(
                f"{label} must be a readable image (PNG, JPEG, WebP, …): {why}.", print_exception=False
            ) from None


component_meta.create_or_modify_pyi = _write_stub

for _cls in (CheckedNumber, CheckedSlider, CheckedImage):  # the props Gradio sends are read from __init__
    _cls.__init__.__signature__ = inspect.signature(_cls._gradio_base(_cls).__init__)  # type: ignore[attr-defined]
