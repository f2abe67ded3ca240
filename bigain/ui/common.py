"""What every tab shares: models and their availability, errors as sentences, the fair queue with a
per-visitor limit, stoppable jobs with a time budget, ZeroGPU, execution modes."""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from bigain import execution
from bigain.errors import BigainError, Stopped
from bigain.jobs import Job, budget_from_env, run_stoppable
from bigain.models import load_model
from bigain.zoo import CARDS, assets_dir

log = logging.getLogger("bigain.app")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "glyphs-dit"  # the embedded model the app opens with (32×32 letters, 1024 tokens)
QUEUE_SIZE = 16  # requests waiting in Gradio's queue, all visitors together
HEAVY = "heavy"  # the concurrency group of every event that runs a model
HEAVY_SLOTS = 4  # requests of that group admitted at once (one computes, the rest wait their turn here)
MAX_SAMPLES = 8

try:  # ZeroGPU Spaces: the decorator borrows a GPU per call; elsewhere it is not installed
    import spaces

    ZERO_GPU = True
except ImportError:
    spaces = None
    ZERO_GPU = False


# ---- models ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=3)
def model(name: str) -> Any:
    """A loaded model, cached: one copy serves every method (methods switch without re-patching)."""
    if not name:
        raise gr.Error("Model must be chosen.", print_exception=False)
    return load_model(name)


def available(name: str) -> bool:
    """Whether a card's weights are here without asking the network (embedded: the trained weights are in
    the assets folder; hub: in the Hugging Face cache)."""
    card = CARDS[name]
    if card.source == "embedded":
        return (assets_dir() / card.name / "model.safetensors").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(card.repo, "model_index.json"), str)
    except Exception:
        return False


def unavailable_note(name: str) -> str:
    """One sentence on how to get a model's weights (hub: download them; embedded: train them)."""
    card = CARDS[name]
    if card.source == "embedded":
        return (
            f"**{html.escape(card.name)} is not available here**: its trained weights are not in "
            f"{html.escape(str(assets_dir() / card.name))}. Train them with `python -m bigain train "
            f"{html.escape(card.name)}` (or point `BIGAIN_ASSETS` at a folder that has them), then restart the app."
        )
    return (
        f"**{html.escape(card.name)} is not available here**: its weights ({html.escape(card.repo)}) are not in "
        f"the Hugging Face cache. Run `hf download {html.escape(card.repo)}` on a machine with a network connection "
        "(or list it under `preload_from_hub` in a Space's README), then restart the app."
    )


def classes_of(name: str) -> list[str]:
    """A model's class names without loading it: an embedded model's world (glyphs: A–Z, digits: 0–9),
    else the loaded model's (empty for prompt models)."""
    card = CARDS[name]
    if card.world is not None:
        from bigain.worlds import world

        return [str(c) for c in world(card.world).classes]
    if card.conditioning != "labels" or not available(name):
        return []
    return [str(c) for c in (model(name).classes or [])]


def default_class(name: str) -> str:
    """The class the pickers start at (the fourth: D for glyphs, 3 for digits)."""
    classes = classes_of(name)
    return classes[3 % len(classes)] if classes else "a photo of a cat"


def timing_text(timing: dict[str, Any], button: str) -> str:
    """One sentence on where a tab's times come from, always with the thread count they were measured
    with: this run (``{"device", "threads"}``), or a precomputed example (``precomputed``, ``command``,
    ``timestamp``, ``commit``, ``rounds``), which ``button`` measures again here."""
    from bigain.provenance import short_commit

    how = threads_note(timing.get("device", "cpu"), timing.get("threads"))
    if not timing.get("precomputed"):
        return f"Times measured in this run on this machine ({how})."
    commit = short_commit(timing.get("commit"))
    when = ", ".join(b for b in (timing.get("timestamp"), commit and f"commit `{commit}`") if b)
    rounds = timing.get("rounds")
    rounds_text = f", {rounds} timing round{'s' if rounds != 1 else ''}" if rounds else ""
    return (
        f"**Precomputed example** ({how}{rounds_text}; written by `{html.escape(str(timing.get('command')))}`"
        f"{', ' + when if when else ''}): press **{button}** to measure on this machine."
    )


