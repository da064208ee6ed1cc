"""Built-in training: fit, evaluate and save tabular classification and regression models.

``fit_tabular(df, target, algorithm=...)`` trains logistic/linear regression, a random forest or
LightGBM behind the preprocessing it needs (imputation, encoding, scaling), on a seeded
train/validation split, and returns a :class:`TabularModel` with validation metrics, an input
signature that serving checks requests against, and ``save``/``load`` for the model artifact
(a skops file loaded with an allowlist, never a pickle). ``prepare_tabular`` makes the data side
of a fit (split, signature, fitted preprocessing) once, for fits that differ only in the
estimator's parameters (``fit_tabular(..., prepared=...)``, the trials of a tuning job).
The ``Literal`` types ``Task`` (:mod:`civicml.training.model`) and ``ColumnType``
(:mod:`civicml.training._signature`) name the task and signature column types.
``run_script(script, channels, workdir=...)`` runs a user's own training script in a subprocess
under time and memory limits (script mode, :mod:`civicml.training.script`).
``run_study(objective, space=...)`` searches hyperparameters with an in-memory Optuna study and
returns a :class:`TuningResult` (:mod:`civicml.training.tune`).
Training rules (SageMaker Debugger's built-in rules: loss not decreasing, overfit, overtraining,
class imbalance) are evaluated on logged metrics by :mod:`civicml.training.rules`; AutoML's
cross-validated search over every built-in algorithm is :mod:`civicml.training.auto`.
This package is a pure library: datasets, runs and the registry are wired to it elsewhere.
"""

from civicml.training._metrics import ConfusionMatrix
from civicml.training._signature import SignatureColumn
from civicml.training.model import (
    LEGACY_MODEL_FILE,
    TabularModel,
    UnsafeModelFormatError,
    convert_legacy_bundle,
)
from civicml.training.script import ScriptFailedError, ScriptResult, run_script
from civicml.training.tabular import (
    ALGORITHMS,
    MANIFEST_FILE,
    MODEL_FILE,
    PreparedTabular,
    fit_tabular,
    prepare_tabular,
    train_validation_split,
)
from civicml.training.tune import TrialRecord, TuningResult, run_study

__all__ = [
    "ALGORITHMS",
    "LEGACY_MODEL_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ConfusionMatrix",
    "PreparedTabular",
    "ScriptFailedError",
    "ScriptResult",
    "SignatureColumn",
    "TabularModel",
    "TrialRecord",
    "TuningResult",
    "UnsafeModelFormatError",
    "convert_legacy_bundle",
    "fit_tabular",
    "prepare_tabular",
    "run_script",
    "run_study",
    "train_validation_split",
]
