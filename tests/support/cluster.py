"""A real Redis Cluster of three masters, started and stopped by the suite.

Each node is a ``RedisServer`` of its own (own port, own cluster-bus port, own
directory and nodes file); ``redis-cli --cluster create`` assigns the slots.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from redis.cluster import ClusterNode, RedisCluster

from tests.support.servers import RedisServer, free_port, require_binary, wait_until

MASTERS = 3


class RedisClusterServer:
    """Three redis-server processes joined into one cluster with every slot assigned."""

    def __init__(self, masters: int = MASTERS) -> None:
        self.nodes = [
            RedisServer(
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "5000",
                ]
            )
            for _ in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> RedisClusterServer:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            for node in self.nodes:
                wait_until(_cluster_ok(node), timeout=30, what=f"cluster_state:ok on {node.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cli = require_binary("redis-cli", "install it with `apt-get install redis-tools`")
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        result = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout}{result.stderr}")

    def client(self, **kwargs: object) -> RedisCluster:
        """A cluster client that knows every node (no settings involved)."""
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", port) for port in self.ports],  # type: ignore[no-untyped-call]
            decode_responses=True,
            **kwargs,  # type: ignore[arg-type]
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(node: RedisServer) -> Callable[[], bool]:
    def check() -> bool:
        client = node.client()
        try:
            info = client.cluster("INFO")
        finally:
            client.close()
        return bool(
            info.get("cluster_state") == "ok"
            and str(info.get("cluster_slots_ok")) == "16384"
            and str(info.get("cluster_known_nodes")) == str(MASTERS)
        )

    return check
