"""Joining or starting the Ray cluster the actors live in (DESIGN.md section 7).

`cluster.address: null` starts a local cluster in this process (`ray.init`); `auto` joins the
cluster `ray start` began on this machine; `HOST:PORT` (or `ray://HOST:PORT`) joins that one.
An address is probed with a plain TCP connection first, so one that does not answer fails within
`cluster.connect_timeout_s` with an error naming it, instead of Ray's long retry loop; one that
answers but refuses this process (Ray's token authentication, which `ray start --head` turns on
when a token exists, since Ray 2.59) fails with an error that says how to join it.
The actors' declared resources are checked against the cluster's before any actor is created:
an actor that can never be placed would otherwise wait forever.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

import ray

from coevolve.rollout.config import ClusterConfig


@dataclass(frozen=True)
class Demand:
    """What a run's actors reserve together."""

    num_cpus: float
    num_gpus: float = 0.0


def _host_port(address: str) -> tuple[str, int]:
    if address == "auto":
        from ray._private.services import find_bootstrap_address

        found = os.environ.get("RAY_ADDRESS") or find_bootstrap_address(None)
        if not found:
            raise ValueError(
                "cluster.address=auto: no running Ray cluster on this machine (start one with `ray start`)"
            )
        address = found
    bare = address.split("://", 1)[-1]
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cluster.address={address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def probe(address: str, timeout_s: float) -> None:
    """Raise a ValueError naming `address` when nothing answers there within `timeout_s`."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise ValueError(
            f"cluster.address={address!r}: the Ray cluster at {host}:{port} does not answer "
            f"({type(error).__name__}: {error}; waited up to {timeout_s}s)"
        ) from None


def connect(config: ClusterConfig, demand: Demand) -> bool:
    """Join or start the cluster and check it can hold `demand`. Returns True when this call
    started Ray (the caller then shuts it down with `ray.shutdown()`)."""
    started = False
    if not ray.is_initialized():
        if config.address is None:
            cpus = config.num_cpus or max(os.cpu_count() or 1, math.ceil(demand.num_cpus))
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
        else:
            probe(config.address, config.connect_timeout_s)
            try:
                ray.init(address=config.address, logging_level="warning", log_to_driver=False)
            except ConnectionError as error:
                raise ValueError(
                    f"cluster.address={config.address!r}: the Ray cluster answers but this process cannot join it "
                    f"({error}). If the cluster uses token authentication (`ray start --head` turns it on when "
                    "~/.ray/auth_token exists, since Ray 2.59), run with RAY_AUTH_MODE=token and the cluster's "
                    "token (RAY_AUTH_TOKEN, or the head's ~/.ray/auth_token), as every node of it does"
                ) from None
        started = True
    try:
        check_resources(demand)
    except ValueError:
        if started:
            ray.shutdown()
        raise
    return started


def check_resources(demand: Demand) -> None:
    total = ray.cluster_resources()
    for key, need, name in (("CPU", demand.num_cpus, "CPUs"), ("GPU", demand.num_gpus, "GPUs")):
        have = total.get(key, 0.0)
        if need > have:
            raise ValueError(
                f"the actors reserve {need:g} {name} but the Ray cluster has {have:g}: lower rollout.num_workers or "
                f"rollout.worker.num_{name.lower()[:-1]}s, or give the cluster more (cluster.num_cpus for a local one)"
            )
