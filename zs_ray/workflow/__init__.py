"""The annotation workflow after logging: round-1 sample (``sample``), ``evaluate`` (metrics + ``report``),
``thresholds`` (per-label score thresholds for a target precision) and ``bulk`` (bulk-labelling on the
server, with undo) and ``tune`` (templates and label phrasings ranked on the labelled records). Settings:
``zs_ray.workflow.config``. Nothing here imports Ray, but ``tune_score`` for a large sample (the job's stages)."""
