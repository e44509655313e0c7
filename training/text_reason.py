"""Train the contact-reason text classifier: Bitext messages → the contract's contact reasons.

    Bitext CSV → intent mapped to a reason (`models.contact_reason.INTENT_REASONS`) → seeded
    split stratified by intent (train / validation / test) → each candidate pipeline fitted
    on train and measured on validation → the best refitted on train + validation → test
    metrics beside the majority baseline (and on typo-noised test messages) → MLflow run
    (params, accuracy, per-reason precision and recall, the confusion matrix) → registry
    version `challenger`, `champion` only when its test accuracy beats the current
    champion's on the same test messages (`training.register.promote`)

A dedicated module rather than a trainer of `training.trainers.TRAINERS`: that interface
takes a `ModelSpec` and a Feast store and every trainer reads label events and point-in-time
features from contract tables, while this model reads one CSV of messages and no feature
service. The outputs are the same: a `training.trainer.TrainResult`, a run logged and a
version registered through `training.register`.

The candidates share one input: TF-IDF of character n-grams within word boundaries (2 to 5,
so a misspelt word still shares most of its n-grams) beside TF-IDF of words and word pairs.
They differ in the classifier: multinomial logistic regression (probabilities of its own),
with reasons weighted inversely to their frequency or not, or a linear SVM calibrated by
`CalibratedClassifierCV` (sigmoid, 3 folds). The clean validation messages do not tell them
apart (all about 99.9%), so the choice is on the mean of clean and typo-noised validation
accuracy. Also tried and dropped: classifying the 27 intents and summing their
probabilities per reason (no better on validation with typos).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from aftersale.settings import Settings
from models.contact_reason import (
    CONFIDENCE_THRESHOLD,
    NAME,
    PRIMARY_METRIC,
    REASONS,
    TEXT,
    reason_of,
)
from models.served.registry import tracking
from models.served.text_reason import PYFUNC_CODE, ReasonClassifier, answers_of
from training.data import write_json
from training.register import (
    file_digest,
    log_run,
    promote,
    record_promotion,
    tag_version,
)
from training.trainer import TrainResult

log = logging.getLogger(__name__)

BITEXT_RELATIVE_PATH = Path(
    "../shared/data/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
)
SEED = 7
# Shares of messages for train, validation and test.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
# Typo noise of the robustness figure: edits per character.
TYPO_RATE = 0.04


def default_bitext_path() -> Path:
    """Where the shared Bitext sample lives for this checkout: `../shared/data/` relative to
    the project root, resolved from this module's location (the file may be absent)."""
    return (Path(__file__).resolve().parents[1] / BITEXT_RELATIVE_PATH).resolve()


def load_messages(path: Path) -> pd.DataFrame:
    """Bitext's messages with their intent and contract reason.

    Returns:
        text, intent, reason; one row per message.

    Raises:
        KeyError: An intent has no reason in `INTENT_REASONS`.
    """
    raw = pd.read_csv(path, usecols=["instruction", "intent"])
    return pd.DataFrame(
        {
            TEXT: raw["instruction"].fillna("").astype(str),
            "intent": raw["intent"].astype(str),
            "reason": raw["intent"].map(reason_of).astype(str),
        }
    )


def split_messages(
    messages: pd.DataFrame, seed: int = SEED, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, validation and test messages, a seeded split stratified by intent (messages
    carry no time, so the split is random rather than by time)."""
    shares = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
    earlier, test = train_test_split(
        messages, test_size=shares[2], random_state=seed, stratify=messages["intent"]
    )
    train, validation = train_test_split(
        earlier,
        test_size=shares[1] / (shares[0] + shares[1]),
        random_state=seed,
        stratify=earlier["intent"],
    )
    return (
        train.reset_index(drop=True),
        validation.reset_index(drop=True),
        test.reset_index(drop=True),
    )


def text_features() -> FeatureUnion:
    """Character n-grams within word boundaries (robust to typos) beside words and pairs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return FeatureUnion(
        [
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True
                ),
            ),
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
        ]
    )


def logistic(seed: int, class_weight: str | None = "balanced") -> Pipeline:
    """TF-IDF into multinomial logistic regression; reasons weighted inversely to their
    frequency by default (`other` gathers 14 intents, over half the messages)."""
    classifier = LogisticRegression(
        C=20.0, max_iter=3000, class_weight=class_weight, random_state=seed
    )
    return Pipeline([("features", text_features()), ("classifier", classifier)])


def unweighted_logistic(seed: int) -> Pipeline:
    """`logistic` with every message weighted alike."""
    return logistic(seed, class_weight=None)


def calibrated_svm(seed: int) -> Pipeline:
    """TF-IDF into a linear SVM (reasons weighted as in `logistic`) with sigmoid-calibrated
    probabilities (3 folds)."""
    svm = LinearSVC(C=0.5, class_weight="balanced", random_state=seed)
    return Pipeline(
        [
            ("features", text_features()),
            ("classifier", CalibratedClassifierCV(svm, method="sigmoid", cv=3)),
        ]
    )


