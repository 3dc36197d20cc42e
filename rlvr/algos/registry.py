"""Name -> function registries for advantage estimators, policy losses and KL estimators.

The trainer looks an algorithm up by its config name and never branches on it. Registering a name twice
raises (two modules silently fighting over a name is a bug); an unknown name raises `UnknownAlgorithmError`,
a `ConfigError` whose one line lists the valid names.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from rlvr.errors import ConfigError

__all__ = [
    "UnknownAlgorithmError",
    "Registry",
    "ADVANTAGES",
    "POLICY_LOSSES",
    "KL_ESTIMATORS",
    "register_advantage",
    "get_advantage",
    "list_advantages",
    "register_policy_loss",
    "get_policy_loss",
    "list_policy_losses",
    "register_kl",
    "get_kl",
    "list_kl",
    "check_algorithm_names",
]

F = TypeVar("F", bound=Callable)


class UnknownAlgorithmError(ConfigError, KeyError):
    """An algorithm name that is not registered. Also a KeyError, so dict-style callers can catch it."""

    def __str__(self) -> str:  # KeyError would quote the message; we want one plain line
        return str(self.args[0])


class Registry:
    """A named table of functions. `kind` is used in error messages ("advantage estimator")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `@REG.register("grpo")`. A duplicate name raises ValueError."""

        def deco(fn: F) -> F:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._table[name]!r}")
            self._table[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable:
        """The function registered as `name`; an unknown name lists the valid ones."""
        if name not in self._table:
            raise UnknownAlgorithmError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._table[name]

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table


ADVANTAGES = Registry("advantage estimator")
POLICY_LOSSES = Registry("policy loss")
KL_ESTIMATORS = Registry("KL estimator")


def register_advantage(name: str):
    """Register `fn(rewards [B], group_ids [B], **options) -> (advantages [B], metrics)` as `name`."""
    return ADVANTAGES.register(name)


def get_advantage(name: str) -> Callable:
    return ADVANTAGES.get(name)


def list_advantages() -> list[str]:
    return ADVANTAGES.names()


def register_policy_loss(name: str):
    """Register `fn(logp, old_logp, advantages, mask, **options) -> (loss_mat [B, T], metrics)` as `name`."""
    return POLICY_LOSSES.register(name)


def get_policy_loss(name: str) -> Callable:
    return POLICY_LOSSES.get(name)


def list_policy_losses() -> list[str]:
    return POLICY_LOSSES.names()


def register_kl(name: str):
    """Register `fn(logp [B, T], ref_logp [B, T]) -> kl [B, T]` as `name`."""
    return KL_ESTIMATORS.register(name)


def get_kl(name: str) -> Callable:
    return KL_ESTIMATORS.get(name)


def list_kl() -> list[str]:
    return KL_ESTIMATORS.names()


def check_algorithm_names(cfg: object, where: str) -> None:
    """Fail before any stage runs on a config whose `advantage` / `policy_loss` / `kl_estimator` / `loss_agg`
    names nothing registered: one line, `where.field: unknown ...; known: ...`. Call it after plugins (task entry
    points) were imported, since they may register their own algorithms."""
    from rlvr.algos.aggregation import check_agg_mode

    for field, check in (("advantage", ADVANTAGES.get), ("policy_loss", POLICY_LOSSES.get),
                         ("kl_estimator", KL_ESTIMATORS.get), ("loss_agg", check_agg_mode)):
        name = getattr(cfg, field, None)
        if name is not None:
            try:
                check(name)
            except UnknownAlgorithmError as e:
                raise ConfigError(f"{where}.{field}: {e}") from None
