"""The old ``zs_ray.rubrix.config``: ``zs_ray.servers.config``'s names plus ``RubrixConfig`` (now
``zs_ray.workflow.config.RubrixConfig``: the server settings and the round-1 sample)."""

from zs_ray.servers import config as _servers_config
from zs_ray.workflow.config import RubrixConfig  # noqa: F401

globals().update({k: v for k, v in vars(_servers_config).items() if not k.startswith("__")})
