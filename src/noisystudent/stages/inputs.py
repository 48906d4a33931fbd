"""What every stage's inputs share: the data settings its result depends on, and the seed."""

from __future__ import annotations

from dataclasses import asdict

from ..config import Config

# What no stage's result depends on (runs.py's docstring).
NOT_DATA_INPUTS = ("max_bad_fraction", "decode_threads", "cache_dir", "storage")  # and TrainConfig.inputs() leaves out checkpoint_every, prefetch
TEST_ONLY = ("test", "test_limit")  # what only evaluations read
# Fields added after runs were made (the out-of-domain reference and score, issue 32): a stage's
# inputs leave each out while it equals its default, which computes what the stage computed
# before the field existed, so a run directory made then keeps its fingerprints and resumes
# (its finished stages skip). Set to anything else, the field joins the inputs and redoes the
# stages it changes. Only ever add to these, with the default the behaviour had before.
NEW_DATA_INPUTS = {"ood_source": "characters", "reference_fraction": 0.0}


def without_new_defaults(inputs: dict, new: dict) -> dict:
    """`inputs` less the keys of `new` whose value is their default there."""
    return {key: value for key, value in inputs.items() if key not in new or value != new[key]}


def data_inputs(config: Config) -> dict:
    """The data settings an evaluation depends on (the test side too)."""
    return without_new_defaults({key: value for key, value in asdict(config.data).items()
                                 if key not in NOT_DATA_INPUTS}, NEW_DATA_INPUTS)


def common_inputs(config: Config) -> dict:
    """What every stage that trains or labels depends on: the training side of the data, the seed."""
    return {"data": {key: value for key, value in data_inputs(config).items() if key not in TEST_ONLY},
            "seed": config.seed}
