"""Whether a Kafka cluster answers: a metadata request from a thread of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["broker_reachable", "probe"]

_PROBE_THREAD = "riverline-kafka-probe"


def broker_reachable(
    bootstrap: str, timeout: float = 5.0, security: Mapping[str, Any] | None = None
) -> bool:
    """True if the cluster at ``bootstrap`` answers a metadata request within ``timeout``.

    ``security``: aiokafka client arguments (:func:`streams.kafka.auth.client_kwargs`).
    """
    ok, _ = probe(bootstrap, timeout, security or {})
    return ok


class _DropProbeNoise(logging.Filter):
    """Hide aiokafka's connection errors while probing: not answering is an answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName or not record.threadName.startswith(_PROBE_THREAD)


_PROBE_FILTER = _DropProbeNoise()


async def _describe_cluster(
    bootstrap: str, seconds: float, security: Mapping[str, Any]
) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="riverline-probe",
        request_timeout_ms=max(1, int(seconds * 1000)),
        **security,
    )
    try:
        async with asyncio.timeout(seconds):
            await admin.start()
            return await admin.describe_cluster()
    finally:
        await admin.close()


def probe(bootstrap: str, timeout: float, security: Mapping[str, Any]) -> tuple[bool, str]:
    """(answered, one line about the cluster or why it did not answer)."""
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.admin.client"):
        logging.getLogger(name).addFilter(_PROBE_FILTER)  # no-op when already added
    outcome: list[tuple[bool, str]] = []

    def run() -> None:
        # A thread of its own, so probing works with or without a running event loop.
        try:
            info = asyncio.run(_describe_cluster(bootstrap, timeout, security))
        except TimeoutError:
            outcome.append((False, f"no answer within {timeout:g} s"))
        except Exception as exc:  # any failure to talk to Kafka means "not reachable"
            outcome.append((False, f"{type(exc).__name__}: {exc}"))
        else:
            brokers = info.get("brokers") or []
            if not brokers:
                outcome.append((False, "the cluster has no registered broker yet"))
            else:
                outcome.append(
                    (
                        True,
                        f"cluster {info.get('cluster_id')}, {len(brokers)} broker(s), "
                        f"controller {info.get('controller_id')}",
                    )
                )

    thread = threading.Thread(target=run, name=f"{_PROBE_THREAD}-{bootstrap}", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    return outcome[0] if outcome else (False, f"no answer within {timeout:g} s")
