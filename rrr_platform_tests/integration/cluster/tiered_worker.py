"""A second process holding a TieredCache, driven over stdin/stdout by the cross-process tests.

Run: ``python -m rrr_platform_tests.integration.cluster.tiered_worker URL PREFIX NAMESPACE``. Each
input line is a JSON command ``{"op": "get"|"set"|"delete"|"clear"|"stats", "key": ..., "value": ...}``;
each output line is a JSON reply. The first line written is ``{"ready": true}`` once subscribed.
"""

from __future__ import annotations

import sys

import orjson

from rrr_platform.cache.tiered import TieredCache


def main(url: str, prefix: str, namespace: str) -> None:
    cache = TieredCache.connect(url, namespace, prefix=prefix, memory_ttl=60.0, redis_ttl=60.0)
    print(orjson.dumps({"ready": cache.memory_active}).decode(), flush=True)
    for line in sys.stdin:
        command = orjson.loads(line)
        op = command["op"]
        if op == "get":
            reply = {"value": cache.get(command["key"])}
        elif op == "set":
            cache.set(command["key"], command["value"])
            reply = {"ok": True}
        elif op == "delete":
            reply = {"removed": cache.delete(command["key"])}
        elif op == "clear":
            reply = {"removed": cache.clear()}
        elif op == "stats":
            reply = {tier: stats.as_dict() for tier, stats in cache.stats().items()}
            reply["memory_active"] = cache.memory_active
            reply["received"] = cache.invalidations_received
        elif op == "exit":
            break
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(orjson.dumps(reply).decode(), flush=True)
    cache.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
