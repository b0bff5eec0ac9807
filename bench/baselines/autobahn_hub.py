"""Baseline for bench/run: the benchmark's subset of the vibews protocol as a plain Autobahn hub,
written the way a tutorial would: ``json.dumps`` and ``sendMessage`` for every recipient, in
memory, no durability.

usage: python autobahn_hub.py PORT TOKENS_FILE   (vibews' tokens format: NAME ROLE sha256:HEX)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import reactor

DATA_TYPES = {"agent_status", "task_update", "question"}


class HubProtocol(WebSocketServerProtocol):
    factory: HubFactory

    def onConnect(self, request: ConnectionRequest) -> None:
        auth = request.headers.get("authorization", "")
        identity = None
        if auth.startswith("Bearer "):
            identity = self.factory.tokens.get(hashlib.sha256(auth[7:].encode()).hexdigest())
        if identity is None:
            raise ConnectionDeny(401, "Unauthorized")
        self.name, self.role = identity

    def onOpen(self) -> None:
        welcome: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "connection": secrets.token_hex(8),
            "server": "autobahn-baseline",
            "protocol": 1,
            "seq": self.factory.seq,
            "heartbeat": 20,
        }
        if self.role == "dashboard":
            welcome["snapshot"] = {"agents": {}, "questions": [], "tasks": {}}
            self.factory.dashboards.add(self)
        self.send_json({"type": "welcome", "payload": welcome})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.dashboards.discard(self)

    def send_json(self, message: dict[str, Any]) -> None:
        # Compact separators only so the bytes on the wire are the same as the other hubs'.
        self.sendMessage(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def refuse(self, message_id: Any, code: str, text: str) -> None:
        self.send_json(
            {"type": "error", "id": message_id, "payload": {"code": code, "message": text}}
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            self.refuse(None, "invalid_json", "not JSON")
            return
        if not isinstance(message, dict):
            self.refuse(None, "invalid_message", "not an object")
            return
        kind = message.get("type")
        if kind == "ack":
            return
        if kind not in DATA_TYPES:
            self.refuse(message.get("id"), "unknown_type", f"unknown type {kind}")
            return
        if self.role != "agent":
            self.refuse(message.get("id"), "forbidden", "only agents send this")
            return
        body = message.get("payload")
        if not isinstance(body, dict):
            self.refuse(message.get("id"), "invalid_message", "payload must be an object")
            return
        if kind == "agent_status" and not (isinstance(body.get("state"), str) and body["state"]):
            self.refuse(message.get("id"), "invalid_message", "payload.state must be a string")
            return
        self.factory.seq += 1
        seq = self.factory.seq
        message_id = message.get("id") or f"srv-{secrets.token_hex(16)}"
        timestamp = message.get("timestamp") or datetime.now(UTC).isoformat()
        self.send_json({"type": "ack", "id": message_id, "seq": seq})
        relay = {
            "type": kind,
            "id": message_id,
            "timestamp": timestamp,
            "from": self.name,
            "seq": seq,
            "payload": body,
        }
        for dashboard in self.factory.dashboards:
            dashboard.send_json(relay)


class HubFactory(WebSocketServerFactory):
    protocol = HubProtocol

    def __init__(self, tokens: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.tokens = tokens
        self.seq = 0
        self.dashboards: set[HubProtocol] = set()


def read_tokens(path: str) -> dict[str, tuple[str, str]]:
    tokens = {}
    with open(path) as f:
        for line in f:
            fields = line.split("#")[0].split()
            if len(fields) == 3 and fields[2].startswith("sha256:"):
                tokens[fields[2][7:]] = (fields[0], fields[1])
    return tokens


def main() -> None:
    port, tokens_file = int(sys.argv[1]), sys.argv[2]
    factory = HubFactory(read_tokens(tokens_file))
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(f"autobahn baseline listening on 127.0.0.1:{port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
