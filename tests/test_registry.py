"""The method registry drives every knob: a method added in a test (a toy one) appears in the CLI
parser, the app's method list and settings, and builds from ``name:key=value`` without touching them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import pytest

from bigain import cli, explain
from bigain.methods import METHODS, Method, Param, Plan, param, parse_method


@dataclass(frozen=True)
class Toy(Method):
    """Scales the attention input (a toy: it exists to prove nothing else needs editing)."""

    name: ClassVar[str] = "toy"
    title: ClassVar[str] = "Toy"

    gain: float = param(2.0, "Gain", "factor on the attention input", lo=0.5, hi=4)
    mode: str = param("a", "Mode", "which toy mode", choices=("a", "b"))

    def plan(self, call) -> Plan:
        return Plan(q=call.x * self.gain)


@pytest.fixture
def toy(monkeypatch) -> type[Toy]:
    monkeypatch.setitem(METHODS, "toy", Toy)
    return Toy


def test_a_new_method_reaches_the_cli_and_the_app(toy, capsys) -> None:
    import app

    assert "toy (Toy: gain=2.0, mode='a')" in cli.method_help()
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["generate", "--help"])  # the parser is built from the registry
    assert "toy (Toy: gain=2.0, mode='a')" in " ".join(capsys.readouterr().out.split())
    assert parse_method("toy:gain=3;mode=b") == Toy(gain=3.0, mode="b")
    assert ("Toy", "toy") in app.method_choices()
    assert explain.methods_from_settings(["toy"], {"toy": {"gain": 1.5}}) == [Toy(gain=1.5)]
    demo = app.build_demo()
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert "Method" in labels or "Methods" in labels


def test_declared_parameters_validate_and_parse(toy) -> None:
    gain = next(p for p in Toy.parameters() if p.name == "gain")
    assert gain == Param("gain", float, 2.0, "Gain", "factor on the attention input", lo=0.5, hi=4)
    with pytest.raises(ValueError, match=r"Toy: gain must be a number in \[0.5, 4\], got 9"):
        Toy(gain=9)
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\)"):
        parse_method("toy:mode=c")
    with pytest.raises(ValueError, match="gain must be a number"):
        parse_method("toy:gain=abc")
    with pytest.raises(ValueError, match=r"Toy takes \['max_downsample', 'blocks', 'gain', 'mode'\], not 'x'"):
        parse_method("toy:x=1")
    # "," separates options as documented, and a tuple value keeps its own commas
    assert parse_method("toy:gain=3,mode=b") == Toy(gain=3.0, mode="b")
    assert parse_method("toy:blocks=1,2, gain=3") == Toy(blocks=(1, 2), gain=3.0)
    with pytest.raises(TypeError, match="a method spec must be a str"):
        parse_method(None)  # type: ignore[arg-type]
    for spec, longest in (("toy:" + "x" * 10**6 + "=1", 200), ("y" * 10**6, 300)):
        with pytest.raises(ValueError) as err:
            parse_method(spec)
        assert len(str(err.value)) < longest  # the bad part is quoted as an excerpt, not echoed whole


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_what_it_takes(name: str) -> None:
    cls = METHODS[name]
    declared = {p.name for p in cls.parameters()}
    inits = {f.name for f in fields(cls) if f.init}
    assert declared == inits  # nothing a constructor takes is left out of the knobs and the parser
    for p in cls.parameters():
        p.check(cls.title, p.default)  # every default is allowed
        assert p.label and (p.choices or p.kind in (bool, tuple, str) or p.lo is not None or p.optional)


def test_types_are_checked_not_coerced() -> None:
    from bigain.methods import IEKVD, ToMe

    for bad in (dict(ratio=True), dict(ratio="0.5"), dict(sx=2.0), dict(ratio=float("nan"))):
        with pytest.raises(ValueError, match="ToMe:"):
            ToMe(**bad)
    with pytest.raises(ValueError, match=r"factor must be an integer in \[2, 8\]"):
        IEKVD(factor=2.5)


def test_methods_say_whether_their_path_has_kernels() -> None:
    from bigain.bench.variants import uses_triton
    from bigain.methods import IEKVD, LGTM, Baseline, FreqKV, SiTo, ToDo, ToMe

    has = {m.label(): m.has_kernels() for m in (Baseline(), ToMe(), LGTM(), SiTo(), ToDo(), IEKVD(), FreqKV())}
    assert has == {"Baseline": False, "ToMe r=0.5": True, "L-GTM r=0.7": True, "SiTo r=0.5": True,
                   "ToDo s=2": False, "IE-KVD s=2 α=0.9": True, "Freq-KV s=2 high": False}  # fmt: skip
    assert not IEKVD(alpha=0).has_kernels() and IEKVD(alpha=1, alpha_end=1.2).has_kernels()
    assert all(uses_triton(m) == m.has_kernels() for m in (SiTo(), ToDo(), IEKVD()))  # the bench asks the method
    assert {n for n, c in METHODS.items() if c.bigain} == {"lgtm", "iekvd"}  # BiGain's own two operators
