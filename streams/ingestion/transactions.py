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
    cards = _Cards(p, rng)
    # Fraud waiting to happen: (time, sequence, card, log-amount shift).
    pending: list[tuple[float, int, int, float]] = []
    scheduled = 0
    next_normal = float(rng.exponential(p.mean_gap))
    emitted = 0
    while emitted < p.rows:
        if pending and pending[0][0] < next_normal:
            t, _, card, shift = heapq.heappop(pending)
            yield cards.fraud(card, t, shift), True
            emitted += 1
            continue
        t = next_normal
        next_normal += float(rng.exponential(p.mean_gap))
        yield cards.legitimate(t), False
        emitted += 1
        if rng.random() < p.fraud_start:
            for burst_t, victim, shift in cards.burst(t):
                heapq.heappush(pending, (burst_t, scheduled, victim, shift))
                scheduled += 1


class _Cards:
    """The cards' habits, and their transactions, drawn from one random generator.

    Every draw happens in a fixed order, so a seed gives the same stream everywhere.
    """

    def __init__(self, p: Transactions, rng: np.random.Generator) -> None:
        self.rng = rng
        self.merchants = p.merchants
        n_cards = p.cards
        self.n_cards = n_cards
        # Per-card habits. Log-amount baselines spread widely, so that amount alone is a
        # poor fraud signal: only the card's own history says what is unusual.
        self.mu = rng.normal(np.log(40.0), 0.9, n_cards)
        self.sigma = rng.uniform(0.25, 0.5, n_cards)
        activity = rng.gamma(2.0, 1.0, n_cards)
        self.activity = activity / activity.sum()
        self.limits = np.maximum(
            500.0, np.round(np.exp(self.mu + rng.normal(3.0, 0.6, n_cards)), -2)
        )
        self.channel_p = rng.dirichlet([8.0, 3.0, 1.0], n_cards)
        self.favourites: list[np.ndarray] = []
        self.favourite_p: list[np.ndarray] = []
        for _ in range(n_cards):
            k = int(rng.integers(2, 7))
            self.favourites.append(rng.choice(p.merchants, size=k, replace=False))
            self.favourite_p.append(rng.dirichlet(np.ones(k)))
        self.ids = [f"c{c:05d}" for c in range(n_cards)]

    def legitimate(self, t: float) -> dict[str, Any]:
        """A transaction of a card, by its habits, at ``t`` seconds."""
        rng = self.rng
        card = int(rng.choice(self.n_cards, p=self.activity))
        # Some legitimate spending is unusual too: a big purchase, a new shop.
        shift = float(rng.normal(1.5, 0.3)) if rng.random() < 0.02 else 0.0
        if rng.random() < 0.9:
            merchant = int(rng.choice(self.favourites[card], p=self.favourite_p[card]))
        else:
            merchant = self._other_merchant(card)
        amount = self._amount(card, shift)
        channel = int(rng.choice(3, p=self.channel_p[card]))
        return self._row(card, t, amount, merchant, channel)

    def fraud(self, card: int, t: float, shift: float) -> dict[str, Any]:
        """A fraudulent transaction on ``card``: an unusual amount at an unusual merchant."""
        amount = self._amount(card, shift)
        channel = int(self.rng.choice(3, p=_FRAUD_CHANNEL_P))
        return self._row(card, t, amount, self._other_merchant(card), channel)

    def burst(self, t: float) -> list[tuple[float, int, float]]:
        """(time, card, log-amount shift) of a fraud burst starting soon after ``t``."""
        rng = self.rng
        victim = int(rng.choice(self.n_cards, p=self.activity))
        testing = rng.random() < 0.3
        shift = float(rng.normal(-2.0, 0.4) if testing else rng.normal(1.8, 0.5))
        at = t + float(rng.uniform(5.0, 120.0))
        burst = []
        for _ in range(int(rng.integers(3, 7))):
            burst.append((at, victim, shift))
            at += float(rng.uniform(5.0, 45.0))
        return burst

    def _amount(self, card: int, shift: float) -> float:
        return float(np.exp(self.mu[card] + shift + self.sigma[card] * self.rng.normal()))

    def _other_merchant(self, card: int) -> int:
        while True:
            m = int(self.rng.integers(self.merchants))
            if m not in self.favourites[card]:
                return m

    def _row(
        self, card: int, t: float, amount: float, merchant: int, channel: int
    ) -> dict[str, Any]:
        return {
            "card_id": self.ids[card],
            "amount": round(max(amount, 0.5), 2),
            "merchant": f"m{merchant:05d}",
            "channel": CHANNELS[channel],
            "card_limit": float(self.limits[card]),
            "event_time": START_MS + round(t * 1000.0),
        }
