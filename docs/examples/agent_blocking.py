"""A plain synchronous agent: report, ask, act on the answer.

    VIBEWS_URL=ws://localhost:3001/ VIBEWS_TOKEN=... python agent_blocking.py

The WebSocket lives on a thread of its own, so the hub's pings are answered while this program's
own thread is busy (here: a blocking sleep longer than the hub's ping timeout, when
AGENT_BUSY_SECONDS says so).
"""

import os
import sys
import time

from vibews.client import BlockingClient, QuestionExpired

with BlockingClient(os.environ["VIBEWS_URL"], os.environ["VIBEWS_TOKEN"]) as hub:
    hub.status("working", "preparing the release")
    time.sleep(float(os.environ.get("AGENT_BUSY_SECONDS", "0")))  # busy, without yielding
    hub.task("release-1.2", "waiting", progress=0.9)
    try:
        answer = hub.ask("Deploy release 1.2 to production?", ["yes", "no"], timeout=600)
    except QuestionExpired:
        sys.exit("nobody answered")
    print(f"answer: {answer.text} ({answer.action}) from {answer.by}")
    print(f"connections: {hub.client.connections}")