CANDIDATES: Mapping[str, Callable[[int], Pipeline]] = {
    "logistic": logistic,
    "unweighted_logistic": unweighted_logistic,
    "calibrated_svm": calibrated_svm,
}


def add_typos(texts: Sequence[str], rate: float = TYPO_RATE, seed: int = SEED) -> list[str]:
    """The texts with seeded typos: each letter, with probability `rate`, is swapped with
    the next character, dropped or doubled (one of the three, equally likely)."""
    rng = np.random.default_rng(seed)
    noisy = []
    for text in texts:
        characters = list(text)
        out: list[str] = []
        index = 0
        while index < len(characters):
            character = characters[index]
            if character.isalpha() and rng.random() < rate:
                edit = rng.integers(3)
                if edit == 0 and index + 1 < len(characters):
                    out += [characters[index + 1], character]
                    index += 2
                    continue
                if edit == 1:
                    index += 1
                    continue
                out += [character, character]
            else:
                out.append(character)
            index += 1
        noisy.append("".join(out))
    return noisy


def reason_metrics(expected: Sequence[str], answered: Sequence[str]) -> dict[str, float]:
    """Accuracy, and precision and recall of each contract reason (`precision_<reason>`,
    `recall_<reason>`; a reason neither expected nor answered is left out)."""
    expected, answered = np.asarray(expected, dtype=object), np.asarray(answered, dtype=object)
    metrics = {"accuracy": float(accuracy_score(expected, answered))}
    present = [r for r in REASONS if (expected == r).any() or (answered == r).any()]
    precision, recall, _, _ = precision_recall_fscore_support(
        expected, answered, labels=present, zero_division=0
    )
    for reason, p, r in zip(present, precision, recall, strict=True):
        metrics[f"precision_{reason}"] = float(p)
        metrics[f"recall_{reason}"] = float(r)
    return metrics


def confusion_table(expected: Sequence[str], answered: Sequence[str]) -> pd.DataFrame:
    """Counts of expected reason (rows) × answered reason (columns), over every reason."""
    counts = confusion_matrix(expected, answered, labels=list(REASONS))
    return pd.DataFrame(counts, index=pd.Index(REASONS, name="expected"), columns=list(REASONS))


def evaluate(model: ReasonClassifier, messages: pd.DataFrame) -> dict[str, float]:
    """`reason_metrics` of the model's answers, plus the share answered low-confidence."""
    answers = model.answer(messages)
    metrics = reason_metrics(messages["reason"], answers["reason"])
    metrics["low_confidence_share"] = float(answers["low_confidence"].mean())
    return metrics


@dataclass(frozen=True)
class Selection:
    """Which candidate won on validation, and what each scored there (the mean accuracy on
    the clean and the typo-noised validation messages)."""

    chosen: str
    validation_accuracy: dict[str, float]


