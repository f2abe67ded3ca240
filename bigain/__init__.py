"""BiGain: training-free token compression for diffusion models that keeps both generation
quality and diffusion-classifier accuracy (L-GTM and IE-KVD, CVPR 2026), with ToMe and ToDo
as baselines, for diffusers U-Nets and transformers (SD 1/2, SDXL, DiT, PixArt, SD3, Flux)."""

from bigain.errors import BadInput, BadType, BigainError, Stopped
from bigain.methods import IEKVD, LGTM, METHODS, Baseline, FreqKV, Method, SiTo, ToDo, ToMe, make_method, parse_method
from bigain.models import CARDS, LoadedModel, ModelCard, ModelUnavailable, load_model
from bigain.patch import apply, compress, compressed_blocks, is_patched, remove, seed
from bigain.pipelines import ClassificationResult, GenerationResult, Protocol, classify, generate
from bigain.record import record

__version__ = "0.1.0"

__all__ = [
    "CARDS",
    "IEKVD",
    "LGTM",
    "METHODS",
    "BadInput",
    "BadType",
    "Baseline",
    "BigainError",
    "ClassificationResult",
    "FreqKV",
    "GenerationResult",
    "LoadedModel",
    "Method",
    "ModelCard",
    "ModelUnavailable",
    "Protocol",
    "SiTo",
    "Stopped",
    "ToDo",
    "ToMe",
    "apply",
    "classify",
    "compress",
    "compressed_blocks",
    "generate",
    "is_patched",
    "load_model",
    "make_method",
    "parse_method",
    "record",
    "remove",
    "seed",
]
