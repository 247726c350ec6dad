"""`coevolve rl` on a two-node Ray cluster started with `ray start`, as a user starts one.

Both nodes run on this machine (`ray start --head`, then `ray start --address=HEAD:PORT`), each
under its own temp dir and free ports, so nothing here touches another Ray cluster of the machine;
each is a `ray start --block` child that the fixture ends (SIGTERM: it stops the processes it
started) — never `ray stop`, which would stop every Ray cluster of the user. The cluster uses
Ray's token authentication, as a real one should: every node and the `coevolve rl` command run
with RAY_AUTH_MODE=token and the test's own RAY_AUTH_TOKEN (so ~/.ray/auth_token is neither read
nor written); a command without them is refused with an error naming the fix. Everything that
joins the cluster is a child process with that environment: this process never initialises Ray.

The head offers 1 CPU and the second node the rest of what the run's actors reserve, so the
actors cannot all fit on one node: every CPU is taken, both nodes host actors, and the weights
pass between nodes (the controller runs on the head node, which holds at most one of the learner
and the rollout workers).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray

from coevolve.config import compose_config, to_typed
from coevolve.rl.run import run_demand
from coevolve.traces.store import TraceStore

pytestmark = pytest.mark.slow

HOST = ray.util.get_node_ip_address()  # what Ray makes of 127.0.0.1 anyway
STARTUP_S = 120.0
BIN = Path(sys.executable).parent
NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="warning", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[2])
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0.0),
                   "head": "node:__internal_head__" in n["Resources"]} for n in ray.nodes() if n["Alive"]]))
"""


TOKEN = secrets.token_hex(32)
AUTH = tuple(int(part) for part in ray.__version__.split(".")[:2]) >= (2, 52)  # Ray's token authentication


def environment(auth: bool = True) -> dict[str, str]:
    """This process's environment for a child that joins the test cluster (`auth`: with its token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if auth:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class Node:
    """One `ray start --block` child process in its own session (process group) and temp dir."""

    def __init__(self, name: str, args: list[str], root: Path):
        self.name, self.temp_dir = name, tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp")  # short: socket paths
        self.log = root / f"{name}.log"
        ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port"]  # fmt: skip
        command = [str(BIN / "ray"), "start", "--block", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                   "--object-store-memory=200000000", *(f"{flag}={free_port()}" for flag in ports), *args]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment(),
                                            start_new_session=True)  # fmt: skip

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"ray start ({self.name}) exited with {self.process.returncode}:\n{self.log.read_text()}"
            )

    def stop(self) -> None:
        """SIGTERM to `ray start --block` (it ends its raylet, GCS, ... and their workers), then
        SIGKILL to whatever of its own process group outlived that."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def two_nodes(tmp_path):
    """`start(head_cpus, node_cpus)` starts a head and a second node; returns (address, {"head": id,
    "node": id}) once both are alive."""
    started: list[Node] = []

    def start(head_cpus: int, node_cpus: int) -> tuple[str, dict[str, str]]:
        port = free_port()
        address = f"{HOST}:{port}"
        started.append(Node("head", ["--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=false",
                                     f"--ray-client-server-port={free_port()}"], tmp_path))  # fmt: skip
        deadline = time.monotonic() + STARTUP_S
        while not answers(port):
            started[0].check_alive()
            assert time.monotonic() < deadline, f"the head's GCS did not answer within {STARTUP_S}s"
            time.sleep(0.5)
        started.append(Node("node", [f"--address={address}", f"--num-cpus={node_cpus}"], tmp_path))
        listed = subprocess.run([sys.executable, "-c", NODES, address, str(STARTUP_S)], check=False, env=environment(),
                                capture_output=True, text=True, timeout=STARTUP_S + 60)  # fmt: skip
        for node in started:
            node.check_alive()
        assert listed.returncode == 0, listed.stderr
        alive = json.loads(listed.stdout.strip().splitlines()[-1])
        assert sorted((n["head"], n["cpus"]) for n in alive) == [(False, node_cpus), (True, head_cpus)], alive
        return address, {"head" if n["head"] else "node": n["id"] for n in alive}

    try:
        yield start
    finally:
        for node in reversed(started):
            node.stop()


def test_an_rl_run_joins_a_two_node_cluster_and_places_actors_on_both(
    two_nodes, tmp_path, tiny_checkpoint, rl_overrides
):
    run_dir = tmp_path / "run"
    overrides = [*rl_overrides(run_dir, tiny_checkpoint, steps=2), "rl.save_steps=2"]
    need = run_demand(to_typed(compose_config(overrides)).rl)
    assert need.num_cpus >= 3 and need.num_cpus == int(need.num_cpus) and need.num_gpus == 0
    # Every CPU of the cluster is reserved: the head's one and the second node's.
    address, nodes = two_nodes(head_cpus=1, node_cpus=int(need.num_cpus) - 1)

    command = [str(BIN / "coevolve"), "rl", *overrides, f"cluster.address={address}", "hydra.output_subdir=null"]
    if AUTH:
        quick = {**environment(auth=False), "RAY_gcs_server_port_wait_time_s": "3"}  # Ray's retries: 3 s, not 20
        refused = subprocess.run(command, check=False, env=quick, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "cannot join it" in refused.stderr, refused.stderr[-4000:]
        assert "RAY_AUTH_MODE=token" in refused.stderr
        assert [p.name for p in (run_dir / "rl").iterdir()] == ["config.yaml"]  # refused before any work
    done = subprocess.run(command, check=False, env=environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    placement = json.loads((run_dir / "rl" / "summary.json").read_text())["placement"]
    assert set(placement) == {"driver", "learner", "introspective/rollout/0", "introspective/reward",
                              "reconstruction/rollout/0", "reconstruction/reward"}  # fmt: skip
    actors = {name: node for name, node in placement.items() if name != "driver"}
    assert placement["driver"] == nodes["head"]
    assert list(actors.values()).count(nodes["head"]) == 1  # the head's one CPU
    assert set(actors.values()) == {nodes["head"], nodes["node"]}
    holders = [placement["learner"], placement["introspective/rollout/0"], placement["reconstruction/rollout/0"]]
    assert nodes["node"] in holders  # the weights crossed from one node to the other
    # The update of step 1 reached every rollout worker: step 2 sampled under policy version 1.
    rows = TraceStore.open(run_dir).table([2]).to_pylist()
    assert rows and {row["policy_version"] for row in rows} == {1}
    metrics = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [1, 2] and all("learner/loss" in row for row in metrics)