def threads_note(device: Any = "cpu", threads: int | None = None) -> str:
    """How a timing was measured: ``"cpu, 2 threads"`` (torch intra-op threads now, unless given)."""
    import torch

    n = torch.get_num_threads() if threads is None else int(threads)
    return f"{device}, {n} thread{'s' if n != 1 else ''}"


def model_choices() -> list[tuple[str, str]]:
    """Every card of the zoo: the embedded glyph models first, then the digits ones, then the hub ones;
    models whose weights are missing are marked."""

    def order(kv: tuple[str, Any]) -> tuple[bool, bool]:
        return kv[1].source != "embedded", kv[1].world != "glyphs"

    out = []
    for name, card in sorted(CARDS.items(), key=order):
        where = "embedded, CPU" if card.source == "embedded" else "hub, GPU"
        state = "" if available(name) else (" · not trained" if card.source == "embedded" else " · not downloaded")
        out.append((f"{name} ({where}{state})", name))
    return out


# ---- errors ----------------------------------------------------------------------------------


def sentence(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return html.escape((msg or type(e).__name__).strip(), quote=False)


def as_gr_error(e: BaseException) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, (BigainError, ValueError, TypeError, KeyError, OSError)):
        return gr.Error(sentence(e), print_exception=False)
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(e)))
    return gr.Error(f"Something went wrong ({type(e).__name__}: {sentence(e)}). Please try again.")


