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
    contacted,
    hold_out,
    plan_outreach,
    window_past_promise,
)

ZONES = ("Europe/Berlin", "Europe/Dublin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
AS_OF = pd.Timestamp("2025-03-30T05:30:00Z")  # a DST change day in Europe


def customers_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(region="DE", language="de")


def consenting(n: int, preferred: str) -> pd.DataFrame:
    """n customers in Berlin, c0 … c{n-1}, who consented to every channel and marketing."""
    return customers_frame(
        [
            {
                "customer_id": f"c{i}",
                "timezone": "Europe/Berlin",
                "preferred_channel": preferred,
                "consent_email": True,
                "consent_sms": True,
                "consent_voice": True,
                "consent_marketing": True,
            }
            for i in range(n)
        ]
    )


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
    channels = ("email", "sms", "voice")
    rules = OutreachRules(
        capacity=draw(st.integers(0, 15)),
        quiet_hours_start=draw(st.integers(0, 23)),
        quiet_hours_end=draw(st.integers(0, 23)),
        frequency_cap=draw(st.integers(1, 3)),
        frequency_cap_days=draw(st.integers(1, 14)),
        channel_capacity=draw(
            st.dictionaries(st.sampled_from(channels), st.integers(0, 6), max_size=3)
        ),
        channel_cost=draw(st.dictionaries(st.sampled_from(channels), st.floats(0, 50), max_size=3)),
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


def assumed_worth(row) -> float:
    """What an action saves under the assumed uplift: risk × value × `UPLIFT`."""
    return row.risk * row.value * UPLIFT.get(row.action, float("nan"))


def measured_worth(row) -> float:
    """What an action saves under a measured uplift: uplift × the customer's value; an
    action not measured to help saves nothing worth sending."""
    if not row.uplift > 0:
        return float("nan")
    return row.uplift * row.customer_value


def reference_queue(
    candidates, customers, history, rules, worth=assumed_worth
) -> list[tuple[str, str]]:
    """(subject, channel) of the queue by the policy's plain definition, one candidate at a
    time: by priority on the first-choice channel (the preferred one when allowed and
    consented), each taken on the first of its consented channels with room where it is
    still worth its cost, within the customer's cap and the queue's capacity."""
    profile = customers.set_index("customer_id")
    window = history[history["queued_ts"] > AS_OF - pd.Timedelta(days=rules.frequency_cap_days)]
    used = window.groupby("customer_id").size().to_dict()
    left = {c: rules.channel_capacity.get(c, rules.capacity) for c in ("email", "sms", "voice")}
    allowed = []
    for i, row in enumerate(candidates.itertuples()):
        who = profile.loc[row.customer_id]
        channels = [c for c in ACTION_CHANNELS[row.action] if who[f"consent_{c}"]]
        if row.action in NEEDS_MARKETING_CONSENT and not who["consent_marketing"]:
            channels = []
        if who["preferred_channel"] in channels:
            channels.remove(who["preferred_channel"])
            channels.insert(0, who["preferred_channel"])
        saved = worth(row)
        if channels and saved - rules.cost(channels[0]) > 0:
            allowed.append((-(saved - rules.cost(channels[0])), i, row, channels, saved))
    taken = []
    for *_, row, channels, saved in sorted(allowed, key=lambda t: t[:2]):
        if len(taken) == rules.capacity:
            break
        if used.get(row.customer_id, 0) >= rules.frequency_cap:
            continue
        for k, channel in enumerate(channels):
            if left[channel] > 0 and (k == 0 or saved - rules.cost(channel) > 0):
                left[channel] -= 1
                used[row.customer_id] = used.get(row.customer_id, 0) + 1
                taken.append((-(saved - rules.cost(channel)), len(taken), row.subject_id, channel))
                break
    return [(subject, channel) for *_, subject, channel in sorted(taken)]


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
        # Preferred channel wins when it is allowed and consented (and has no capacity of
        # its own that it may have run out of).
        preferred = who["preferred_channel"]
        if (
            preferred in ACTION_CHANNELS[row.action]
            and bool(who[f"consent_{preferred}"])
            and preferred not in rules.channel_capacity
        ):
            assert row.channel == preferred
        # Quiet hours: the window lies in open hours of the customer's own zone.
        start = pd.Timestamp(row.send_window_start)
        end = pd.Timestamp(row.send_window_end)
        assert start >= AS_OF.floor("s")
        assert end > start
        assert str(start.tz_convert(who["timezone"]).utcoffset()) == str(start.utcoffset())
        if rules.open_hours < 24:
            local = start.tz_convert(who["timezone"])
            since_open = (local.hour - rules.quiet_hours_end) % 24
            assert since_open < rules.open_hours
        # Worth more than it costs, on the channel it goes out on.
        assert row.cost == rules.cost(row.channel)
        saved = row.risk * row.value * UPLIFT[row.action]
        assert row.priority == pytest.approx(saved - row.cost)
        assert row.priority > 0
    # Each channel's capacity holds.
    for channel, count in queue["channel"].value_counts().items():
        assert count <= rules.channel_capacity.get(channel, rules.capacity)
    # The same queue as the plain definition: sort everything allowed, walk, cap, cut.
    expected = reference_queue(candidates, customers, history, rules)
    assert list(zip(queue["subject_id"], queue["channel"], strict=True)) == expected
    # Frequency cap: earlier actions in the window plus new ones stay within the cap.
    window = history[history["queued_ts"] > AS_OF - pd.Timedelta(days=rules.frequency_cap_days)]
    before = window.groupby("customer_id").size()
    now = queue.groupby("customer_id").size()
    total = now.add(before.reindex(now.index).fillna(0))
    assert (total <= rules.frequency_cap).all()


@st.composite
def measured_business(draw):
    """A business whose candidates carry the uplift model's predicted effects: some
    negative, some zero, some unknown (NaN), with an interval and the customer's value."""
    candidates, customers, history, rules = draw(business())
    n = len(candidates)
    effect = st.one_of(st.floats(-0.3, 0.3), st.just(0.0), st.just(float("nan")))
    uplift = np.array(draw(st.lists(effect, min_size=n, max_size=n)), dtype=np.float64)
    worth = draw(st.lists(st.floats(0, 5_000), min_size=n, max_size=n))
    candidates = candidates.assign(
        uplift=uplift,
        uplift_low=uplift - 0.05,
        uplift_high=uplift + 0.05,
        customer_value=np.asarray(worth, dtype=np.float64),
    )
    return candidates, customers, history, rules


@settings(max_examples=60, deadline=None)
@given(measured_business())
def test_measured_uplift_rules_hold_for_any_business(data) -> None:
    candidates, customers, history, rules = data
    queue = plan_outreach(candidates, customers, history, AS_OF, rules)
    assert len(queue) <= rules.capacity
    assert (np.diff(queue["priority"].to_numpy()) <= 0).all()
    # No queued action has a predicted effect at or below zero (or an unknown one).
    assert (queue["uplift"] > 0).all()
    source = candidates.loc[queue.index]
    np.testing.assert_array_equal(queue["uplift"], source["uplift"])
    np.testing.assert_array_equal(queue["uplift_low"], source["uplift_low"])
    np.testing.assert_array_equal(queue["uplift_high"], source["uplift_high"])
    # Priority = predicted uplift × customer value − the cost of the channel it goes on.
    np.testing.assert_allclose(
        queue["priority"], source["uplift"] * source["customer_value"] - queue["cost"]
    )
    profile = customers.set_index("customer_id")
    for row in queue.itertuples():
        who = profile.loc[row.customer_id]
        assert row.channel in ACTION_CHANNELS[row.action]
        assert bool(who[f"consent_{row.channel}"])
        if row.action in NEEDS_MARKETING_CONSENT:
            assert bool(who["consent_marketing"])
        assert row.cost == rules.cost(row.channel)
    for channel, count in queue["channel"].value_counts().items():
        assert count <= rules.channel_capacity.get(channel, rules.capacity)
    window = history[history["queued_ts"] > AS_OF - pd.Timedelta(days=rules.frequency_cap_days)]
    before = window.groupby("customer_id").size()
    now = queue.groupby("customer_id").size()
    assert (now.add(before.reindex(now.index).fillna(0)) <= rules.frequency_cap).all()
    # The same queue as the plain definition with the measured worth.
    expected = reference_queue(candidates, customers, history, rules, worth=measured_worth)
    assert list(zip(queue["subject_id"], queue["channel"], strict=True)) == expected


def test_a_due_action_measured_to_harm_is_not_queued() -> None:
    customers = consenting(2, "email")
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0", "c1"],
            "action": ["delay_notice", "delay_notice"],
            "subject_id": ["s0", "s1"],
            "risk": [0.9, 0.9],
            "value": [100.0, 100.0],
            "due": [True, True],
            "uplift": [-0.02, 0.01],
        }
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    queue = plan_outreach(candidates, customers, empty, AS_OF, OutreachRules())
    assert queue["subject_id"].tolist() == ["s1"]


def test_holdout_is_random_recorded_and_reproducible_by_seed() -> None:
    queue = pd.DataFrame({"rank": np.arange(1, 20_001)})
    held, propensity = hold_out(queue, 0.1, (7, 20250601))
    again, _ = hold_out(queue, 0.1, (7, 20250601))
    other, _ = hold_out(queue, 0.1, (7, 20250602))
    np.testing.assert_array_equal(held, again)
    assert (held != other).any()
    # About the share, within four binomial standard deviations.
    assert abs(held.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(queue))
    # Independent of rank: the top and bottom halves are held out alike.
    top, bottom = held[: len(held) // 2].mean(), held[len(held) // 2 :].mean()
    assert abs(top - bottom) < 4 * np.sqrt(2 * 0.1 * 0.9 / (len(queue) / 2))
    # The propensity of the arm each action landed in.
    np.testing.assert_allclose(propensity[held], 0.1)
    np.testing.assert_allclose(propensity[~held], 0.9)
    none, p = hold_out(queue, 0.0, 1)
    assert not none.any()
    assert (p == 1.0).all()
    with pytest.raises(ValueError, match="holdout share"):
        hold_out(queue, 1.0, 1)


def test_highest_expected_value_first_and_capacity_fills() -> None:
    customers = consenting(3, "email")
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
    customers = consenting(3, "email")
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


def test_a_full_channel_falls_back_and_costs_are_paid() -> None:
    people = consenting(4, "sms")
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2", "c3"],
            "action": [WINBACK_OFFER] * 4,
            "subject_id": [None] * 4,
            "risk": [0.9, 0.8, 0.7, 0.01],
            "value": [100.0] * 4,
        }
    )
    rules = OutreachRules(
        capacity=10, channel_capacity={"sms": 1}, channel_cost={"sms": 0.5, "email": 0.1}
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    queue = plan_outreach(candidates, people, empty, AS_OF, rules)
    # sms holds one action; the next ones go by email; the last is worth less than it costs.
    assert queue["customer_id"].tolist() == ["c0", "c1", "c2"]
    assert queue["channel"].tolist() == ["sms", "email", "email"]
    saved = 0.9 * 100.0 * UPLIFT[WINBACK_OFFER]
    assert queue["priority"].iloc[0] == pytest.approx(saved - 0.5)
    assert queue["cost"].tolist() == [0.5, 0.1, 0.1]


def test_actions_without_a_measured_uplift_are_never_queued() -> None:
    unmeasured = [a for a in ACTIONS if a not in UPLIFT]
    assert unmeasured  # the proactive moments wait for a measured uplift
    people = consenting(1, "email")
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0"] * len(unmeasured),
            "action": unmeasured,
            "subject_id": [None] * len(unmeasured),
            "risk": [1.0] * len(unmeasured),
            "value": [1_000.0] * len(unmeasured),
        }
    )
    empty = pd.DataFrame({"customer_id": [], "queued_ts": []})
    queue = plan_outreach(candidates, people, empty, AS_OF, OutreachRules())
    assert queue.empty


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("channel_capacity", {"pigeon": 3}, "unknown channels ['pigeon']"),
        ("channel_cost", {"sms": -1.0}, "negative for ['sms']"),
    ],
)
def test_rules_name_a_bad_channel_setting(field, value, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        OutreachRules(**{field: value})


def test_the_cap_counts_sent_logged_actions_once_and_not_held_out_ones() -> None:
    """c0 was sent an action by another system yesterday: not queued today. c1's logged
    action was held out: queued. c2's logged action came from the queue (same id): counted
    once, so with a cap of 2 c2 is still queued."""
    yesterday = AS_OF - pd.Timedelta(days=1)
    history = pd.DataFrame({"outreach_id": ["q1"], "customer_id": ["c2"], "queued_ts": [yesterday]})
    log = pd.DataFrame(
        {
            "outreach_id": ["o1", "o2", "q1"],
            "customer_id": ["c0", "c1", "c2"],
            "ts": [yesterday, yesterday, yesterday],
            "holdout": [False, True, False],
        }
    )
    counted = contacted(history, log)
    assert sorted(counted["customer_id"]) == ["c0", "c2"]
    candidates = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2"],
            "action": WINBACK_OFFER,
            "subject_id": None,
            "risk": 0.9,
            "value": 500.0,
        }
    )
    rules = OutreachRules(capacity=10, frequency_cap=2)
    queue = plan_outreach(candidates, consenting(3, "email"), counted, AS_OF, rules)
    assert sorted(queue["customer_id"]) == ["c0", "c1", "c2"]
    rules = OutreachRules(capacity=10, frequency_cap=1)
    queue = plan_outreach(candidates, consenting(3, "email"), counted, AS_OF, rules)
    assert sorted(queue["customer_id"]) == ["c1"]
    assert contacted(history, None)["customer_id"].tolist() == ["c2"]
