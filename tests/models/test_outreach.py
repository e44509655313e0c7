"""Outreach policy: consent, quiet hours, frequency cap and capacity hold for any input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.policies.outreach import (
    ACTION_CHANNELS,
    ACTIONS,
    NEEDS_MARKETING_CONSENT,
    UPLIFT,
    WINBACK_OFFER,
    OutreachRules,
    plan_outreach,
    window_past_promise,
)

ZONES = ("Europe/Berlin", "Europe/Dublin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
AS_OF = pd.Timestamp("2025-03-30T05:30:00Z")  # a DST change day in Europe


def customers_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(region="DE", language="de")


customer = st.fixed_dictionaries(
    {
        "timezone": st.sampled_from(ZONES),
        "preferred_channel": st.sampled_from(("email", "sms", "voice")),
        "consent_email": st.booleans(),
        "consent_sms": st.booleans(),
        "consent_voice": st.booleans(),
        "consent_marketing": st.booleans(),
    }
)


@st.composite
def business(draw):
    n = draw(st.integers(1, 12))
    people = [dict(draw(customer), customer_id=f"c{i}") for i in range(n)]
    candidates = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.sampled_from(ACTIONS),
                st.floats(0, 1),
                st.floats(0, 5_000),
            ),
            max_size=40,
        )
    )
    history = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 20)), max_size=10))
    rules = OutreachRules(
        capacity=draw(st.integers(0, 15)),
        quiet_hours_start=draw(st.integers(0, 23)),
        quiet_hours_end=draw(st.integers(0, 23)),
        frequency_cap=draw(st.integers(1, 3)),
        frequency_cap_days=draw(st.integers(1, 14)),
    )
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i, *_ in candidates],
            "action": [a for _, a, *_ in candidates],
            "subject_id": [f"x{k}" for k in range(len(candidates))],
            "risk": [r for *_, r, _ in candidates],
            "value": [v for *_, v in candidates],
        }
    )
    past = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i, _ in history],
            "queued_ts": pd.to_datetime(
                [AS_OF - pd.Timedelta(days=d) for _, d in history], utc=True
            ),
        }
    )
    return frame, customers_frame(people), past, rules


def reference_queue(candidates, customers, history, rules) -> list[str]:
    """Subjects of the queue by the policy's plain definition, one candidate at a time."""
    profile = customers.set_index("customer_id")
    window = history[history["queued_ts"] > AS_OF - pd.Timedelta(days=rules.frequency_cap_days)]
    used = window.groupby("customer_id").size().to_dict()
    allowed = []
    for i, row in enumerate(candidates.itertuples()):
        who = profile.loc[row.customer_id]
        channels = [c for c in ACTION_CHANNELS[row.action] if who[f"consent_{c}"]]
        if row.action in NEEDS_MARKETING_CONSENT and not who["consent_marketing"]:
            channels = []
        priority = row.risk * row.value * UPLIFT[row.action]
        if channels and priority > 0:
            allowed.append((-priority, i, row.customer_id, row.subject_id))
    out = []
    for _, _, who, subject in sorted(allowed):
        if len(out) == rules.capacity:
            break
        if used.get(who, 0) < rules.frequency_cap:
            used[who] = used.get(who, 0) + 1
            out.append(subject)
    return out


@settings(max_examples=60, deadline=None)
@given(business())
def test_rules_hold_for_any_business(data) -> None:
    candidates, customers, history, rules = data
    queue = plan_outreach(candidates, customers, history, AS_OF, rules)
    # Capacity, order and ranks.
    assert len(queue) <= rules.capacity
    assert (np.diff(queue["priority"].to_numpy()) <= 0).all()
    assert queue["rank"].tolist() == list(range(1, len(queue) + 1))
    profile = customers.set_index("customer_id")
    for row in queue.itertuples():
        who = profile.loc[row.customer_id]
        # Consent: the channel is allowed for the action and consented to.
        assert row.channel in ACTION_CHANNELS[row.action]
        assert bool(who[f"consent_{row.channel}"])
        if row.action in NEEDS_MARKETING_CONSENT:
            assert bool(who["consent_marketing"])
        # Preferred channel wins when it is allowed and consented.
        if who["preferred_channel"] in ACTION_CHANNELS[row.action] and bool(
            who[f"consent_{who['preferred_channel']}"]
        ):
            assert row.channel == who["preferred_channel"]
        # Quiet hours: the window lies in open hours of the customer's own zone.
        start = pd.Timestamp(row.send_window_start)
        end = pd.Timestamp(row.send_window_end)
        assert start >= AS_OF.floor("s")
        assert end > start
        assert str(start.tz_convert(row.timezone).utcoffset()) == str(start.utcoffset())
        if rules.open_hours < 24:
            local = start.tz_convert(row.timezone)
            since_open = (local.hour - rules.quiet_hours_end) % 24
            assert since_open < rules.open_hours
        assert row.priority == pytest.approx(row.risk * row.value * UPLIFT[row.action])
    # The same queue as the plain definition: sort everything allowed, cap, cut.
    expected = reference_queue(candidates, customers, history, rules)
    assert queue["subject_id"].tolist() == expected
    # Frequency cap: earlier actions in the window plus new ones stay within the cap.
    window = history[history["queued_ts"] > AS_OF - pd.Timedelta(days=rules.frequency_cap_days)]
    before = window.groupby("customer_id").size()
    now = queue.groupby("customer_id").size()
    total = now.add(before.reindex(now.index).fillna(0))
    assert (total <= rules.frequency_cap).all()


