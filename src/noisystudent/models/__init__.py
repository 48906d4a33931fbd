"""Models by name: small-image variants for 28-32 px work on CPUs, and every timm model."""

from .inference import (PRECISIONS, autocast, inference, iterate_logits, noised_inference, predict_logits,
                        resolve_device, resolved_precision, set_compute, set_precision, set_threads,
                        to_model_input)
from .registry import (
    EFFICIENTNETS, MODEL_NAMES_HELP, MODELS, SMALL_IMAGE_MODELS, Classifier, ModelSpec, build_model,
    check_student_size, count_flops, count_parameters, is_known_model, model_resolutions, registry_table,
)
from .weights import check_initial_sources, check_model_fits, export_weights, exported_weights_file, load_exported, load_initial_weights

__all__ = ["PRECISIONS", "autocast", "inference", "iterate_logits", "noised_inference", "predict_logits", "resolve_device", "resolved_precision", "set_compute", "set_precision", "set_threads", "to_model_input", "EFFICIENTNETS", "MODEL_NAMES_HELP", "MODELS", "SMALL_IMAGE_MODELS", "Classifier",
           "ModelSpec", "build_model", "check_student_size", "count_flops", "count_parameters", "is_known_model",
           "model_resolutions", "registry_table", "export_weights", "exported_weights_file", "load_exported",
           "load_initial_weights", "check_model_fits", "check_initial_sources"]
