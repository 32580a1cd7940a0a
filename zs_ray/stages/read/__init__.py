"""Read stage: a dataset split as a Ray Data stream of rows with stable ids.

``plan_read`` resolves the dataset (``layout``: a Hub id over ``HfFileSystem``, a local directory or any
fsspec URI laid out like a Hub dataset, with or without card-declared configs, or a single
Parquet/JSONL/JSON file), applies the ``datasets`` split syntax (``test[0:500]``, ``test[:10%]``,
``train+validation``) to row counts read cheaply (Parquet footers, one streamed pass over JSON lines),
and checks the text field: all before any work starts, in the driver (``plan``).

``read_dataset`` turns the plan into a Ray Dataset (``source``): one read task per slice of Parquet row
groups or of JSON-lines bytes, streamed, never the whole corpus in one process. Each row gets
``id = "<config>-<split>-<index in split>"`` (and ``config`` for a dataset with configs) (``<split>-<index>`` without configs, ``<file stem>-<index>``
for a single file): identical across runs and machines for the same source row. The columns zs-ray adds
are defined in ``zs_ray.output``.
"""

from zs_ray.output import CONFIG_COLUMN, ID_COLUMN
from zs_ray.stages.base import TEXT
from zs_ray.stages.read.layout import _filesystem, list_configs, resolve_files
from zs_ray.stages.read.plan import ReadPlan, parse_split, plan_read, plan_runs
from zs_ray.stages.read.source import Segment, read_dataset, read_segment

NEEDS = ()  # the first stage: the source files
MAKES = (ID_COLUMN, CONFIG_COLUMN, TEXT)  # and every other source column, kept as it is

__all__ = ["NEEDS", "MAKES", "ReadPlan", "Segment", "_filesystem", "list_configs", "parse_split", "plan_read", "plan_runs",
           "read_dataset", "read_segment", "resolve_files"]
