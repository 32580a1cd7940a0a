"""Before anything is sent or read: the settings, the server's generation, the key, the workspace and
whether the dataset exists. Everything the user can get wrong fails here, as one ``ZsRayError``."""

from __future__ import annotations

from zs_ray.errors import ZsRayError
from zs_ray.servers.client import RubrixClient, RubrixError, ServerInfo, with_retries
from zs_ray.servers.v1 import TASK, get_dataset, me
from zs_ray.servers.config import ServerConfig


def connect(config: ServerConfig) -> tuple[RubrixClient, ServerInfo, bool]:
    """Check settings, server, key and workspace. Returns (client, info, dataset_existed).

    Refuses Argilla 1.0-1.1 (no records search: ``client.info``), and a missing workspace from Argilla 1.6,
    where the server requires one. On Argilla 2.x, ``client.argilla2`` is then the ``argilla2.Session`` (user,
    workspace, dataset or None). Does not create anything. Call it before a long annotation job to fail early.
    """
    config.validate()
    client = RubrixClient(config)
    try:
        info = with_retries(config, client.info)
        overlap = getattr(config, "min_submitted", None)
        if overlap and overlap > 1 and info.generation != "argilla2":
            raise ZsRayError(f"--min-submitted {overlap}: {'Rubrix' if info.generation == 'rubrix' else 'Argilla'} {info.version} keeps one annotation per record, so no "
                             "record can be answered by several people; overlap needs Argilla 2.x")
        if info.generation == "argilla2":  # the /api/v1 API: key, workspace and dataset checked there
            from zs_ray.servers import argilla2

            client.argilla2 = argilla2.open_session(client, config)
            return client, info, client.argilla2.dataset is not None
        try:
            user = with_retries(config, lambda: me(client))
        except RubrixError as exc:
            if exc.status in (401, 403) and not exc.front:
                default = "" if config.rubrix_api_key is not None else (
                    f" (no key was given, so the default {config.api_key_for(info.generation)} was tried: "
                    "set RUBRIX_API_KEY)")
                raise ZsRayError(f"the Rubrix server refused the API key: {exc}{default}") from None
            raise
        if info.generation == "argilla" and info.version_tuple >= (1, 6) and not config.rubrix_workspace:
            raise ZsRayError(
                f"Argilla {info.version} needs a workspace: set --rubrix-workspace or "
                f"RUBRIX_WORKSPACE (yours: {', '.join(user.get('workspaces') or []) or 'none'})"
            )
        allowed = set(user.get("workspaces") or []) | {user.get("username")}
        if config.rubrix_workspace and user.get("workspaces") and config.rubrix_workspace not in allowed:
            raise ZsRayError(f"workspace {config.rubrix_workspace!r} is not one of yours: "
                             f"{', '.join(sorted(w for w in allowed if w))}")
        existing = with_retries(config, lambda: get_dataset(client))
    except RubrixError as exc:
        client.close()
        raise ZsRayError(f"Rubrix at {config.public_url}: {exc}") from None
    except ZsRayError:
        client.close()
        raise
    if existing and existing.get("task") not in (None, TASK):
        client.close()
        raise ZsRayError(f"dataset {config.rubrix_dataset} exists with task {existing.get('task')}, "
                         f"not {TASK}")
    return client, info, existing is not None


def preflight(config: ServerConfig) -> ServerInfo:
    """``connect`` and close: for ``annotate`` to refuse bad Rubrix settings before hours of work."""
    client, info, _ = connect(config)
    client.close()
    return info
