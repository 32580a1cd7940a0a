"""The job's stages, one module each, in the order ``pipeline.py`` runs them:

======================  ============================================  =========================================
stage                   needs                                         makes
======================  ============================================  =========================================
``read/``               the source files (``layout``, ``plan``,       ``id``, ``config``, the text and every
                        ``source``)                                   source column
``tokenize.py``         the text (``--text-field``)                   ``input_ids``, ``token_type_ids``
``model.py``            the token columns                             ``labels``, ``scores``, ``prediction``,
                                                                      ``score`` (in place of the token columns)
``write.py``            ``id`` and the prediction columns             the Parquet files and the manifest
``log.py``              ``id``, ``labels``, ``scores``, the text      records on the annotation server
======================  ============================================  =========================================

Each module declares its columns as ``NEEDS`` and ``MAKES`` (``base.TEXT`` stands for the ``--text-field``
column; ``base.check_columns`` checks the chain). ``base.py`` is a stage as data (``Stage``, ``Pool``) and how one
becomes a ``map_batches``. Importing this package imports none of them.
"""

#: The stages' modules (``zs_ray.stages.<name>``), in the job's order.
ORDER = ("read", "tokenize", "model", "write", "log")