def select_and_fit(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    candidates: Mapping[str, Callable[[int], Pipeline]] = CANDIDATES,
    seed: int = SEED,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> tuple[ReasonClassifier, Selection]:
    """Fit every candidate on `train`, keep the most accurate on `validation` and on the
    same messages with typos (the mean of both accuracies, answers after the confidence
    threshold; ties go to the first listed), and refit it on both."""
    noisy = validation.assign(**{TEXT: add_typos(validation[TEXT].tolist(), seed=seed + 1)})
    scores = {}
    for name, build in candidates.items():
        pipeline = build(seed).fit(train[TEXT], train["reason"])
        fitted = ReasonClassifier(NAME, pipeline, threshold=threshold)
        clean, typos = evaluate(fitted, validation)["accuracy"], evaluate(fitted, noisy)["accuracy"]
        scores[name] = (clean + typos) / 2.0
        log.info("%s: validation accuracy %.4f, with typos %.4f", name, clean, typos)
    chosen = max(scores, key=lambda name: (scores[name], -list(candidates).index(name)))
    both = pd.concat([train, validation], ignore_index=True)
    pipeline = candidates[chosen](seed).fit(both[TEXT], both["reason"])
    return ReasonClassifier(NAME, pipeline, threshold=threshold), Selection(chosen, scores)


def champion_accuracy(messages: pd.DataFrame, threshold: float = CONFIDENCE_THRESHOLD):
    """The champion gate's metric: accuracy of a registered version's answers on the test
    messages (`training.register.score_version` returns its pyfunc output flattened, one
    row of the contract's reasons after another)."""
    expected = messages["reason"].to_numpy()

    def score(flat: np.ndarray) -> float:
        probabilities = np.asarray(flat, dtype=np.float64).reshape(len(messages), len(REASONS))
        return reason_metrics(expected, answers_of(probabilities, REASONS, threshold)["reason"])[
            PRIMARY_METRIC
        ]

    return score


def train_text_reason(
    settings: Settings,
    path: Path | None = None,
    *,
    register: bool = True,
    tracking_uri: str | None = None,
    seed: int = SEED,
    sample: int | None = None,
) -> TrainResult:
    """Train, evaluate, log and register the contact-reason classifier on Bitext.

    Args:
        settings: The tracking store's default and the local artifact folder.
        path: The Bitext CSV (default: `default_bitext_path()`).
        register: Log to MLflow and register (False: train and evaluate only).
        tracking_uri: MLflow URI (default: `settings.tracking_uri`).
        seed: Seed of the split, the typos and the classifiers.
        sample: Messages used at most, a seeded sample (None: all).

    Returns:
        The result; `metrics` holds the test figures (`accuracy`, `typo_accuracy`, per-reason
        precision and recall), `scores` the test messages with their answers.

    Raises:
        FileNotFoundError: The CSV is absent.
    """
    path = path or default_bitext_path()
    if not path.is_file():
        raise FileNotFoundError(f"Bitext messages not found at {path}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    messages = load_messages(path)
    if sample is not None and sample < len(messages):
        messages = messages.sample(sample, random_state=seed).reset_index(drop=True)
    train, validation, test = split_messages(messages, seed)
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    model, selection = select_and_fit(train, validation, seed=seed)
    seconds["fit"] = time.perf_counter() - start

    start = time.perf_counter()
    metrics = evaluate(model, test)
    noisy = test.assign(**{TEXT: add_typos(test[TEXT].tolist(), seed=seed)})
    noisy_metrics = evaluate(model, noisy)
    metrics["typo_accuracy"] = noisy_metrics["accuracy"]
    metrics["typo_low_confidence_share"] = noisy_metrics["low_confidence_share"]
    majority = train["reason"].mode().iloc[0]
    baseline_metrics = reason_metrics(test["reason"], [majority] * len(test))
    answers = model.answer(test)
    scores = pd.concat([test, answers.add_prefix("answer_")], axis=1)
    seconds["evaluate"] = time.perf_counter() - start

    result = TrainResult(
        name=NAME,
        primary_metric=PRIMARY_METRIC,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics={f"{k}_accuracy": v for k, v in selection.validation_accuracy.items()},
        calibration={
            "candidate": selection.chosen,
            "validation_accuracy": selection.validation_accuracy,
            "threshold": model.threshold,
        },
        data_version=file_digest(path)[:16],
        features=[TEXT],
        split={
            "seed": seed,
            "train_rows": len(train),
            "validation_rows": len(validation),
            "test_rows": len(test),
        },
        scores=scores,
        model=model,
        seconds=seconds,
    )
    if register:
        start = time.perf_counter()
        _log_and_register(result, test, settings, tracking_uri or settings.tracking_uri, path)
        seconds["register"] = time.perf_counter() - start
    return result


def _log_and_register(
    result: TrainResult, test: pd.DataFrame, settings: Settings, uri: str, path: Path
) -> None:
    """Log the run (metrics, confusion matrix), register the model and run the gate."""
    model: ReasonClassifier = result.model
    artifact_root = settings.artifact_root if uri.startswith("sqlite:") else None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    metrics |= {f"test_baseline_{k}": v for k, v in result.baseline_metrics.items()}
    metrics |= {f"validation_{k}": v for k, v in result.validation_metrics.items()}
    value = result.metrics[PRIMARY_METRIC]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        confusion = folder / "confusion_matrix.csv"
        confusion_table(test["reason"], result.scores["answer_reason"]).to_csv(confusion)
        answers = folder / "test_answers.csv"
        result.scores.to_csv(answers, index=False)
        selection = write_json(folder / "selection.json", result.calibration)
        with tracking(uri):
            run_id, info = log_run(
                experiment=NAME,
                artifact_root=artifact_root,
                run_name=f"{NAME}-{result.data_version[:8]}",
                params={
                    "candidate": result.calibration["candidate"],
                    "threshold": model.threshold,
                    "reasons": ",".join(model.reasons),
                    "primary_metric": PRIMARY_METRIC,
                    "source": path.name,
                    **result.split,
                    "data_version": result.data_version,
                },
                metrics=metrics,
                tags={
                    "model": NAME,
                    "kind": "text",
                    "entity": "contact",
                    "decision_time": "when a contact arrives as text without a reason",
                    "data_version": result.data_version,
                },
                artifacts={"evaluation": [confusion, answers, selection]},
                model=model,
                input_example=test.head(5),
                signature_rows=test.head(200),
                registered_name=NAME,
                python_model=PYFUNC_CODE,
            )
            version = str(info.registered_model_version)
            promotion = promote(
                NAME,
                version,
                PRIMARY_METRIC,
                value,
                model.input_frame(test),
                None,
                0.0,
                champion_metric=champion_accuracy(test, model.threshold),
                higher_is_better=True,
            )
            tag_version(
                NAME,
                version,
                {
                    "data_version": result.data_version,
                    f"test_{PRIMARY_METRIC}": f"{value:.6f}",
                    "promotion": promotion.reason,
                },
            )
            record_promotion(run_id, promotion)
    result.run_id, result.version, result.promotion = run_id, version, promotion
