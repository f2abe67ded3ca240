"""Generation and diffusion classification on any :class:`~bigain.models.LoadedModel`, under any method."""

from bigain.pipelines.classify import ClassificationResult, Protocol, classify
from bigain.pipelines.generate import GenerationResult, generate

__all__ = ["ClassificationResult", "GenerationResult", "Protocol", "classify", "generate"]
