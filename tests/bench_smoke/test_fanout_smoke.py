"""The benchmark harness cannot rot: a short fan-out run of ``bench/run`` against vibews and both
baselines, asserting only correctness (every dashboard got every seq, in order; nothing lost),
never speed. And the load generator's checks can fail: a hub that drops or reorders one relay
makes it exit non-zero.

Needs gcc (``.ci/run`` installs it), and Node with npm for the Node baseline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.utils import getProcessOutputAndValue

from vibews.testing import free_port

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
DASHBOARDS = 20
MESSAGES = 2000

reactor: Any = _reactor


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        _unavailable("no C compiler (gcc) on PATH")
    assert cc is not None
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run([cc, "-O2", "-o", str(out), str(BENCH / "loadgen.c")], check=True)
    return out


@pytest.mark.slow
@pytest.mark.node
def test_bench_run_fanout_delivers_every_seq_in_order(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("Node.js and npm are needed for the Node baseline")
    results = tmp_path / "results.json"
    command = [
        sys.executable, str(BENCH / "run"), "--scenario", "fanout",
        "--hubs", "vibews,node,autobahn", "--dashboards", str(DASHBOARDS),
        "--messages", str(MESSAGES), "--json", str(results),
    ]  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    raw = json.loads(results.read_text())
    for hub in ("vibews", "node", "autobahn"):
        result = raw[f"fanout/{hub}"]
        assert result["ok"], (hub, result)
        assert result["acks"] == MESSAGES
        assert result["deliveries"] == MESSAGES * DASHBOARDS


def _load_autobahn_baseline() -> Any:
    spec = importlib.util.spec_from_file_location(
        "autobahn_baseline", BENCH / "baselines" / "autobahn_hub.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = _load_autobahn_baseline()
TutorialProtocol: Any = baseline.HubProtocol


class FaultyProtocol(TutorialProtocol):
    """The tutorial hub, except that the first dashboard misses seq 5 or gets it after seq 6."""

    fault = "drop"

    def send_json(self, message: dict[str, Any]) -> None:
        first = self is min(self.factory.dashboards, key=id, default=None)
        seq = message.get("seq")
        if first and message.get("type") == "agent_status" and seq in (5, 6):
            if seq == 5:
                self.held = message
                return
            if self.fault == "reorder":
                super().send_json(message)
                super().send_json(self.held)
                return
        super().send_json(message)


def _tokens(tmp_path: Path) -> tuple[Path, Path]:
    tokens, secrets = tmp_path / "tokens", tmp_path / "secrets"
    # The baseline reads sha256 digests; the generator reads the secrets.
    tokens.write_text(
        "agent0 agent sha256:" + _sha256("agent-secret") + "\n"
        "dash dashboard sha256:" + _sha256("dash-secret") + "\n"
    )
    secrets.write_text("agent0 agent agent-secret\ndash dashboard dash-secret\n")
    return tokens, secrets


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("fault", "complaint"),
    [("drop", b"received 99 of 100 messages"), ("reorder", b"seq 5 after 6")],
)
@pytest_twisted.ensureDeferred
async def test_loadgen_fails_when_a_dashboard_misses_or_reorders_a_seq(
    loadgen: Path, tmp_path: Path, fault: str, complaint: bytes
) -> None:
    tokens, secrets = _tokens(tmp_path)
    protocol = type("Faulty", (FaultyProtocol,), {"fault": fault})
    factory = baseline.HubFactory(baseline.read_tokens(str(tokens)))
    factory.protocol = protocol
    port = reactor.listenTCP(free_port(), factory, interface="127.0.0.1")
    args = [
        "--port", str(port.getHost().port), "--tokens", str(secrets),
        "--dashboards", "3", "--messages", "100", "--window", "8", "--timeout", "20",
    ]  # fmt: skip
    try:
        out, err, code = await getProcessOutputAndValue(str(loadgen), args, reactor=reactor)
    finally:
        await port.stopListening()
    assert code == 1, (out, err)
    assert complaint in err, err
    assert json.loads(out)["ok"] is False
