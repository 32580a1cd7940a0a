"""Where a dataset's files are: (filesystem, split -> files, config) for a ``--dataset`` argument.

The argument is a Hub dataset id (read over ``HfFileSystem`` as ``datasets/<id>``), a local path or any
fsspec URI, resolved in this order, each step by the libraries the Hub itself uses where they can:

1. a single ``.parquet`` / ``.jsonl`` / ``.json`` file: every split name reads the whole file;
2. configs declared by the dataset card (README.md YAML ``configs:``, and ``.huggingface.yaml``, as
   mteb/mlsum declares its languages): the card is parsed by ``huggingface_hub.DatasetCard``, its configs by
   ``datasets.utils.metadata.MetadataConfigs`` (which also knows the default config); a config's
   ``data_files`` become split patterns by ``datasets.data_files.sanitize_patterns``, or, when it only
   names a ``data_dir``, by ``get_data_patterns`` in that directory;
3. no configs in a card: top-level ``CONFIG/`` directories holding split-named files (``CONFIG/SPLIT.parquet``,
   ``CONFIG/SPLIT-0000K-of-0000N.parquet``, ``CONFIG/SPLIT/*.parquet``) are configs. This rule is ours:
   ``get_data_patterns`` on the root would merge every config into one split (its patterns are ``**/test*``),
   and the Hub learns such configs from a card or from its own Parquet export (network, and nothing of the
   kind exists for a local directory). Within a config directory the splits are ``get_data_patterns``'s;
4. otherwise the standard layouts (``data/SPLIT-0000K-of-0000N.*``, ``SPLIT.parquet``, ``SPLIT/*.parquet``,
   ``data/SPLIT.jsonl``, ...) by ``get_data_patterns`` on the root.

Patterns are listed by ``datasets.data_files.DataFilesDict.from_patterns`` (fsspec globbing, hidden and
``__`` paths left out), so a split's files come in the order ``datasets`` reads them and an id's index is
the row's index in ``load_dataset`` too. Nothing here needs the network for a local directory.
"""

from __future__ import annotations

import os
import posixpath
from typing import Optional

from zs_ray.errors import ZsRayError

_EXTENSIONS = (".parquet", ".jsonl", ".json")


def _filesystem(dataset: str):
    """(fsspec filesystem, root path) for a local path, a URI, or a Hub dataset id."""
    import fsspec

    if "://" in dataset:
        return fsspec.core.url_to_fs(dataset)
    if os.path.exists(dataset) or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(dataset))
    from huggingface_hub import HfFileSystem

    return HfFileSystem(), f"datasets/{dataset}"


def _url(fs, path: str) -> str:
    """``path`` as the ``datasets`` pattern functions take it: a local path, else a URL (``hf://...``)."""
    from fsspec.implementations.local import LocalFileSystem

    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _card_configs(fs, root: str, dataset: str):
    """The configs a dataset card declares (``MetadataConfigs``: name -> params; empty without any)."""
    import yaml
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    data: dict = {}
    try:
        readme, standalone = posixpath.join(root, "README.md"), posixpath.join(root, ".huggingface.yaml")
        if fs.isfile(readme):
            with fs.open(readme, "r", encoding="utf-8") as fh:
                data = DatasetCard(fh.read()).data.to_dict()
        if fs.isfile(standalone):
            with fs.open(standalone, "r", encoding="utf-8") as fh:
                data.update(yaml.safe_load(fh) or {})
        return MetadataConfigs.from_dataset_card_data(DatasetCardData(**data))
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise ZsRayError(f"the dataset card of {dataset} declares no valid configs: {_one_line(exc)}") from None


def _split_files(fs, patterns: dict, base: str) -> dict[str, list[str]]:
    """Split -> data files (filesystem paths, in ``datasets`` order) matching ``patterns`` under ``base``."""
    from datasets.data_files import DataFilesDict

    resolved = DataFilesDict.from_patterns(patterns, base_path=_url(fs, base), allowed_extensions=list(_EXTENSIONS))
    splits = {str(split): list(dict.fromkeys(fs._strip_protocol(f) for f in files if f.endswith(_EXTENSIONS)))
              for split, files in resolved.items()}
    return {split: files for split, files in splits.items() if files}


def _default_splits(fs, base: str) -> dict[str, list[str]]:
    """The standard split layouts under ``base`` (``get_data_patterns``); {} without data files."""
    from datasets.data_files import EmptyDatasetError, get_data_patterns

    try:
        return _split_files(fs, get_data_patterns(_url(fs, base)), base)
    except EmptyDatasetError:
        return {}


