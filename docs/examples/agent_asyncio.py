"""An asyncio agent: two questions in flight at once, answered in any order.

VIBEWS_URL=ws://localhost:3001/ VIBEWS_TOKEN=... python agent_asyncio.py
"""

import asyncio
import os

from vibews.client import AsyncClient


async def main() -> None:
    async with AsyncClient(os.environ["VIBEWS_URL"], os.environ["VIBEWS_TOKEN"]) as hub:
        await hub.status("waiting", "two decisions needed")
        schema = {
            "type": "object",
            "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["replicas"],
        }
        deploy, scale = await asyncio.gather(
            hub.ask("Deploy now?", ["yes", "no"]),
            hub.ask("How many replicas?", schema=schema),
        )
        print(f"deploy: {deploy.text}")
        print(f"replicas: {scale.value['replicas'] if scale.value else None}")


asyncio.run(main())
