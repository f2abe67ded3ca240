"""What the app's tabs compute, as plain functions (nothing here imports gradio): each runs library
code (methods, operators, pipelines, the recorder) and returns data plus figures; the UI lays them out.

* :mod:`~bigain.explain.learn`: the "learn the idea" pictures on image tokens;
* :mod:`~bigain.explain.features`: the paper's Figure 6 (and Table 12's KV ablation) on the model's own tokens;
* :mod:`~bigain.explain.inside`: a recorded generation, one (step, block) of it at a time;
* :mod:`~bigain.explain.compare`: methods from settings, generation and classification side by side;
* :mod:`~bigain.explain.bundled`: the bundled examples and the result files the app shows.
"""

from bigain.explain.bundled import benchmark_report, digit_examples, examples_dir
from bigain.explain.compare import (
    ClassificationRow,
    GenerationRow,
    Progress,
    agreement,
    compare_classification,
    compare_generation,
    flops_per_call,
    methods_from_settings,
)
from bigain.explain.features import Figure6Inside, MethodError, figure6_inside, figure6_inside_figure
from bigain.explain.inside import Inside, inside_figures, record_generation
from bigain.explain.learn import FrequencyParts, frequency_parts, image_tokens, kv_choice, learn_figures, merge_choice

__all__ = [
    "ClassificationRow",
    "Figure6Inside",
    "FrequencyParts",
    "GenerationRow",
    "Inside",
    "MethodError",
    "Progress",
    "agreement",
    "benchmark_report",
    "compare_classification",
    "compare_generation",
    "digit_examples",
    "examples_dir",
    "figure6_inside",
    "figure6_inside_figure",
    "flops_per_call",
    "frequency_parts",
    "image_tokens",
    "inside_figures",
    "kv_choice",
    "learn_figures",
    "merge_choice",
    "methods_from_settings",
    "record_generation",
]
