"""Run the real argilla-server 2.x on 127.0.0.1 for the tests: ``python launch.py PORT API_KEY``.

Runs in the server's own virtual environment (its FastAPI/pydantic pins clash with zs-ray's). The
caller sets ``ARGILLA_HOME_PATH`` and ``ARGILLA_DATABASE_URL`` (SQLite in a temp dir, or PostgreSQL) and
``ARGILLA_SEARCH_ENGINE=memory``. Here: redis is fakeredis (in-process: jobs are queued, never run),
the in-memory search engine is registered before the app is imported, the migrations run (alembic
``upgrade head``, as ``argilla_server database migrate`` does), the default owner ``argilla`` (workspace
``argilla``) gets ``API_KEY``, then uvicorn serves ``argilla_server._app:app`` until SIGTERM.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def exit_with_parent() -> None:
    """A test session killed without its teardown leaves no server behind: exit once the parent is gone."""
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    port, api_key = int(sys.argv[1]), sys.argv[2]
    exit_with_parent()

    import fakeredis
    import redis

    fake = fakeredis.FakeServer()
    redis.from_url = lambda *a, **kw: fakeredis.FakeRedis(server=fake)  # before argilla_server imports it

    import memory_engine  # noqa: F401  (registers "memory")

    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-c", ALEMBIC_CONFIG_FILE, "upgrade", "head"])

    from argilla_server.cli.database.users.create_default import _create_default

    from argilla_server.database import async_engine

    async def create_owner():
        await _create_default(api_key, "zs-ray-test-password", quiet=True)
        await async_engine.dispose()  # its pooled connections belong to this event loop, not uvicorn's (asyncpg)

    asyncio.run(create_owner())

    import uvicorn
    from argilla_server._app import app

    print(f"argilla-server ready to serve on 127.0.0.1:{port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
