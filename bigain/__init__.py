"""BiGain: training-free token compression for diffusion models that keeps both generation
quality and diffusion-classifier accuracy (L-GTM and IE-KVD, CVPR 2026), with ToMe and ToDo
as baselines, for diffusers U-Nets and DiTs."""

from bigain.methods import IEKVD, LGTM, METHODS, Baseline, Method, ToDo, ToMe, make_method, parse_method
from bigain.patch import apply, compress, compressed_blocks, is_patched, remove, seed
from bigain.record import record

__version__ = "0.1.0"

__all__ = [
    "IEKVD",
    "LGTM",
    "METHODS",
    "Baseline",
    "Method",
    "ToDo",
    "ToMe",
    "apply",
    "compress",
    "compressed_blocks",
    "is_patched",
    "make_method",
    "parse_method",
    "record",
    "remove",
    "seed",
]
