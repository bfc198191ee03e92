"""Redis backends for the cache tests: the shared standalone server and a 3-node Redis Cluster.

The cluster is started by the test session itself: three ``redis-server --cluster-enabled yes`` on
free loopback ports under a temp dir, joined by ``redis-cli --cluster create``; stopped and removed
at the end. Tests that take ``redis_backend`` run once against each.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass(frozen=True)
class RedisBackend:
    kind: str  # "standalone" or "cluster"
    url: str
    prefix: str

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"


def _free_ports(count: int) -> list[int]:
    # Cluster nodes also listen on port + 10000 (the cluster bus): keep both free and below 55535.
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port >= 55535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class RedisClusterProcesses:
    directory: Path
    ports: list[int]
    processes: list[subprocess.Popen]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis_cluster(nodes: int = 3) -> RedisClusterProcesses:
    directory = Path(tempfile.mkdtemp(prefix="rrr-redis-cluster-"))
    ports = _free_ports(nodes)
    processes: list[subprocess.Popen] = []
    cluster = RedisClusterProcesses(directory, ports, processes)
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir()
            processes.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--dir", str(node_dir), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                 "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in ports:
            _wait_until(lambda p=port: redis.Redis(port=p, socket_timeout=1).ping(), 10, f"redis :{port}")
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        for port in ports:
            _wait_until(
                lambda p=port: redis.Redis(port=p, socket_timeout=1).cluster("info")["cluster_state"] == "ok",
                30, f"cluster state ok on :{port}",
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    cluster = start_redis_cluster()
    yield cluster.url
    cluster.stop()


@pytest.fixture(params=["standalone", "cluster"])
def redis_backend(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> RedisBackend:
    if request.param == "cluster":
        return RedisBackend("cluster", request.getfixturevalue("redis_cluster_url"), redis_prefix)
    return RedisBackend("standalone", redis_url, redis_prefix)
