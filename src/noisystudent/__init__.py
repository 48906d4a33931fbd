"""Noisy Student Training (Xie et al., CVPR 2020): teacher, pseudo labels, noised equal-or-larger student, rounds.

The public API, beside the `noisystudent` command:

    import noisystudent

    config = noisystudent.load_config("demo", ["rounds=1"])   # a bundled config by name, or a YAML path
    summary = noisystudent.run(config)                         # the same run as `noisystudent run`
    model = noisystudent.load_exported("runs/demo/round-1/student")
    noisystudent.predict(model, ["shirt.png", "boot.png"], top_k=3)

Importing the package registers our models with timm (`noisystudent_resnet_small_32`, the
EfficientNet-L0 / L1), so `timm.create_model` builds them too.
"""

from .config import Config, load_config
from .models import load_exported  # importing models registers ours with timm
from .pipeline import run
from .predict import predict
from .version import __version__

__all__ = ["Config", "__version__", "load_config", "load_exported", "predict", "run"]
