"""Fault injection (error statuses, dropped connections, latency, slow bodies) and request counters."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, cast

DROP: Literal["drop"] = "drop"
OK: Literal["ok"] = "ok"
#: A fault: an HTTP error status, or ``"drop"`` (close the connection without a response).
FaultAction = int | Literal["drop"]
#: One step of a rule's sequence: a fault, or ``"ok"`` (serve normally).
SequenceStep = int | Literal["drop", "ok"]
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_TRACKED_PATHS = 10_000


def _action(value: Any, *, allow_ok: bool = False) -> SequenceStep:
    if isinstance(value, str) and value.strip().lower() in ({DROP, OK} if allow_ok else {DROP}):
        return cast(SequenceStep, value.strip().lower())
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    if allow_ok and isinstance(value, int) and 200 <= value < 300:
        return OK
    choices = "an HTTP status 400-599, 'drop'" + (" or 'ok'" if allow_ok else "")
    raise ValueError(f"invalid fault {value!r}: expected {choices}")


@dataclass
class FaultRule:
    """One fault rule; the first matching rule that produces a fault decides the response.

    :param path: a regular expression searched in the request path; ``None`` matches every path.
    :param status: the fault(s) to inject: an HTTP status, ``"drop"``, or a list to pick from at random.
    :param rate: the probability of injecting ``status`` on a matching request; ``None`` means always.
    :param sequence: faults for the successive matching requests (``"ok"`` serves normally); once
        used up the rule injects nothing more. Takes precedence over ``status``/``rate``.
    :param retry_after: the ``Retry-After`` seconds sent with 429 and 503.
    :param latency_ms: delay added before every matching request is handled.
    :param slow_body_ms: time over which the response body of a matching request trickles out.
    """

    path: str | None = None
    status: FaultAction | list[FaultAction] | None = None
    rate: float | None = None
    sequence: list[SequenceStep] | None = None
    retry_after: float = 1
    latency_ms: float = 0
    slow_body_ms: float = 0

    def __post_init__(self) -> None:
        try:
            self._regex = re.compile(self.path) if self.path else None
        except re.error as exc:
            raise ValueError(f"invalid path regex {self.path!r}: {exc}") from None
        if isinstance(self.status, list):
            self.status = [_action(s) for s in self.status]  # type: ignore[misc]
            if not self.status:
                raise ValueError("status list must not be empty")
        elif self.status is not None:
            self.status = _action(self.status)  # type: ignore[assignment]
        if self.sequence is not None:
            self.sequence = [_action(s, allow_ok=True) for s in self.sequence]
        if self.rate is not None and not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        if min(self.retry_after, self.latency_ms, self.slow_body_ms) < 0:
            raise ValueError("retry_after, latency_ms and slow_body_ms must not be negative")

    def matches(self, path: str) -> bool:
        """Whether the rule applies to a request path.

        :param path: the request path.
        """
        return self._regex is None or self._regex.search(path) is not None

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-able data (the admin API's form)."""
        return {
            "path": self.path,
            "status": self.status,
            "rate": self.rate,
            "sequence": self.sequence,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "slow_body_ms": self.slow_body_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from the admin API's JSON form.

        :param data: the rule's fields (unknown keys are an error).
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {', '.join(sorted(unknown))}")
        clean = {
            k: v for k, v in data.items() if v is not None or k in ("path", "status", "rate", "sequence")
        }
        return cls(**clean)


@dataclass
class FaultConfig:
    """The sandbox's fault settings.

    :param rules: the fault rules, tried in order.
    :param token_lifetime: lifetime in seconds of tokens issued from now on; ``None`` means the server's default.
    """

    rules: list[FaultRule] = field(default_factory=list)
    token_lifetime: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able data (the admin API's form)."""
        return {"rules": [r.to_dict() for r in self.rules], "token_lifetime": self.token_lifetime}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build a configuration from the admin API's JSON form.

        :param data: ``{"rules": [...], "token_lifetime": N}``.
        """
        unknown = set(data) - {"rules", "token_lifetime"}
        if unknown:
            raise ValueError(f"unknown fault config field(s): {', '.join(sorted(unknown))}")
        lifetime = data.get("token_lifetime")
        if lifetime is not None and (not isinstance(lifetime, int) or lifetime < 1):
            raise ValueError("token_lifetime must be a positive integer (seconds)")
        return cls([FaultRule.from_dict(r) for r in data.get("rules") or []], lifetime)


@dataclass(frozen=True)
class Decision:
    """What to do to one request.

    :param action: the fault to inject, or ``None`` to serve normally.
    :param retry_after: the ``Retry-After`` seconds to send with it.
    :param latency: seconds to wait before handling the request.
    :param slow_body: seconds over which to trickle the response body.
    """

    action: FaultAction | None
    retry_after: int
    latency: float
    slow_body: float


class FaultInjector:
    """Applies a :class:`FaultConfig`; random choices come from a generator seeded with ``seed``.

    :param seed: the seed of the random choices (reset with each new configuration).
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self.config = FaultConfig()
        self._rng = random.Random(seed)
        self._positions: list[int] = []

    def configure(self, config: FaultConfig) -> None:
        """Replace the rules (sequences start over, the random generator is reseeded).

        :param config: the new configuration.
        """
        self.config = config
        self._rng = random.Random(self._seed)
        self._positions = [0] * len(config.rules)

    def decide(self, path: str) -> Decision | None:
        """Decide the fate of a request; ``None`` when no rule matches.

        :param path: the request path.
        """
        if not self.config.rules:
            return None
        action: FaultAction | None = None
        retry_after, latency, slow, matched = 1, 0.0, 0.0, False
        for n, rule in enumerate(self.config.rules):
            if not rule.matches(path):
                continue
            matched = True
            latency += rule.latency_ms / 1000
            slow += rule.slow_body_ms / 1000
            picked = self._pick(n, rule)
            if action is None and picked is not None:
                action, retry_after = picked, max(0, round(rule.retry_after))
        return Decision(action, retry_after, latency, slow) if matched else None

    def _pick(self, n: int, rule: FaultRule) -> FaultAction | None:
        if rule.sequence is not None:
            pos = self._positions[n]
            if pos >= len(rule.sequence):
                return None
            self._positions[n] = pos + 1
            step = rule.sequence[pos]
            return None if step == OK else step
        if rule.status is None or (rule.rate is not None and self._rng.random() >= rule.rate):
            return None
        return self._rng.choice(rule.status) if isinstance(rule.status, list) else rule.status


class Counters:
    """What the sandbox has served since start or the last reset (admin paths excluded)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.requests = 0
        self.tokens_issued = 0
        self.logins = 0
        self.faults_injected = 0
        self.by_path: Counter[str] = Counter()
        self.status: Counter[str] = Counter()

    def request(self, path: str) -> None:
        """Count a request (distinct paths beyond a bound are counted under ``"<other>"``).

        :param path: the request path.
        """
        self.requests += 1
        if path in self.by_path or len(self.by_path) < MAX_TRACKED_PATHS:
            self.by_path[path] += 1
        else:
            self.by_path["<other>"] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able data."""
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "status": dict(self.status),
            "tokens_issued": self.tokens_issued,
            "logins": self.logins,
            "faults_injected": self.faults_injected,
        }
