"""Every setting of `export-onnx`, as one dataclass: the CLI, the `[export]` TOML table and the API build it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdcompress.errors import KDCompressError
from kdcompress.runtime.registry import exported_runtimes, get_runtime
from kdcompress.settings import Settings, setting

QUANTIZE_MODES = ("none", "dynamic", "static", "weights")
DEFAULT_OPSET = 17  # first opset with a LayerNormalization op; ORT >= 1.14 and Optimum's fusions handle it


@dataclass
class ExportConfig(Settings):
    table = "export"
    command = "export-onnx"

    model_dir: str = setting("", help="Model directory (config.json, model.safetensors, tokenizer).", cli=False)
    out: str = setting("", help="Output directory; must not exist (see --overwrite).", cli=False)
    optimize: bool = setting(False, help="Fuse transformer operators with ONNX Runtime (attention, "
                             "skip-layer-norm, bias-GELU, embedding layer-norm).")
    runtime: str = setting("onnxruntime", help="onnxruntime (model.onnx) | openvino (openvino_model.xml, from the "
                           "fp32 ONNX export; int8 by NNCF, --quantize static). OpenVINO needs "
                           "pip install 'kdcompress[openvino]'.")
    quantize: str = setting("none", help="none | dynamic | static (int8) | weights (OpenVINO: int8 weights only, "
                            "compute at the inference precision; no calibration, and the compiled model stays "
                            "small); --accuracy-goal alone means dynamic (static with --runtime openvino).")
    calibration_data: str | None = setting(None, help="For --quantize static: a text file (one example a line, "
                                           "TAB before a pair's second text) or TASK:LANG[:SPLIT], e.g. sib200:en. "
                                           "Default: --task's training split in the source language.")
    accuracy_goal: float | None = setting(None, help="Accuracy-aware int8: keep every language's dev accuracy "
                                          "within this of the fp32 model (e.g. 0.01), falling back the most "
                                          "sensitive operators to fp32. Exit status 3 when no model meets it "
                                          "(the best one is still saved).")
    cls_only_last_layer: bool = setting(True, help="Compute the last layer for the [CLS] position only, all a "
                                        "sequence classifier reads: the same logits, 5-15% less latency. "
                                        "--full-last-layer exports the whole layer.")
    keep_embeddings_fp32: bool = setting(False, help="Quantize the matrix multiplies only, not the embedding table.")
    task: str | None = setting(None, help="Task for the check and --accuracy-goal (sib200, xnli, pawsx). "
                               "Default: distill.json's, or the one whose labels match.")
    langs: list[str] | None = setting(None, help="Comma-separated languages to check (or 'all'). "
                                      "Default: distill.json's, else a spread of scripts.")
    data_dir: str | None = setting(None, help="Local data folder laid out like shared/data "
                                   "(default: $KDCOMPRESS_DATA_DIR, else the hub).")
    calibration_samples: int = setting(128, help="Examples for --quantize static calibration.")
    check_samples: int = setting(32, help="Dev sentences per language for the check.")
    eval_samples: int = setting(200, help="Dev examples per language for --accuracy-goal.")
    max_trials: int = setting(10, help="Quantize-and-evaluate trials for --accuracy-goal and the int8 control's "
                              "operator search.")
    min_agreement: float = setting(0.97, help="Int8 control: every checked language must keep this argmax agreement "
                                   "with fp32 on its dev sentences (--eval-samples), or its dev accuracy within 1 "
                                   "point; else fallbacks are tried in order (reduced range, fp32 embeddings, on "
                                   "OpenVINO int8 weights only, sensitive operators in fp32) and export.json says "
                                   "why. 0 turns it off.")
    int8_confidence: float = setting(0.5, help="Int8 control: how sure it must be that a language lost accuracy "
                                     "before failing it. 0.5 reads each drop as measured; above it, a language "
                                     "over the 1-point slack fails only when over by more than z paired standard "
                                     "errors (compress passes its --confidence). On 99 dev sentences one flipped "
                                     "sentence is a whole point.")
    openvino_static_lengths: list[int] = setting(factory=list, help="OpenVINO: also compile the model at batch 1 "
                                                 "for each of these lengths (e.g. 16,32,48,64); a single sentence is "
                                                 "padded to the next one and never changes the graph's shape. Faster "
                                                 "for one sentence at a time (1.4x for a 6-layer student on an AMX "
                                                 "Xeon), for about 30 MB of memory per length; export.json records them.")
    opset: int = setting(DEFAULT_OPSET, help="ONNX opset.")
    overwrite: bool = setting(False, help="Replace OUT if it exists.")
    progress: bool = setting(True, help="Show progress and the closing summary.", cli=False)

    def check(self) -> "ExportConfig":
        if not self.model_dir:
            raise KDCompressError("no model directory: pass MODEL_DIR (a directory made by `kdcompress distill`)")
        if not self.out:
            raise KDCompressError("no output directory: pass --out DIR")
        self.quantize = self.quantize.strip().lower()
        if self.quantize not in QUANTIZE_MODES:
            raise KDCompressError(f"unknown --quantize {self.quantize!r}; choose from {', '.join(QUANTIZE_MODES)}")
        self.runtime = self.runtime.strip().lower()
        names = [row.name for row in exported_runtimes() if row.export_step]
        if self.runtime not in names:
            raise KDCompressError(f"unknown --runtime {self.runtime!r}; choose from {', '.join(names)}")
        row = get_runtime(self.runtime)
        if self.quantize not in row.quantize_modes:
            owners = [r for r in exported_runtimes() if self.quantize in r.quantize_modes]
            int8 = [m for m in row.quantize_modes if m != "none"]
            raise KDCompressError(f"--quantize {self.quantize} is {' and '.join(r.title for r in owners)}'s int8; "
                                  + (f"{row.title}'s int8 ({row.int8_tool}) is {' or '.join(int8)}: use --runtime "
                                     f"{row.name} --quantize {int8[0]}, or " if int8 else f"{row.title} has none: ")
                                  + f"--runtime {' or '.join(r.name for r in owners)}")
        if self.optimize and not row.can_fuse:
            raise KDCompressError(f"--optimize writes ONNX Runtime's fused operators, which {row.title} cannot read "
                                  f"({row.title} fuses the graph itself); drop --optimize with --runtime {self.runtime}")
        if self.accuracy_goal is not None and self.quantize == "none":
            # an accuracy goal only means something for int8: the runtime's first int8 mode
            self.quantize = next((m for m in row.quantize_modes if m != "none"), "none")
        if self.accuracy_goal is not None and self.quantize == "weights":
            raise KDCompressError("--accuracy-goal searches int8 activations to fall back; --quantize weights has "
                                  "none: drop --accuracy-goal (the int8 control still judges every language), or use "
                                  "--quantize static")
        if not (math.isfinite(self.int8_confidence) and 0.5 <= self.int8_confidence < 1):
            raise KDCompressError(f"--int8-confidence {self.int8_confidence} must be at least 0.5 and below 1, "
                                  "e.g. 0.95 (0.5 reads each accuracy drop as measured)")
        if not 0 <= self.min_agreement <= 1:
            raise KDCompressError(f"--min-agreement {self.min_agreement} must be a share in [0, 1], e.g. 0.97")
        if self.calibration_data is not None and self.quantize != "static":
            raise KDCompressError("--calibration-data only applies to --quantize static; add --quantize static or drop it")
        if self.accuracy_goal is not None and not 0 <= self.accuracy_goal < 1:
            raise KDCompressError(f"--accuracy-goal {self.accuracy_goal} must be an accuracy difference in [0, 1), "
                                  "e.g. 0.01 for one point")
        if not 7 <= self.opset <= 20:
            raise KDCompressError(f"--opset {self.opset} is outside what torch.onnx and onnxruntime support here "
                                  f"(7-20); use the default {DEFAULT_OPSET}")
        if self.openvino_static_lengths:
            if self.runtime != "openvino":
                raise KDCompressError("--openvino-static-lengths compiles OpenVINO models; add --runtime openvino or "
                                      "drop it")
            bad = [n for n in self.openvino_static_lengths if not isinstance(n, int) or not 1 <= n <= 8192]
            if bad:
                raise KDCompressError(f"--openvino-static-lengths {bad[0]!r} is not a length in tokens (1-8192), "
                                      "e.g. 16,32,48,64")
        for name in ("check_samples", "eval_samples", "calibration_samples", "max_trials"):
            if getattr(self, name) < 1:
                raise KDCompressError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        return self
