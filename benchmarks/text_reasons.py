"""Contact reasons from text: the classifier's accuracy on held-out Bitext messages, on the
same messages with typos, and on messages written by hand for this shop.

    uv run python -m benchmarks text_reasons
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Messages written for this project (not taken from Bitext), with their expected reason.
HAND_WRITTEN = Path(__file__).resolve().parents[1] / "tests/models/contact_messages.csv"


def bench_text_reasons(customers: int, out: Path) -> dict[str, float]:
    """Train on a seeded split of Bitext (not registered) and measure three accuracies.
    `customers` is not used.

    Returns:
        held-out, typo and hand-written accuracies (also printed).
    """
    from aftersale.settings import Settings
    from models.contact_reason import INTENT_REASONS
    from training.text_reason import confusion_table, default_bitext_path, train_text_reason

    del customers
    print("\n## text_reasons (contact reason from a message)")
    source = default_bitext_path()
    if not source.is_file():
        print(f"  skipped: Bitext messages not found at {source}")
        return {}
    result = train_text_reason(Settings(), source, register=False)
    hand = pd.read_csv(HAND_WRITTEN)
    answers = result.model.answer(hand)
    correct = answers["reason"].to_numpy() == hand["reason"].to_numpy()
    learnable = hand["reason"].isin(set(INTENT_REASONS.values())).to_numpy()
    figures = {
        "heldout_accuracy": result.metrics["accuracy"],
        "typo_accuracy": result.metrics["typo_accuracy"],
        "hand_accuracy": float(correct.mean()),
        "hand_accuracy_learnable": float(correct[learnable].mean()),
        "baseline_accuracy": result.baseline_metrics["accuracy"],
    }
    split = result.split
    print(
        f"  candidate {result.calibration['candidate']} (validation, mean of clean and typos: "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.calibration["validation_accuracy"].items())
        + ")"
    )
    print(f"  held-out Bitext ({split['test_rows']} messages): {figures['heldout_accuracy']:.4f}")
    print(f"  same messages with typos: {figures['typo_accuracy']:.4f}")
    print(
        f"  hand-written ({len(hand)} messages): {figures['hand_accuracy']:.4f}; "
        f"{figures['hand_accuracy_learnable']:.4f} on the {int(learnable.sum())} whose reason "
        "Bitext covers"
    )
    print(f"  majority baseline on held-out Bitext: {figures['baseline_accuracy']:.4f}")
    print(f"  fit {result.seconds['fit']:.1f} s")
    table = hand.assign(
        answer=answers["reason"], confidence=answers["confidence"].round(3),
        low_confidence=answers["low_confidence"],
    )  # fmt: skip
    table.to_csv(out / "text_reasons_hand.csv", index=False)
    confusion_table(result.scores["reason"], result.scores["answer_reason"]).to_csv(
        out / "text_reasons_confusion.csv"
    )
    print(f"  answers: {out / 'text_reasons_hand.csv'}")
    return figures
