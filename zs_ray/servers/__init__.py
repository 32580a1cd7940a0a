"""The annotation servers zs-ray speaks, one module per API generation, the settings and the commands the
same for all (the server's generation is detected):

* Rubrix 0.x and Argilla 1.x: the text-classification API (``v1``: datasets, ``:bulk``, records by query,
  ids held; ``records``: rows as records);
* Argilla 2.x: its ``/api/v1`` API (``argilla2``: set-up and sending, ``argilla2_pull``: reading back);
* shared: ``client`` (the HTTP client and the one retry layer), ``config`` (settings), ``transport`` (headers,
  TLS, secrets), ``connect`` (checks before any write), ``ingest`` (``log_output``: exactly once by id, Ray
  sender tasks), ``ledger``, ``pull``.

Public API::

    from zs_ray.servers import SendConfig, log_output, preflight, pull
    config = SendConfig(rubrix_dataset="zeroshot_noticias")    # URL, key, workspace: flags > env > defaults
    preflight(config)                             # fail early on bad settings (no writes)
    report = log_output("predictions/", config)   # report.ok, report.summary()
    pull(config, "annotations.parquet")
    # a private Hugging Face Space or a proxy, over TLS with a company CA (servers/transport.py):
    SendConfig(rubrix_dataset="zeroshot_noticias", rubrix_api_url="https://my-org-argilla.hf.space",
               rubrix_extra_headers={"Authorization": "Bearer hf_..."}, rubrix_ca_bundle="company-ca.pem")

``zs_ray.workflow.config.RubrixConfig`` (also ``zs_ray.RubrixConfig``) is ``SendConfig`` plus the round-1
sample (``--sample``): what ``annotate`` and ``log`` take. Nothing here imports the workflow; ``zs_ray.rubrix``
is the old name of this package, kept as an alias. Ray is imported only when sending starts; the HTTP client
never imports it.
"""

from zs_ray.servers.config import SendConfig, ServerConfig
from zs_ray.servers.connect import connect, preflight
from zs_ray.servers.ingest import LogReport, log_output
from zs_ray.servers.pull import PullReport, pull

__all__ = ["SendConfig", "ServerConfig", "LogReport", "PullReport", "connect", "log_output", "preflight", "pull"]