def friendly(fn: Callable) -> Callable:
    """Turn any failure into a readable gr.Error so the app keeps serving the next request."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise as_gr_error(e) from e

    return wrapper


# ---- the fair queue: one job per visitor, one computing at a time, each stoppable ---------------


def trusted_proxies() -> int:
    """Proxy hops in front of the app whose ``X-Forwarded-For`` entries are believed:
    ``BIGAIN_TRUSTED_PROXIES`` (an integer), else 1 on a Hugging Face Space (its proxy appends the
    visitor's address) and 0 elsewhere, where the header is whatever the client chose to send."""
    raw = os.environ.get("BIGAIN_TRUSTED_PROXIES")
    if raw is None:
        return 1 if os.environ.get("SPACE_ID") else 0
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def client_address(request: Any, hops: int | None = None) -> str:
    """The visitor's address: with ``hops`` trusted proxies, the ``hops``-th ``X-Forwarded-For`` entry
    from the right (the one the outermost trusted proxy saw connecting); without, the socket's peer.
    Entries left of it were written by the client and are never used, so they cannot pick a victim."""
    hops = trusted_proxies() if hops is None else hops
    headers = getattr(request, "headers", None) or {}
    peer = getattr(getattr(request, "client", None), "host", "") or ""
    if hops <= 0 or not hasattr(headers, "get"):
        return peer
    # every X-Forwarded-For line (a proxy may add its own line after the client's): their entries in order
    lines = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else [headers.get("x-forwarded-for", "")]
    chain = [h.strip() for line in lines for h in str(line or "").split(",") if h.strip()]
    return chain[-hops][:64] if len(chain) >= hops else peer


def per_address() -> int:
    """Runs one address may have waiting or computing at once (``BIGAIN_PER_ADDRESS``, default 3:
    an office or a NAT is several people; 0 = no per-address limit). ``BIGAIN_PER_IP=0`` also turns it off."""
    if os.environ.get("BIGAIN_PER_IP", "1") == "0":
        return 0
    try:
        return max(0, int(os.environ.get("BIGAIN_PER_ADDRESS", "3")))
    except ValueError:
        return 3


class Admission:
    """Who may run: each session one job at a time and each client address at most :func:`per_address`;
    jobs compute one after the other in arrival order (a ticket queue), waiting ones keep yielding so
    they can be cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._visitors: dict[str, int] = {}  # key → jobs it has waiting or computing
        self._next = 0  # next ticket to hand out
        self._serving = 0  # ticket allowed to compute
        self._done: set[int] = set()  # tickets that left before their turn came
        self.running: list[Job] = []  # jobs computing now (tests look at them)

    @staticmethod
    def visitor_keys(request: gr.Request | None) -> list[str]:
        if request is None:
            return []
        keys = []
        if getattr(request, "session_hash", None):
            keys.append(f"session:{request.session_hash}")
        host = client_address(request)
        if host and per_address():
            keys.append(f"ip:{host}")
        return keys

    def enter(self, keys: Sequence[str]) -> int:
        with self._lock:
            if any(self._visitors.get(k, 0) for k in keys if k.startswith("session:")):
                raise gr.Error(
                    "You already have a run in progress: wait for it to finish (or stop it) before starting another.",
                    print_exception=False,
                )
            cap = per_address()
            if any(self._visitors.get(k, 0) >= cap for k in keys if k.startswith("ip:")):
                runs = "1 run" if cap == 1 else f"{cap} runs"
                raise gr.Error(
                    f"{runs} from your network address {'is' if cap == 1 else 'are'} already in progress: try again "
                    "when one has finished.",
                    print_exception=False,
                )
            for k in keys:
                self._visitors[k] = self._visitors.get(k, 0) + 1
            ticket = self._next
            self._next += 1
            return ticket

    def my_turn(self, ticket: int, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._serving == ticket, timeout)

    def ahead(self, ticket: int) -> int:
        return ticket - self._serving

    def leave(self, keys: Sequence[str], ticket: int) -> None:
        with self._lock:
            for k in keys:
                left = self._visitors.pop(k, 0) - 1
                if left > 0:
                    self._visitors[k] = left
            self._done.add(ticket)
            while self._serving in self._done:  # tickets that left (finished, failed or cancelled) are skipped
                self._done.discard(self._serving)
                self._serving += 1
            self._lock.notify_all()


ADMISSION = Admission()


class CostBook:
    """Seconds one image takes through a model's denoiser once, on this host, learnt from the runs the
    app served here (not from precomputed examples, which another machine may have timed): what a
    request's cost is estimated from before it is admitted, so a request that cannot finish inside the
    time budget never holds the compute slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s: dict[str, float] = {}

    def learn(self, model_name: str, seconds: float, images: int) -> None:
        if not (seconds > 0 and images > 0):
            return
        v = seconds / images
        with self._lock:  # the cheapest seen: estimates err towards admitting, the budget still stops a run
            self._s[model_name] = min(v, self._s.get(model_name, v))

    def estimate(self, model_name: str, images: int) -> float | None:
        """Seconds for ``images`` image-evaluations, or None while the model has not run here."""
        v = self._s.get(model_name)
        return None if v is None else v * images


COSTS = CostBook()


#: what to ask for less of, per kind of request
_FEWER = {
    "comparison": "steps, samples, methods or timing rounds",
    "classification": "classes, methods or timing rounds",
}


def admit_cost(model_name: str, images: int | None, what: str) -> None:
    """Refuse, in one sentence and before any work, a request whose estimated cost is over the budget
    (``images`` None: not known before the model loads, so admitted; the budget still stops it)."""
    budget = budget_from_env()
    est = None if images is None else COSTS.estimate(model_name, images)
    if budget is not None and est is not None and est > budget:
        raise gr.Error(
            f"This {what} would take about {est:.0f} s here ({images:,} image evaluations of "
            f"{html.escape(model_name)}), over the {budget:.0f}-s limit of one request: use fewer "
            f"{_FEWER.get(what, 'steps, methods or rounds')}.",
            print_exception=False,
        )


def stream(
    work: Callable[[Job], Any], n_outputs: int, request: gr.Request | None = None, progress: Any = None
) -> Iterator[Any]:
    """Run ``work(job)`` as a stoppable job for one request; yield "unchanged" while waiting and
    computing, then the result. Closing the generator (a cancelled or disconnected request: Gradio
    closes it at its next yield) cancels the job, which stops at its next denoiser call."""
    keys = Admission.visitor_keys(request)
    ticket = ADMISSION.enter(keys)
    skip = tuple(gr.skip() for _ in range(n_outputs)) if n_outputs > 1 else gr.skip()
    job = Job(budget_s=budget_from_env())
    state: dict[str, Any] = {"frac": 0.0, "desc": "starting"}

    def report(frac: float, desc: str | None = None) -> None:
        state["frac"], state["desc"] = min(max(float(frac), 0.0), 1.0), desc or ""

    def tell(desc: str, frac: float | None = None) -> None:
        if progress is not None:
            with contextlib.suppress(Exception):
                progress(state["frac"] if frac is None else frac, desc=desc)

    try:
        while not ADMISSION.my_turn(ticket, 0.25):
            tell(f"waiting for {ADMISSION.ahead(ticket)} run(s) ahead", 0.0)
            if job.elapsed() > (job.budget_s or float("inf")):
                raise Stopped("the request waited longer than its time budget in the queue; try again later")
            yield skip
        job.started = time.monotonic()  # the budget counts computing, not waiting
        ADMISSION.running.append(job)
        inner = run_stoppable(lambda j: work(j, report), job)
        try:
            for value in inner:
                if value is None:
                    tell(state["desc"])
                    yield skip
                else:
                    yield value
        finally:
            inner.close()
            job.cancel()
            if job.worker is not None:  # the call in flight finishes before the next run may start
                job.worker.join(timeout=30)
            ADMISSION.running.remove(job)
    except (gr.Error, GeneratorExit):
        raise
    except Exception as e:
        raise as_gr_error(e) from e
    finally:
        ADMISSION.leave(keys, ticket)


def job_progress(job: Job, report: Callable[[float, str | None], None]) -> Callable[[float, str | None], None]:
    """The progress callback the library calls: checks the job (cancel, budget), then reports."""
    return job.progress(lambda f, d=None: report(f, d))


def gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """``@spaces.GPU`` with a duration computed from the request on ZeroGPU; nothing elsewhere."""
    if not ZERO_GPU:
        return lambda fn: fn
    return lambda fn: spaces.GPU(duration=duration)(fn)


def named_event(core: Callable[..., Iterator[Any]], keys: Sequence[str], defaults: dict[str, Any]) -> Callable:
    """An event function whose parameters are ``keys`` (so inputs bind by name, and the API shows
    those names, with ``defaults``) plus the request and a progress tracker; it calls
    ``core(values_by_name, request, progress)``. Keys without a default come first."""
    empty = inspect.Parameter.empty
    params = [
        inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(k, empty)) for k in keys
    ]

    def bound(*args: Any) -> Iterator[Any]:
        *values, request, progress = args
        yield from core(dict(zip(keys, values, strict=True)), request, progress)

    bound.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *params,
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
            inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()),
        ]
    )
    bound.__annotations__ = {"request": gr.Request}
    bound.__name__ = core.__name__
    bound.__doc__ = core.__doc__
    return bound


