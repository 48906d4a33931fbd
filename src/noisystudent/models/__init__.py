"""Models by name: small-image variants for 28-32 px work on CPUs, and every timm model."""

from .inference import autocast, iterate_logits, predict_logits, resolve_device, to_model_input
from .registry import (
    MODEL_NAMES_HELP, SMALL_IMAGE_MODELS, Classifier, ModelSpec, build_model, check_student_size,
    count_parameters, is_known_model,
)

__all__ = ["autocast", "iterate_logits", "predict_logits", "resolve_device", "to_model_input", "MODEL_NAMES_HELP", "SMALL_IMAGE_MODELS", "Classifier", "ModelSpec", "build_model",
           "check_student_size", "count_parameters", "is_known_model"]
