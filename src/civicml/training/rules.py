"""Training rules: SageMaker Debugger's built-in rules, evaluated on a run's logged metrics.

Debugger watched tensors a training job emitted and fired a rule when they looked wrong
(docs/training-rules.md). civicml evaluates the same rules, with Debugger's parameter names and
defaults, on what a run logs:

- :class:`LossNotDecreasing` — every ``num_steps`` steps, the loss's lowest value improved by
  less than ``diff_percent`` %, or the loss rose more than ``increase_threshold_percent`` %
  above its lowest value.
- :class:`Overfit` — ``(mean validation loss - mean training loss) / mean training loss`` above
  ``ratio_threshold`` for ``patience`` steps in a row, from ``start_step`` on.
- :class:`Overtraining` — the validation loss has not improved by more than ``delta`` for
  ``patience_validation`` steps while the training loss keeps improving (a new lowest value
  within the last ``patience_train`` steps, more than ``delta`` below where it stood when the
  validation loss last improved).
- :class:`ClassImbalance` — once ``samples`` labels are seen: the largest class has more than
  ``threshold_imbalance`` times the rows of the smallest, or a class's validation rows are
  mispredicted more often than ``threshold_misprediction``.

A rule's result is ``fired``, ``ok`` or ``insufficient_data`` (too few steps or labels to
judge), with a reason in words. :class:`RuleMonitor` evaluates rules *while* LightGBM boosts
(a callback on the train and validation losses, logged as ``train_loss`` and ``val_loss`` by
boosting round) and stops training when a rule with ``on_fire="stop"`` fires; for the other
algorithms the rules are evaluated once, after the fit, on the final losses.

This module is a pure library: reading a run's metrics and recording results on it happen in
:mod:`civicml.sdk.rules` and the pipeline steps.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.errors import CivicMLError, InvalidInputError, closest
from civicml.training._metrics import ConfusionMatrix

__all__ = [
    "RULES",
    "ClassImbalance",
    "Evidence",
    "LossNotDecreasing",
    "Overfit",
    "Overtraining",
    "Rule",
    "RuleFiredError",
    "RuleMonitor",
    "RuleResult",
    "evaluate_rules",
    "final_losses",
    "gather_evidence",
    "parse_rule",
    "parse_rules",
]

RuleStatus = Literal["fired", "ok", "insufficient_data"]
OnFire = Literal["record", "stop"]
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
#: LightGBM's default evaluation metric per objective: what ``train_loss``/``val_loss`` log.
_LIGHTGBM_LOSSES = ("binary_logloss", "multi_logloss", "l2")


class RuleResult(BaseModel):
    """One rule's evaluation on a run: fired or not, and why."""

    model_config = ConfigDict(frozen=True)

    rule: str = Field(description="Rule name, e.g. 'overfit'.")
    status: RuleStatus = Field(
        description="'fired' (an issue found), 'ok' (none found) or 'insufficient_data' "
        "(too few steps or labels to judge)."
    )
    reason: str = Field(description="Why, in words, with the numbers that decided it.")
    step: int | None = Field(default=None, description="The step at which the rule fired.")
    on_fire: OnFire = Field(default="record", description="'record' or 'stop' (training).")
    params: dict[str, Any] = Field(default_factory=dict, description="The rule's parameters.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Numbers behind the verdict (ratios, counts)."
    )

    @property
    def fired(self) -> bool:
        """Whether the rule found an issue."""
        return self.status == "fired"


class RuleFiredError(CivicMLError):
    """A rule with ``on_fire="stop"`` fired before training could start (class imbalance)."""

    status = 422


