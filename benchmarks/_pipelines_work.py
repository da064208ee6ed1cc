"""The work of the pipeline benchmark: five plain functions, the same for every system.

``load → clean → featurize → train → score``: read a CSV, clean it, build features, fit a small
scikit-learn logistic regression and score it on a held-out split. Values passed between steps
are pandas DataFrames and JSON dicts (what all three systems store without pickling the model);
the fitted model travels as its coefficients. Every function takes ``nonce``, which it ignores:
a new nonce gives every step a new cache key, so a "cold" run really runs every step.

Only NumPy, pandas and scikit-learn are imported here, so the module loads in the civicml
virtualenv and in the one that holds Prefect and ZenML alike. No ``from __future__ import
annotations``: ZenML reads the annotations as types to pick its materializers.
"""

from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = 20
CATEGORIES = ("north", "south", "east", "west", "central")
TARGET = "eligible"


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Write the benchmark's raw data: numeric and categorical columns, gaps, duplicates."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    weights = rng.normal(size=FEATURES)
    logit = x @ weights / np.sqrt(FEATURES) + rng.normal(scale=0.5, size=rows)
    frame = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(FEATURES)])
    frame["region"] = rng.choice(CATEGORIES, size=rows)
    frame[TARGET] = (logit > 0).astype(int)
    holes = rng.random(size=(rows, FEATURES)) < 0.02  # 2 % missing values
    numeric = frame.columns[:FEATURES]
    frame[numeric] = frame[numeric].mask(holes)
    dupes = frame.sample(frac=0.01, random_state=seed)  # 1 % duplicated rows
    pd.concat([frame, dupes]).to_csv(path, index=False)


def load(path: str, nonce: str) -> pd.DataFrame:
    """Read the raw CSV."""
    return pd.read_csv(path)


def clean(raw: pd.DataFrame, nonce: str) -> pd.DataFrame:
    """Drop duplicates and unlabelled rows, fill gaps with medians, clip outliers."""
    df = raw.drop_duplicates().dropna(subset=[TARGET]).reset_index(drop=True)
    numeric = [c for c in df.columns if c.startswith("f")]
    df[numeric] = df[numeric].fillna(df[numeric].median())
    low, high = df[numeric].quantile(0.01), df[numeric].quantile(0.99)
    df[numeric] = df[numeric].clip(low, high, axis=1)
    return df


def featurize(cleaned: pd.DataFrame, nonce: str) -> pd.DataFrame:
    """Standardise, one-hot encode the region, add pairwise products of the first features."""
    numeric = [c for c in cleaned.columns if c.startswith("f")]
    x = cleaned[numeric]
    feats = (x - x.mean()) / x.std(ddof=0)
    for i in range(5):
        for j in range(i + 1, 5):
            feats[f"x{i}{j}"] = feats[numeric[i]] * feats[numeric[j]]
    dummies = pd.get_dummies(cleaned["region"], prefix="region", dtype=float)
    feats = pd.concat([feats, dummies], axis=1)
    feats[TARGET] = cleaned[TARGET].to_numpy()
    return feats


def train(features: pd.DataFrame, nonce: str) -> dict:
    """Fit a logistic regression on 80 % of the rows; the model as JSON (coefficients)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x = features.drop(columns=[TARGET])
    x_train, _, y_train, _ = train_test_split(
        x, features[TARGET], test_size=0.2, random_state=0, stratify=features[TARGET]
    )
    model = LogisticRegression(max_iter=500, C=0.5).fit(x_train.to_numpy(), y_train.to_numpy())
    return {
        "columns": [str(c) for c in x.columns],
        "coef": [float(v) for v in model.coef_[0]],
        "intercept": float(model.intercept_[0]),
    }


def score(features: pd.DataFrame, model: dict, nonce: str) -> dict:
    """Accuracy, ROC AUC and log loss of the model on the held-out 20 %."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split

    x = features[model["columns"]]
    _, x_test, _, y_test = train_test_split(
        x, features[TARGET], test_size=0.2, random_state=0, stratify=features[TARGET]
    )
    z = x_test.to_numpy() @ np.asarray(model["coef"]) + model["intercept"]
    proba = 1.0 / (1.0 + np.exp(-z))
    return {
        "accuracy": float(accuracy_score(y_test, proba >= 0.5)),
        "roc_auc": float(roc_auc_score(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba)),
        "rows": len(y_test),
    }


def bare(path: str, nonce: str) -> dict:
    """The five functions called directly: the floor every system is compared with."""
    feats = featurize(clean(load(path, nonce), nonce), nonce)
    return score(feats, train(feats, nonce), nonce)


STEPS = ("load", "clean", "featurize", "train", "score")