def _card_splits(fs, root: str, params: dict) -> dict[str, list[str]]:
    from datasets.data_files import sanitize_patterns

    base = posixpath.join(root, params["data_dir"]) if params.get("data_dir") else root
    if params.get("data_files") is None:
        return _default_splits(fs, base)
    return _split_files(fs, sanitize_patterns(params["data_files"]), base)


def _config_dirs(fs, root: str) -> dict[str, str]:
    """Rule 3 of the module docstring: config name -> directory."""
    from datasets.data_files import DEFAULT_PATTERNS_ALL, SPLIT_KEYWORDS, EmptyDatasetError, get_data_patterns

    split_names = {str(k) for keywords in SPLIT_KEYWORDS.values() for k in keywords}  # train/, test/...: splits
    configs = {}
    for entry in fs.ls(root, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] != "directory" or name.startswith((".", "_")) or name == "data" or name in split_names:
            continue
        try:
            patterns = get_data_patterns(_url(fs, entry["name"]))
        except EmptyDatasetError:
            continue
        if list(patterns.values()) != list(DEFAULT_PATTERNS_ALL.values()):  # split-named files, not just "**"
            configs[name] = entry["name"]
    return dict(sorted(configs.items()))


def _choose(dataset: str, config: Optional[str], configs, default: Optional[str]) -> str:
    if config is None and default is None:
        raise ZsRayError(f"{dataset} has configs ({', '.join(configs)}): choose one with --config")
    if (config or default) not in configs:
        raise ZsRayError(f"unknown --config {config!r} for {dataset}: available configs are {', '.join(configs)}")
    return config or default


def _open(dataset: str):
    """(filesystem, root, single_file) of ``--dataset``; one line when it is missing."""
    fs, root = _filesystem(dataset)
    if fs.isfile(root):
        if not root.endswith(_EXTENSIONS):
            raise ZsRayError(f"--dataset {dataset!r} is a file but not .parquet/.jsonl/.json")
        return fs, root, True
    if not fs.isdir(root):
        offline = root.startswith("datasets/") and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        raise ZsRayError(f"dataset {dataset!r} not found (neither a local path nor a Hub dataset"
                         f"{'; HF_HUB_OFFLINE is set, so the Hub was not asked' if offline else ''})")
    return fs, root, False


def _configs(fs, root: str, dataset: str) -> tuple[dict, Optional[str]]:
    """(config name -> function giving its split -> files, default config): rules 2 and 3; {} without configs."""
    declared = _card_configs(fs, root, dataset)
    if declared:
        try:
            default = declared.get_default_config_name()
        except ValueError as exc:
            raise ZsRayError(f"the dataset card of {dataset}: {_one_line(exc)}") from None
        return {name: (lambda name=name: _card_splits(fs, root, declared[name])) for name in declared}, default
    dirs = _config_dirs(fs, root)
    return {name: (lambda d=d: _default_splits(fs, d)) for name, d in dirs.items()}, None


def _guarded(dataset: str, fn):
    try:
        return fn()
    except ZsRayError:
        raise
    except Exception as exc:  # network, auth, repository-not-found, a data file the card names but is missing ...
        raise ZsRayError(f"dataset {dataset!r} not found or not readable: {_one_line(exc)}") from None


def list_configs(dataset: str) -> list[str]:
    """The configs of ``dataset`` in its order (none for a single file or a dataset without configs)."""
    def run():
        fs, root, single = _open(dataset)
        return [] if single else list(_configs(fs, root, dataset)[0])

    return _guarded(dataset, run)


def resolve_files(dataset: str, config: Optional[str]) -> tuple[object, dict[str, list[str]], Optional[str], bool]:
    """(filesystem, split -> files, config actually used, single_file)."""
    def run():
        fs, root, single = _open(dataset)
        if single:
            return fs, {"*": [root]}, None, True
        configs, default = _configs(fs, root, dataset)
        if configs:
            used = _choose(dataset, config, list(configs), default)
            splits = configs[used]()
        else:  # no configs: a --config is not needed, and ignored
            used, splits = None, _default_splits(fs, root)
        if not splits:
            raise ZsRayError(f"no parquet/jsonl/json data files found in dataset {dataset!r}"
                             f"{f' (config {used})' if used else ''}")
        return fs, splits, used, False

    return _guarded(dataset, run)
