"""Benchmarks of FOUND's fast path against the eager float32 baseline: what ``found bench`` runs.

* :mod:`.timing` — interleaved timing rounds, peak memory, speed-up ratios;
* :mod:`.models` — the benchmark networks (random ViT-S/8, registered backbones, files) and the eager baseline;
* :mod:`.synthetic` — photo-like images and JPEG folders;
* :mod:`.agreement` — features and masks of the fast paths (and ONNX files) against the baseline;
* :mod:`.throughput` — the model section (tensor in → mask out);
* :mod:`.folder` — the folder section (JPEG files in → PNG masks out through the engine);
* :mod:`.profiling`, :mod:`.breakdown` — where the time goes (FLOPs, matmul rate, block op by op, one photo's split);
* :mod:`.report` — printed rows, the project's targets, the environment, the JSON file.
"""
from .agreement import boolean_mask_iou, feature_agreement, precision_agreement, predicted_mask
from .breakdown import bench_backbones, bench_profile
from .folder import bench_folder, folder_plan, segment_folder
from .models import (
    WEIGHTS_NOTE,
    Nets,
    baseline_and_fast,
    baseline_fits,
    default_cpu_precisions,
    default_nets,
    default_precisions,
    load_nets,
    random_head,
    registry_backbone,
    vit_s8,
)
from .report import CPU_TARGETS, CUDA_TARGETS, check_targets, cpu_name, environment, format_row, report_targets, write_bench_json
from .synthetic import jpeg_folder, synthetic_images, synthetic_photo
from .throughput import DEFAULT_SIZES, bench_model, default_batches, quick_skip
from .timing import peak_memory_mib, ratios, sync, time_interleaved

__all__ = [
    "CPU_TARGETS", "CUDA_TARGETS", "DEFAULT_SIZES", "WEIGHTS_NOTE", "Nets",
    "baseline_and_fast", "baseline_fits", "bench_backbones", "bench_folder", "bench_model", "bench_profile",
    "check_targets", "cpu_name", "default_batches", "default_cpu_precisions", "default_nets", "default_precisions",
    "environment", "feature_agreement", "folder_plan", "format_row", "jpeg_folder", "load_nets", "boolean_mask_iou",
    "peak_memory_mib", "precision_agreement", "predicted_mask", "quick_skip", "random_head", "ratios", "registry_backbone",
    "report_targets", "segment_folder", "sync", "synthetic_images", "synthetic_photo", "time_interleaved", "vit_s8",
    "write_bench_json",
]
