"""The registries of named implementations a config selects: data sources (`data.dataset`),
target kinds (`labels.kind`) and evaluation suites (`evaluate.suites`).

The packages that implement them register into these dicts (data/sources.py,
labels/targets.py, evaluate/suite.py), and importing `noisystudent` imports all of them, so
the config loader refuses a name nothing registered without importing the packages that read
the config (which would make config and its readers import each other).
"""

DATA_SOURCES: dict = {}  # name -> data.sources.DataSource
TARGET_KINDS: dict = {}  # name -> labels.targets.TargetKind
SUITES: dict = {}  # name -> an evaluate.suite Suite