def bind_heavy(
    button: Any,
    core: Callable[..., Iterator[Any]],
    name: str,
    inputs: dict[str, Any],
    defaults: dict[str, Any],
    outputs: list[Any],
    api: bool = True,
) -> None:
    """Wire a model-running event to ``button``: inputs bound by name (:func:`named_event`), the fair
    queue's heavy group, one click at a time; ``api``: listed in ``view_api()`` as ``/name``."""
    keys = list(inputs)
    event = named_event(core, keys, defaults)
    event.__name__ = name
    visibility: dict[str, Any] = {"api_name": name} if api else {"api_visibility": "undocumented"}
    button.click(
        event,
        [inputs[k] for k in keys],
        outputs,
        concurrency_id=HEAVY,
        concurrency_limit=HEAVY_SLOTS,
        trigger_mode="once",
        **visibility,
    )


# ---- execution modes ------------------------------------------------------------------------


def execution_modes() -> list[str]:
    """Execution modes this machine offers: ZeroGPU borrows a CUDA GPU per call and has no torch.compile."""
    device = "cuda" if ZERO_GPU else execution.default_device()
    return execution.available_modes(device, compile_ok=not ZERO_GPU)


def check_execution(value: Any) -> str:
    mode = "eager" if value in (None, "") else str(value)
    if mode not in execution_modes():
        raise gr.Error(
            f"Execution must be one of {execution_modes()} here, got {html.escape(repr(mode))} (not available here).",
            print_exception=False,
        )
    return mode
