"""Card transactions: a seeded, deterministic stream whose fraud shows in per-card behaviour.

The ``transactions`` dataset behind ``pipelines/transactions.toml``. Every card has its own
spending habits (a lognormal amount baseline, a few favourite merchants, a usual channel),
so an amount that is ordinary for one card is extreme for another. Fraud comes in bursts on
one card: several transactions within minutes, at merchants the card has not used, with
amounts either far above the card's usual ("cash-out") or far below it ("card testing").
The raw fields of one event say little; what the card did before says a lot, which is what
per-key online features (window counts, time since last, z-scores, merchant frequency)
capture.

Rows are ``(x, y)`` like River's datasets: ``x`` holds ``card_id``, ``amount``,
``merchant``, ``channel``, ``card_limit`` and ``event_time`` (epoch milliseconds, in
order); ``y`` is ``is_fraud``. The same ``seed`` gives the same rows on every machine.

Examples
--------
>>> rows = list(Transactions(rows=5, seed=7))
>>> len(rows), sorted(rows[0][0])
(5, ['amount', 'card_id', 'card_limit', 'channel', 'event_time', 'merchant'])
>>> rows == list(Transactions(rows=5, seed=7))
True
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHANNELS", "DEFAULT_ROWS", "START_MS", "Transactions"]

#: Payment channels, in the order of the schema's enum.
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")
DEFAULT_ROWS = 20_000
#: Event time of the stream's start: 2026-01-01T00:00:00Z.
START_MS = 1_767_225_600_000

_FRAUD_CHANNEL_P = np.array([0.1, 0.6, 0.3])


@dataclass(frozen=True)
class Transactions:
    """An iterable of ``rows`` card transactions, ``(x, is_fraud)``, in event-time order.

    Parameters
    ----------
    rows
        How many transactions.
    seed
        Seed of the ``numpy.random.Generator``; the same seed gives the same rows.
    cards, merchants
        Sizes of the card and merchant populations.
    mean_gap
        Mean seconds between two consecutive transactions of the whole stream
        (exponential gaps: the jitter).
    fraud_start
        Probability that a legitimate transaction is followed by a fraud burst on some
        card; bursts have 3 to 6 transactions, so the fraud rate is about
        ``4.5 * fraud_start``.
    """

    rows: int = DEFAULT_ROWS
    seed: int = 42
    cards: int = 400
    merchants: int = 500
    mean_gap: float = 3.0
    fraud_start: float = 0.007

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bool]]:
        return _generate(self)

    def __len__(self) -> int:
        return self.rows


def _generate(p: Transactions) -> Iterator[tuple[dict[str, Any], bool]]:
    rng = np.random.default_rng(p.seed)
    n_cards = p.cards
    # Per-card habits. Log-amount baselines spread widely, so that amount alone is a
    # poor fraud signal: only the card's own history says what is unusual.
    mu = rng.normal(np.log(40.0), 0.9, n_cards)
    sigma = rng.uniform(0.25, 0.5, n_cards)
    activity = rng.gamma(2.0, 1.0, n_cards)
    activity /= activity.sum()
    limits = np.maximum(500.0, np.round(np.exp(mu + rng.normal(3.0, 0.6, n_cards)), -2))
    channel_p = rng.dirichlet([8.0, 3.0, 1.0], n_cards)
    favourites: list[np.ndarray] = []
    favourite_p: list[np.ndarray] = []
    for _ in range(n_cards):
        k = int(rng.integers(2, 7))
        favourites.append(rng.choice(p.merchants, size=k, replace=False))
        favourite_p.append(rng.dirichlet(np.ones(k)))
    card_ids = [f"c{c:05d}" for c in range(n_cards)]

    def other_merchant(card: int) -> int:
        while True:
            m = int(rng.integers(p.merchants))
            if m not in favourites[card]:
                return m

    def row(card: int, t: float, amount: float, merchant: int, channel: int) -> dict[str, Any]:
        return {
            "card_id": card_ids[card],
            "amount": round(max(amount, 0.5), 2),
            "merchant": f"m{merchant:05d}",
            "channel": CHANNELS[channel],
            "card_limit": float(limits[card]),
            "event_time": START_MS + round(t * 1000.0),
        }

    # Fraud waiting to happen: (time, sequence, card, log-amount shift).
    pending: list[tuple[float, int, int, float]] = []
    scheduled = 0
    next_normal = float(rng.exponential(p.mean_gap))
    emitted = 0
    while emitted < p.rows:
        if pending and pending[0][0] < next_normal:
            t, _, card, shift = heapq.heappop(pending)
            amount = float(np.exp(mu[card] + shift + sigma[card] * rng.normal()))
            channel = int(rng.choice(3, p=_FRAUD_CHANNEL_P))
            yield row(card, t, amount, other_merchant(card), channel), True
            emitted += 1
            continue
        t = next_normal
        next_normal += float(rng.exponential(p.mean_gap))
        card = int(rng.choice(n_cards, p=activity))
        # Some legitimate spending is unusual too: a big purchase, a new shop.
        shift = float(rng.normal(1.5, 0.3)) if rng.random() < 0.02 else 0.0
        if rng.random() < 0.9:
            merchant = int(rng.choice(favourites[card], p=favourite_p[card]))
        else:
            merchant = other_merchant(card)
        amount = float(np.exp(mu[card] + shift + sigma[card] * rng.normal()))
        channel = int(rng.choice(3, p=channel_p[card]))
        yield row(card, t, amount, merchant, channel), False
        emitted += 1
        if rng.random() < p.fraud_start:
            victim = int(rng.choice(n_cards, p=activity))
            testing = rng.random() < 0.3
            shift = float(rng.normal(-2.0, 0.4) if testing else rng.normal(1.8, 0.5))
            at = t + float(rng.uniform(5.0, 120.0))
            for _ in range(int(rng.integers(3, 7))):
                heapq.heappush(pending, (at, scheduled, victim, shift))
                scheduled += 1
                at += float(rng.uniform(5.0, 45.0))