def test_highest_expected_value_first_and_capacity_fills() -> None:
    customers = customers_frame(
        [
            {
                "customer_id": f"c{i}",
                "timezone": "Europe/Berlin",
                "preferred_channel": "email",
                "consent_email": True,
                "consent_sms": True,
                "consent_voice": True,
                "consent_marketing": True,
            }
            for i in range(3)
        ]
    )
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2"],
            "action": [WINBACK_OFFER] * 3,
            "subject_id": [None] * 3,
            "risk": [0.1, 0.9, 0.5],
            "value": [100.0, 100.0, 100.0],
        }
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    queue = plan_outreach(candidates, customers, empty, AS_OF, OutreachRules(capacity=2))
    assert queue["customer_id"].tolist() == ["c1", "c2"]


@pytest.mark.parametrize(
    ("most_likely", "promised", "expected"),
    [
        ("2025-03-31", "2025-03-30", True),
        ("2025-03-30", "2025-03-30", False),
        ("2025-03-29", "2025-03-30", False),
        ("NaT", "2025-03-30", False),
        ("2025-03-31", "NaT", False),
    ],
)
def test_delay_notice_triggers_when_the_estimate_passes_the_promise(
    most_likely: str, promised: str, expected: bool
) -> None:
    got = window_past_promise(
        np.array([most_likely], dtype="datetime64[D]"), np.array([promised], "datetime64[D]")
    )
    assert got.tolist() == [expected]


def test_due_delay_notice_is_queued_first_whatever_its_priority() -> None:
    customers = customers_frame(
        [
            {
                "customer_id": f"c{i}",
                "timezone": "Europe/Berlin",
                "preferred_channel": "email",
                "consent_email": True,
                "consent_sms": True,
                "consent_voice": True,
                "consent_marketing": True,
            }
            for i in range(3)
        ]
    )
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2"],
            "action": [WINBACK_OFFER, "delay_notice", "delay_notice"],
            "subject_id": [None, "s1", "s2"],
            "risk": [0.9, 0.01, 0.02],
            # c1's value is unknown (priority 0): a due notice is still sent.
            "value": [1_000.0, 0.0, 100.0],
            "due": [False, True, False],
        }
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    queue = plan_outreach(candidates, customers, empty, AS_OF, OutreachRules(capacity=2))
    assert queue["customer_id"].tolist() == ["c1", "c0"]
    without = plan_outreach(
        candidates.drop(columns="due"), customers, empty, AS_OF, OutreachRules(capacity=2)
    )
    assert without["customer_id"].tolist() == ["c0", "c2"]


def test_quiet_hours_push_the_window_to_the_morning() -> None:
    customers = customers_frame(
        [
            {
                "customer_id": "c0",
                "timezone": "Asia/Tokyo",
                "preferred_channel": "sms",
                "consent_email": False,
                "consent_sms": True,
                "consent_voice": False,
                "consent_marketing": True,
            }
        ]
    )
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0"],
            "action": ["delay_notice"],
            "subject_id": ["s1"],
            "risk": [0.8],
            "value": [10.0],
        }
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    # 14:00 UTC is 23:00 in Tokyo: quiet until 08:00 the next morning.
    queue = plan_outreach(
        candidates, customers, empty, pd.Timestamp("2025-06-02T14:00:00Z"), OutreachRules()
    )
    assert queue.loc[0, "send_window_start"] == "2025-06-03T08:00:00+09:00"
    assert queue.loc[0, "send_window_end"] == "2025-06-03T21:00:00+09:00"
    assert queue.loc[0, "channel"] == "sms"
