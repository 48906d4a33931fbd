"""The stages of a run, one module each, every one defining in one place its inputs (`stage`:
what its fingerprint covers), its run (`run`) and its cost for `noisystudent plan` (`cost`):

    teacher.py      round-0/teacher      train on labeled images
    labels.py       round-k/labels       the teacher of round k labels the pool, un-noised
    selection.py    round-k/selection    filter by confidence, balance classes, gather the images
    student.py      round-k/student      noised, equal-or-larger student on labeled + pseudo labels
    finetune.py     round-k/finetune     optional FixRes-style fine-tune: the round's model
    evaluation.py   every trained model  its evaluation (eval.json), a stage of its own

What they share: the inputs every stage has (inputs.py), what a run works with (context.py),
what a cost works with (cost.py), and training a model (training.py). A trained stage's cost
includes its evaluation's. The pipeline (pipeline.py) runs the rounds; `plan_run` is the one
walk over the rounds that names every stage and its inputs, which the pipeline and the plan
(plan.py) both follow.
"""

from __future__ import annotations

from ..config import Config
from ..runs import RoundPlan, RunPlan, run_dir
from . import evaluation, finetune, labels, selection, student, teacher

# each stage kind but the evaluation (which its trained stage's cost includes), by its folder's name
STAGES = {"teacher": teacher, "labels": labels, "selection": selection, "student": student, "finetune": finetune}


def plan_run(config: Config) -> RunPlan:
    """Every stage of a run and its inputs, from the config alone (nothing is read or written)."""
    run = run_dir(config)
    first = teacher.stage(config, run)
    first_eval = evaluation.stage(config, first, None)
    rounds, previous = [], first
    for k in range(1, config.rounds + 1):
        labeled = labels.stage(config, run, k, previous)
        selected = selection.stage(config, run, k, labeled)
        trained = student.stage(config, run, k, selected)
        tuned = finetune.stage(config, run, k, trained)
        plan = RoundPlan(k, config.model_for_round(k - 1), config.model_for_round(k), labeled, selected, trained,
                         evaluation.stage(config, trained, first_eval), tuned,
                         None if tuned is None else evaluation.stage(config, tuned, first_eval))
        rounds.append(plan)
        previous = plan.output[0]
    return RunPlan(first, first_eval, rounds)
