"""Widgets several tabs use: the model picker (every card; unavailable hub models say how to get
them), the sampling settings, timing rounds and the execution mode."""

from __future__ import annotations

from typing import Any

import gradio as gr

from bigain.pipelines.generate import MAX_SEED
from bigain.ui.checked import CheckedDropdown, CheckedNumber, CheckedSlider
from bigain.ui.common import (
    DEFAULT_MODEL,
    available,
    classes_of,
    default_class,
    execution_modes,
    model,
    model_choices,
    unavailable_note,
)
from bigain.zoo import CARDS

EXAMPLE_PROMPT = {"labels": "golden retriever", "prompts": "a photo of a cat"}


def model_picker(prefix: str, with_condition: bool = True) -> tuple[Any, Any, Any]:
    """Model dropdown, class/prompt box (or None), and the note shown for a model that is not here."""
    m = CheckedDropdown(model_choices(), value=DEFAULT_MODEL, label="Model", elem_id=f"{prefix}-model")
    cond = None
    if with_condition:  # the glyph models' classes are the letters A–Z (read from the world, nothing loaded)
        cond = CheckedDropdown(
            classes_of(DEFAULT_MODEL),
            value=default_class(DEFAULT_MODEL),
            allow_custom_value=True,
            label="Class",
            elem_id=f"{prefix}-condition",
        )
    ok = available(DEFAULT_MODEL)
    note = gr.Markdown(
        "" if ok else unavailable_note(DEFAULT_MODEL),
        visible=not ok,
        elem_id=f"{prefix}-model-note",
        elem_classes=["note"],
    )
    return m, cond, note


def on_model(name: str, with_condition: bool = True) -> tuple[Any, ...]:
    """Model picked: its classes (or a prompt box), default steps and guidance, and, when its
    weights are not here, one sentence on getting them and a disabled run button (no error state)."""
    card = CARDS.get(name)
    if card is None:
        return (gr.skip(),) * (5 if with_condition else 2)
    ok = available(name)
    cond: Any = gr.skip()
    if ok:
        try:
            m = model(name)
        except Exception as e:  # the cache held something that does not load: say so, stay usable
            ok, note = False, f"{unavailable_note(name)} ({type(e).__name__})"
        else:
            classes = [str(c) for c in (m.classes or [])]
            cond = gr.Dropdown(
                choices=classes,
                value=default_class(name) if classes else "a photo of a cat",
                allow_custom_value=True,
                label="Class" if classes else "Prompt",
            )
            note = ""
    else:
        note = unavailable_note(name)
    if not ok and card.world is not None:  # an embedded model not trained here: its classes are still known
        cond = gr.Dropdown(choices=classes_of(name), value=default_class(name), allow_custom_value=True, label="Class")
    elif not ok:
        text = EXAMPLE_PROMPT.get(card.conditioning, "a photo of a cat")
        cond = gr.Dropdown(
            choices=[text],
            value=text,
            allow_custom_value=True,
            label="Class" if card.conditioning == "labels" else "Prompt",
        )
    button = gr.Button(interactive=ok)
    shown = gr.Markdown(note, visible=bool(note))
    if not with_condition:
        return shown, button
    return cond, gr.Number(value=card.steps), gr.Number(value=card.guidance), shown, button


def on_model_outputs(m: Any, cond: Any, steps: Any, guidance: Any, note: Any, button: Any) -> None:
    m.change(on_model, m, [cond, steps, guidance, note, button], api_visibility="undocumented", queue=False)


def sampling(card: Any) -> tuple[Any, Any, Any]:
    with gr.Row():
        seed = CheckedNumber(value=0, integer=True, label="Seed", minimum=0, maximum=MAX_SEED)
        steps = CheckedNumber(value=card.steps, integer=True, optional=True, label="Steps", minimum=1, maximum=200)
        guidance = CheckedNumber(value=card.guidance, optional=True, label="Guidance", minimum=0, maximum=30)
    return seed, steps, guidance


#: Timing rounds a click runs by default: one keeps the default comparison on the glyph models within
#: 20 s on 2 CPUs (docs/app.md); more rounds make the speed-ups robust to a busy machine.
ROUNDS = 1


def timing_rounds() -> Any:
    return CheckedSlider(
        1,
        5,
        value=ROUNDS,
        step=1,
        integer=True,
        label="Timing rounds",
        info="Every method runs this many times in rotating order; the fastest run counts (2–3 are robust to a "
        "busy machine, each one adds a whole run per method).",
    )


def execution_picker() -> Any:
    """Shown only where there is a choice (always eager; compile where torch.compile works; CUDA graphs on a GPU)."""
    modes = execution_modes()
    return CheckedDropdown(
        modes,
        value="eager",
        label="Execution",
        visible=len(modes) > 1,
        info="eager: as is. compile: torch.compile (first run compiles, then fused kernels). "
        "cudagraph: the denoiser call captured once and replayed (GPU). Speed-ups compare within one mode.",
    )


#: Samples per method of the Compare generation tab's default comparison: two keep it (glyphs-dit, 20 steps,
#: baseline + ToMe + L-GTM, one round) within 20 s on 2 CPUs (docs/app.md).
SAMPLES = 2
