"""An asyncio program that runs Twisted's asyncio reactor itself: ``Client`` on the same loop,
its Deferreds awaited as asyncio futures with ``asFuture``.

VIBEWS_URL=ws://localhost:3001/ VIBEWS_TOKEN=... python agent_asyncio_reactor.py
"""

import asyncio
import os

from twisted.internet import asyncioreactor

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
asyncioreactor.install(loop)  # before anything imports twisted.internet.reactor

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from vibews.client import Client  # noqa: E402


async def main() -> None:
    hub = Client(os.environ["VIBEWS_URL"], os.environ["VIBEWS_TOKEN"])
    await hub.connect().asFuture(loop)
    await hub.status("waiting", "one decision needed").asFuture(loop)
    answer = await hub.ask("Ship it?", ["yes", "no"]).asFuture(loop)
    print(f"ship: {answer.text}")
    await hub.close().asFuture(loop)


done = Deferred.fromFuture(loop.create_task(main()))
done.addErrback(lambda failure: failure.printTraceback())
done.addBoth(lambda _: reactor.stop())
reactor.run()