@dataclass(frozen=True, slots=True)
class Evidence:
    """What rules look at: metric series ``key -> [(step, value), ...]`` (by step), and for
    class imbalance the training labels and the validation confusion matrix."""

    metrics: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)
    labels: Sequence[Any] | None = None
    confusion: ConfusionMatrix | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A training rule; subclasses hold Debugger's parameters with its defaults."""

    name: ClassVar[str] = ""
    on_fire: OnFire = "record"

    def metrics(self) -> tuple[str, ...]:
        """The metric keys this rule reads."""
        return ()

    def params(self) -> dict[str, Any]:
        """The rule's parameters (without ``on_fire``)."""
        return {k: v for k, v in asdict(self).items() if k != "on_fire"}

    def spec(self) -> str:
        """The rule as the CLI writes it: ``overfit:ratio_threshold=0.1,patience=1``."""
        defaults = type(self)().params()
        given = ",".join(f"{k}={v}" for k, v in self.params().items() if v != defaults[k])
        stop = ",on_fire=stop" if self.on_fire == "stop" else ""
        return f"{self.name}:{given}{stop}" if given or stop else self.name

    def evaluate(self, evidence: Evidence) -> RuleResult:
        """Evaluate the rule on ``evidence``."""
        raise NotImplementedError

    def _result(
        self,
        status: RuleStatus,
        reason: str,
        step: int | None = None,
        **details: Any,
    ) -> RuleResult:
        return RuleResult(
            rule=self.name,
            status=status,
            reason=reason,
            step=step,
            on_fire=self.on_fire,
            params=self.params(),
            details={k: _plain(v) for k, v in details.items()},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LossNotDecreasing(Rule):
    """The loss stopped decreasing, or rose well above its lowest value."""

    name: ClassVar[str] = "loss_not_decreasing"
    metric: str = TRAIN_LOSS
    num_steps: int = 10
    diff_percent: float = 0.1
    increase_threshold_percent: float = 5.0

    def __post_init__(self) -> None:
        _positive(self, "num_steps", self.num_steps)
        _not_negative(self, "diff_percent", self.diff_percent)
        _not_negative(self, "increase_threshold_percent", self.increase_threshold_percent)

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def evaluate(self, evidence: Evidence) -> RuleResult:
        series = _by_step(evidence.metrics.get(self.metric, ()))
        if len(series) <= self.num_steps:
            return self._result(
                "insufficient_data",
                f"{self.metric} has {len(series)} step(s); the rule compares steps "
                f"num_steps={self.num_steps} apart.",
            )
        values = [v for _, v in series]
        for i in range(self.num_steps, len(series), self.num_steps):
            step, current = series[i]
            lowest = min(values[: i + 1])
            rise = _percent(current - lowest, lowest)
            if rise > self.increase_threshold_percent:
                return self._result(
                    "fired",
                    f"{self.metric} = {current:.6g} at step {step} is {rise:.3g} % above its "
                    f"lowest value {lowest:.6g} (increase_threshold_percent="
                    f"{self.increase_threshold_percent:g}).",
                    step,
                    increase_percent=rise,
                )
            before = min(values[: i - self.num_steps + 1])
            window = min(values[i - self.num_steps + 1 : i + 1])
            drop = _percent(before - window, before)
            if drop < self.diff_percent:
                return self._result(
                    "fired",
                    f"{self.metric} decreased by {drop:.3g} % over the {self.num_steps} steps "
                    f"to step {step} (lowest {before:.6g} -> {window:.6g}); it should drop "
                    f"at least diff_percent={self.diff_percent:g} %.",
                    step,
                    decrease_percent=drop,
                )
        return self._result(
            "ok",
            f"{self.metric} kept decreasing: {values[0]:.6g} -> {min(values):.6g} over "
            f"{len(series)} steps.",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Overfit(Rule):
    """The validation loss is well above the training loss."""

    name: ClassVar[str] = "overfit"
    train_metric: str = TRAIN_LOSS
    validation_metric: str = VAL_LOSS
    start_step: int = 0
    patience: int = 1
    ratio_threshold: float = 0.1

    def __post_init__(self) -> None:
        _not_negative(self, "start_step", self.start_step)
        _positive(self, "patience", self.patience)
        _not_negative(self, "ratio_threshold", self.ratio_threshold)

    def metrics(self) -> tuple[str, ...]:
        return (self.train_metric, self.validation_metric)

    def evaluate(self, evidence: Evidence) -> RuleResult:
        train = dict(_by_step(evidence.metrics.get(self.train_metric, ())))
        valid = _by_step(evidence.metrics.get(self.validation_metric, ()))
        pairs = [(s, train[s], v) for s, v in valid if s in train and s >= self.start_step]
        if not pairs:
            return self._result(
                "insufficient_data",
                f"No step from start_step={self.start_step} has both {self.train_metric} and "
                f"{self.validation_metric}.",
            )
        streak, worst = 0, -math.inf
        for step, t, v in pairs:
            ratio = (v - t) / abs(t) if t else (math.inf if v > t else 0.0)
            worst = max(worst, ratio)
            streak = streak + 1 if ratio > self.ratio_threshold else 0
            if streak >= self.patience:
                return self._result(
                    "fired",
                    f"At step {step} {self.validation_metric} = {v:.6g} is {ratio:.1%} above "
                    f"{self.train_metric} = {t:.6g} (ratio_threshold="
                    f"{self.ratio_threshold:g}, for {streak} step(s); patience={self.patience}).",
                    step,
                    ratio=ratio,
                )
        return self._result(
            "ok",
            f"(validation - training) / training loss stayed at most {worst:.3g} over "
            f"{len(pairs)} step(s) (ratio_threshold={self.ratio_threshold:g}).",
            max_ratio=worst,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Overtraining(Rule):
    """The validation loss stopped improving while the training loss keeps improving."""

    name: ClassVar[str] = "overtraining"
    train_metric: str = TRAIN_LOSS
    validation_metric: str = VAL_LOSS
    patience_train: int = 5
    patience_validation: int = 10
    delta: float = 0.01

    def __post_init__(self) -> None:
        _positive(self, "patience_train", self.patience_train)
        _positive(self, "patience_validation", self.patience_validation)
        _not_negative(self, "delta", self.delta)

    def metrics(self) -> tuple[str, ...]:
        return (self.train_metric, self.validation_metric)

    def evaluate(self, evidence: Evidence) -> RuleResult:
        train = dict(_by_step(evidence.metrics.get(self.train_metric, ())))
        pairs = [
            (s, train[s], v)
            for s, v in _by_step(evidence.metrics.get(self.validation_metric, ()))
            if s in train
        ]
        if len(pairs) <= self.patience_validation:
            return self._result(
                "insufficient_data",
                f"{len(pairs)} step(s) with both losses; the rule waits "
                f"patience_validation={self.patience_validation} steps.",
            )
        best_v, best_v_at = pairs[0][2], 0
        train_then = pairs[0][1]  # the training loss when the validation loss last improved
        low_t, low_t_at = pairs[0][1], 0
        converged = False
        for i, (step, t, v) in enumerate(pairs):
            if v < best_v - self.delta:
                best_v, best_v_at, train_then = v, i, t
            if t < low_t:
                low_t, low_t_at = t, i
            stale = i - best_v_at
            if stale < self.patience_validation:
                continue
            improving = i - low_t_at < self.patience_train and train_then - t > self.delta
            if improving:
                return self._result(
                    "fired",
                    f"{self.validation_metric} has not improved by more than delta="
                    f"{self.delta:g} for {stale} steps (best {best_v:.6g}) while "
                    f"{self.train_metric} kept falling ({train_then:.6g} -> {t:.6g}).",
                    step,
                    steps_without_improvement=stale,
                )
            converged = True
        if converged:
            return self._result(
                "ok",
                f"{self.validation_metric} stopped improving, but so did "
                f"{self.train_metric}: training converged rather than overtrained.",
            )
        return self._result(
            "ok",
            f"{self.validation_metric} improved within every "
            f"patience_validation={self.patience_validation} steps (best {best_v:.6g}).",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassImbalance(Rule):
    """Too few rows of a class, or a class the model mostly gets wrong."""

    name: ClassVar[str] = "class_imbalance"
    threshold_imbalance: float = 10.0
    threshold_misprediction: float = 0.7
    samples: int = 500

    def __post_init__(self) -> None:
        _positive(self, "threshold_imbalance", self.threshold_imbalance)
        _not_negative(self, "threshold_misprediction", self.threshold_misprediction)
        _positive(self, "samples", self.samples)

    def evaluate(self, evidence: Evidence) -> RuleResult:
        if evidence.labels is None:
            return self._result(
                "insufficient_data",
                "No class labels: the run has no classification target to count.",
            )
        labels = [x for x in evidence.labels if not _missing(x)]
        if len(labels) < self.samples:
            return self._result(
                "insufficient_data",
                f"{len(labels)} label(s); the rule needs samples={self.samples}.",
            )
        counts = Counter(labels)
        if len(counts) < 2:
            return self._result("insufficient_data", "The labels hold a single class.")
        (big, n_big), (small, n_small) = counts.most_common()[0], counts.most_common()[-1]
        ratio = n_big / n_small
        shares = {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}
        if ratio > self.threshold_imbalance:
            return self._result(
                "fired",
                f"Class {_plain(big)!r} has {n_big} rows and class {_plain(small)!r} {n_small}: "
                f"{ratio:.3g} times as many (threshold_imbalance={self.threshold_imbalance:g}).",
                ratio=ratio,
                counts=shares,
            )
        rates = _misprediction(evidence.confusion)
        for label, rate in rates.items():
            if rate > self.threshold_misprediction:
                return self._result(
                    "fired",
                    f"{rate:.0%} of the validation rows of class {label!r} are mispredicted "
                    f"(threshold_misprediction={self.threshold_misprediction:g}).",
                    ratio=ratio,
                    counts=shares,
                    misprediction=rates,
                )
        return self._result(
            "ok",
            f"Largest to smallest class {ratio:.3g} (threshold_imbalance="
            f"{self.threshold_imbalance:g})"
            + ("; every class predicted well enough." if rates else "."),
            ratio=ratio,
            counts=shares,
            misprediction=rates,
        )


#: The built-in rules by name.
RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (LossNotDecreasing, Overfit, Overtraining, ClassImbalance)
}


def evaluate_rules(rules: Iterable[Rule], evidence: Evidence) -> list[RuleResult]:
    """Evaluate each rule on ``evidence``."""
    return [rule.evaluate(evidence) for rule in rules]


def parse_rule(spec: Rule | str | Mapping[str, Any]) -> Rule:
    """A rule from itself, a spec ``"overfit:ratio_threshold=0.2,on_fire=stop"`` or a dict
    ``{"rule": "overfit", "ratio_threshold": 0.2}``.

    Raises:
        InvalidInputError: Unknown rule or parameter, or a value of the wrong type.
    """
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, Mapping):
        values = dict(spec)
        name = str(values.pop("rule", values.pop("name", "")))
    elif isinstance(spec, str):
        name, _, rest = spec.strip().partition(":")
        values = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise InvalidInputError(
                    f"Rule parameter {item!r} in {spec!r} is not NAME=VALUE.",
                    hint="Write e.g. overfit:ratio_threshold=0.2,patience=3.",
                )
            values[key.strip()] = _value(raw.strip())
    else:
        raise InvalidInputError(
            "A rule must be a cm.rules.* rule, a spec string or a dict, not "
            f"{type(spec).__name__}.",
            hint='Use cm.rules.overfit() or "overfit:ratio_threshold=0.2".',
        )
    cls = RULES.get(name.strip())
    if cls is None:
        raise InvalidInputError(
            f"Unknown training rule {name!r}.",
            hint=closest(name, RULES) or "Rules: " + ", ".join(RULES) + ".",
        )
    known = {f.name for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise InvalidInputError(
            f"Rule {cls.name!r} has no parameter {unknown[0]!r}.",
            hint=closest(unknown[0], known) or "Parameters: " + ", ".join(sorted(known)) + ".",
        )
    return cls(**_coerce(cls, values))


def parse_rules(specs: Iterable[Rule | str | Mapping[str, Any]] | None) -> list[Rule]:
    """Rules from specs (see :func:`parse_rule`); each rule name at most once.

    Raises:
        InvalidInputError: A bad spec, or the same rule twice.
    """
    rules = [parse_rule(s) for s in specs or ()]
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(
            f"Rule {twice[0]!r} is given twice; its result is recorded under its name.",
            hint="Give each rule once, with the parameters you want.",
        )
    return rules


def default_rules() -> list[Rule]:
    """Every built-in rule with Debugger's default parameters."""
    return [cls() for cls in RULES.values()]


class RuleMonitor:
    """Evaluates rules as training goes and stops LightGBM when a ``stop`` rule fires.

    ``log(step, {"train_loss": ..., "val_loss": ...})`` receives each boosting round's losses
    (the caller logs them to the run). Results freeze when a rule fires; :meth:`finish`
    evaluates the rest on everything seen, with the confusion matrix for class imbalance.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        labels: Sequence[Any] | None = None,
        log: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.rules = list(rules)
        self.labels = labels
        self.log = log
        self._series: dict[str, list[tuple[int, float]]] = {TRAIN_LOSS: [], VAL_LOSS: []}
        self._fired: dict[str, RuleResult] = {}
        self.stopped: RuleResult | None = None

    def before_training(self) -> None:
        """Evaluate the label rules; a ``stop`` one that fires raises :class:`RuleFiredError`."""
        for rule in self.rules:
            if isinstance(rule, ClassImbalance):
                result = rule.evaluate(Evidence(labels=self.labels))
                if result.fired:
                    self._fired[rule.name] = result
                    if rule.on_fire == "stop":
                        self.stopped = result
                        raise RuleFiredError(
                            f"Training stopped before it started: rule {rule.name} fired. "
                            + result.reason,
                            hint="Balance the classes (resample or weight them), or use "
                            'on_fire="record" to train anyway.',
                        )

    def add(self, step: int, losses: Mapping[str, float]) -> RuleResult | None:
        """Record one step's losses, evaluate the metric rules not fired yet; return the first
        ``stop`` rule that fired now (``None`` otherwise)."""
        for key, value in losses.items():
            self._series.setdefault(key, []).append((step, float(value)))
        if self.log is not None:
            self.log(step, dict(losses))
        evidence = Evidence(metrics=self._series)
        stop: RuleResult | None = None
        for rule in self.rules:
            if rule.name in self._fired or not rule.metrics():
                continue
            result = rule.evaluate(evidence)
            if result.fired:
                self._fired[rule.name] = result
                if rule.on_fire == "stop" and stop is None:
                    stop = result
        if stop is not None and self.stopped is None:
            self.stopped = stop
        return stop

    def lightgbm_callback(self) -> Callable[[Any], None]:
        """A LightGBM callback: log both losses each round, stop when a stop rule fires.

        Needs the model fitted with ``eval_set`` named ``train`` and ``validation``
        (``fit_tabular(..., callbacks=[...])`` does that).
        """
        from lightgbm.callback import EarlyStopException

        def callback(env: Any) -> None:
            losses: dict[str, float] = {}
            for item in env.evaluation_result_list:
                data, metric, value = item[0], item[1], item[2]
                key = {"train": TRAIN_LOSS, "validation": VAL_LOSS}.get(data)
                if key and (key not in losses or metric in _LIGHTGBM_LOSSES):
                    losses[key] = float(value)
            if losses and self.add(env.iteration + 1, losses) is not None:
                raise EarlyStopException(env.iteration, env.evaluation_result_list)

        callback.order = 30  # type: ignore[attr-defined]  # after LightGBM's own evaluation
        return callback

    def finish(self, confusion: ConfusionMatrix | None = None) -> list[RuleResult]:
        """Every rule's result: fired ones as they fired, the others evaluated now."""
        evidence = Evidence(metrics=self._series, labels=self.labels, confusion=confusion)
        return [self._fired.get(r.name) or r.evaluate(evidence) for r in self.rules]


def final_losses(
    model: Any, df: pd.DataFrame, *, validation_fraction: float, features: list[str] | None
) -> dict[str, float]:
    """``train_loss`` and ``val_loss`` of a fitted :class:`TabularModel` on the split it was
    trained on (same seed): log loss for a classifier, mean squared error for a regressor —
    what LightGBM reports by default."""
    from sklearn import metrics as skm  # type: ignore[import-untyped]

    from civicml.training.tabular import train_validation_split

    columns = features or model.feature_names
    train, valid = train_validation_split(
        df[[*columns, model.target]],
        model.target,
        task=model.task,
        validation_fraction=validation_fraction,
        seed=model.seed,
    )
    out: dict[str, float] = {}
    for key, part in ((TRAIN_LOSS, train), (VAL_LOSS, valid)):
        truth = part[model.target].to_numpy()
        if model.task == "classification":
            proba = model.predict_proba(part)
            out[key] = float(skm.log_loss(truth, proba, labels=np.asarray(model.classes_)))
        else:
            out[key] = float(skm.mean_squared_error(truth.astype(float), model.predict(part)))
    return out


def gather_evidence(
    rules: Sequence[Rule],
    *,
    params: Mapping[str, str],
    metric_keys: Iterable[str],
    history: Callable[[str], Sequence[tuple[int, float]]],
    read_artifact: Callable[[str], bytes],
    load_frame: Callable[[str, int], pd.DataFrame],
) -> Evidence:
    """The evidence for ``rules`` on a stored run, read through the given callables.

    Metric series come from ``history(key)`` for the keys the run logged. The training data
    (``load_frame(name, version)`` of the run's ``dataset`` param, ``name@vN``, and its
    ``target``) gives class imbalance its labels and, when the run logged no ``train_loss`` /
    ``val_loss`` (a model trained without rules), the final losses of the stored model
    (``model/``, loaded without unpickling) on the split it was trained on, as step 0.
    """
    import tempfile
    from pathlib import Path

    from civicml.training.model import MANIFEST_FILE, MODEL_FILE, TabularModel

    needed = {k for rule in rules for k in rule.metrics()}
    series = {k: list(history(k)) for k in sorted(needed & set(metric_keys))}
    want_labels = any(isinstance(rule, ClassImbalance) for rule in rules)
    want_losses = bool(needed & {TRAIN_LOSS, VAL_LOSS}) and not (
        {TRAIN_LOSS, VAL_LOSS} & set(series)
    )
    name, _, version = str(params.get("dataset", "")).rpartition("@v")
    target = str(params.get("target", ""))
    frame: pd.DataFrame | None = None
    if (want_labels or want_losses) and name and version.isdigit() and target:
        try:
            frame = load_frame(name, int(version))
        except CivicMLError:
            frame = None
    labels = confusion = None
    if want_labels and frame is not None:
        labels = labels_of(frame, target, str(params.get("task", "auto")))
        try:
            confusion = json.loads(read_artifact("evaluation/confusion_matrix.json"))
        except CivicMLError:
            confusion = None
    if want_losses and frame is not None:
        try:
            with tempfile.TemporaryDirectory(prefix="civicml-rules-") as tmp:
                for file in (MODEL_FILE, MANIFEST_FILE):
                    (Path(tmp) / file).write_bytes(read_artifact(f"model/{file}"))
                model = TabularModel.load(Path(tmp))
            fraction = float(params.get("validation_fraction", 0.2))
            losses = final_losses(model, frame, validation_fraction=fraction, features=None)
            series.update({k: [(0, v)] for k, v in losses.items()})
        except CivicMLError:
            pass  # no built-in model on this run: the loss rules report insufficient data
    return Evidence(metrics=series, labels=labels, confusion=confusion)


def labels_of(df: pd.DataFrame, target: str, task: str = "auto") -> list[Any] | None:
    """The target's values when it is a classification target (``None`` for regression)."""
    from civicml.training.tabular import _resolve_task

    if target not in df.columns:
        return None
    resolved = _resolve_task(df[target], target, task)
    return df[target].tolist() if resolved == "classification" else None


def summary(results: Sequence[RuleResult]) -> dict[str, Any]:
    """The JSON document recorded as ``rules/evaluation.json``."""
    return {
        "fired": [r.rule for r in results if r.fired],
        "results": [r.model_dump(mode="json") for r in results],
    }


def dumps(results: Sequence[RuleResult], **extra: Any) -> str:
    """:func:`summary` (plus ``extra``) as indented JSON."""
    return json.dumps({**summary(results), **extra}, indent=2, default=str)


def with_on_fire(rules: Sequence[Rule], on_fire: OnFire) -> list[Rule]:
    """``rules`` with ``on_fire`` changed (e.g. the pipeline check only records)."""
    return [replace(r, on_fire=on_fire) for r in rules]


def _by_step(series: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """One value per step (the mean of several), by step; NaNs dropped."""
    grouped: dict[int, list[float]] = {}
    for step, value in series:
        if value is not None and math.isfinite(float(value)):
            grouped.setdefault(int(step), []).append(float(value))
    return [(s, sum(vs) / len(vs)) for s, vs in sorted(grouped.items())]


def _percent(change: float, base: float) -> float:
    if base == 0:
        return 0.0 if change == 0 else math.copysign(math.inf, change)
    return 100.0 * change / abs(base)


def _misprediction(confusion: ConfusionMatrix | None) -> dict[str, float]:
    if not confusion:
        return {}
    rates = {}
    for i, (label, row) in enumerate(zip(confusion["labels"], confusion["matrix"], strict=True)):
        total = sum(row)
        if total:
            rates[str(label)] = round(1.0 - row[i] / total, 6)
    return rates


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _coerce(cls: type[Rule], values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = str(types[key])
        try:
            if kind == "int" and not isinstance(value, bool):
                if float(value) != int(float(value)):
                    raise ValueError(value)
                out[key] = int(float(value))
            elif kind == "float" and not isinstance(value, bool):
                out[key] = float(value)
            elif kind == "OnFire":
                if value not in ("record", "stop"):
                    raise ValueError(value)
                out[key] = value
            elif kind == "str":
                out[key] = str(value)
            else:
                raise ValueError(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"Rule {cls.name!r}: {key}={value!r} is not a valid {kind}.",
                hint="on_fire is 'record' or 'stop'; the other parameters are numbers or "
                "metric names.",
            ) from None
    return out


def _positive(rule: Rule, name: str, value: float) -> None:
    if not value > 0:
        raise InvalidInputError(
            f"Rule {rule.name!r}: {name} must be positive, not {value!r}.",
            hint=f"The default is {type(rule)().params()[name]!r}.",
        )


def _not_negative(rule: Rule, name: str, value: float) -> None:
    if not value >= 0:
        raise InvalidInputError(
            f"Rule {rule.name!r}: {name} must be zero or more, not {value!r}.",
            hint=f"The default is {type(rule)().params()[name]!r}.",
        )
