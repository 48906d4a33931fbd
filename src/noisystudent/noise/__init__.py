"""The student's noise, all of it, with the switch for each (the paper's section 3):

| source            | where                     | switch (config)                                       |
|-------------------|---------------------------|-------------------------------------------------------|
| RandAugment input | randaugment.py            | noise.randaugment, noise.randaugment_layers (N),      |
|                   |                           | noise.randaugment_magnitude (M), noise.randaugment_pixels |
| dropout           | the classifier's input    | noise.dropout (0 = off; null = the model's own)       |
| stochastic depth  | stochastic_depth.py       | noise.survival_prob (1 = off)                         |

`student_noise` turns the config into what the student is built with; the teacher is built and
labels without any of it (the paper: noising the teacher hurts).
"""

from .randaugment import OPS, RandAugment, op_parameters
from .stochastic_depth import set_linear_stochastic_depth, stochastic_depth_blocks, stochastic_depth_rates
from .student import StudentNoise, student_noise

__all__ = ["OPS", "RandAugment", "op_parameters", "set_linear_stochastic_depth", "stochastic_depth_blocks",
           "stochastic_depth_rates", "StudentNoise", "student_noise"]
