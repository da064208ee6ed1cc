"""Save civicml's fitted pipeline as an MLflow sklearn model (run in ``benchmarks/.venv-mlflow``).

    <mlflow python> benchmarks/_serving_mlflow.py MODEL_JOBLIB SAMPLE_CSV OUT_DIR

Loads the exact scikit-learn pipeline civicml fitted (``pipeline.joblib``, pickled by
benchmarks/serving.py; same scikit-learn version on both sides, checked) and writes it with
``mlflow.sklearn.save_model`` — a signature inferred from a sample of the training inputs and
``pyfunc_predict_fn="predict_proba"`` (in MLflow 3's default skops format), so
``mlflow models serve`` runs the same pipeline call as civicml and the floor.
"""

from __future__ import annotations

import sys

import joblib  # type: ignore[import-untyped]
import mlflow.sklearn
import pandas as pd  # type: ignore[import-untyped]
import sklearn  # type: ignore[import-untyped]
from mlflow.models import infer_signature


def main() -> int:
    model_file, sample_csv, out_dir, expected_sklearn = sys.argv[1:5]
    if sklearn.__version__ != expected_sklearn:
        print(
            f"scikit-learn {sklearn.__version__} here, {expected_sklearn} in civicml's venv: "
            "install the same version in benchmarks/.venv-mlflow",
            file=sys.stderr,
        )
        return 2
    pipeline = joblib.load(model_file)
    sample = pd.read_csv(sample_csv)
    signature = infer_signature(sample, pipeline.predict_proba(sample))
    mlflow.sklearn.save_model(
        pipeline,
        out_dir,
        signature=signature,
        pyfunc_predict_fn="predict_proba",
        # MLflow 3's default format (skops) asks to trust the dtypes the pipeline records.
        skops_trusted_types=["numpy.dtype"],
    )
    print(mlflow.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
