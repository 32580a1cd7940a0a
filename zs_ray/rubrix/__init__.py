"""Rubrix / Argilla side of zs-ray: log predictions exactly once, pull annotations back. Rubrix 0.x and
Argilla 1.x speak the text-classification API (``client``); Argilla 2.x its ``/api/v1`` API (``argilla2``);
the server's generation is detected, the settings and the commands are the same.

Public API::

    from zs_ray.rubrix import RubrixConfig, log_output, preflight, pull
    config = RubrixConfig(rubrix_dataset="zeroshot_noticias")   # URL, key, workspace: flags > env > defaults
    preflight(config)                             # fail early on bad settings (no writes)
    report = log_output("predictions/", config)   # report.ok, report.summary()
    pull(config, "annotations.parquet")
    # a private Hugging Face Space or a proxy, over TLS with a company CA (rubrix/transport.py):
    RubrixConfig(rubrix_dataset="zeroshot_noticias", rubrix_api_url="https://my-org-argilla.hf.space",
                 rubrix_extra_headers={"Authorization": "Bearer hf_..."}, rubrix_ca_bundle="company-ca.pem")

Ray is imported only when sending starts; the HTTP client never imports it.
"""

from zs_ray.rubrix.config import RubrixConfig, ServerConfig
from zs_ray.rubrix.connect import connect, preflight
from zs_ray.rubrix.ingest import LogReport, log_output
from zs_ray.rubrix.pull import PullReport, pull

__all__ = ["RubrixConfig", "ServerConfig", "LogReport", "PullReport", "connect", "log_output", "preflight", "pull"]
