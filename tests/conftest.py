"""Shared fixtures: one local Ray cluster for the in-process tests."""

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# ONNX exports and auto's measurements (zs_ray.engine.calibrate) go to a store of this test session, which
# the Ray workers and the CLI processes the tests start inherit.
os.environ.setdefault("ZS_RAY_CACHE", tempfile.mkdtemp(prefix="zs-ray-cache-"))


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster shared by every in-process test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


LABELS = ["política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"]
TEMPLATE = "Esta noticia habla de {}."


@pytest.fixture(scope="session")
def nli_model(tmp_path_factory):
    """Tiny ELECTRA NLI model, entailment at index 2 (as SELECTRA), max length 128."""
    from tests.builders import build_nli_model

    return str(build_nli_model(tmp_path_factory.mktemp("nli2"), entailment_index=2))


@pytest.fixture(scope="session")
def nli_model_entail0(tmp_path_factory):
    """Tiny DeBERTa-v2 NLI model with entailment at index 0, as the de / fr / ru / tu preset
    (MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7): relative attention, Unigram tokenizer."""
    from tests.builders import build_arch_nli_model

    return str(build_arch_nli_model(tmp_path_factory.mktemp("nli0"), "deberta-v2", seed=1))


@pytest.fixture(scope="session")
def mlsum_dir(tmp_path_factory):
    """Hub-style MLSum layout: es/{test,train,validation}-0000K-of-0000N.parquet, some empty summaries."""
    from tests.builders import write_mlsum

    return str(write_mlsum(tmp_path_factory.mktemp("mlsum"), {"test": 300, "train": 200, "validation": 50},
                           files=3, row_group_size=40, empty_every=37))


@pytest.fixture(scope="session")
def pipeline_factory():
    """transformers' own zero-shot pipeline: the reference for equivalence."""
    from transformers import pipeline

    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = pipeline("zero-shot-classification", model=model, tokenizer=model, device="cpu")
        return cache[model]

    return get


@pytest.fixture(scope="session")
def argilla2(tmp_path_factory, request):
    """The real argilla-server 2.8 (tests/argilla2_server), started once per session; tests use their own
    dataset and user names."""
    from tests.argilla2_server import Argilla2Server, ServerFailed

    srv = Argilla2Server(tmp_path_factory.mktemp("argilla2"))
    try:
        srv.launch()
        request.getfixturevalue("ray_local")  # the local Ray starts while the server does
        srv.wait()
    except ServerFailed as exc:
        pytest.fail(f"the argilla-server 2.8 test server did not start: {exc}", pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL 15 in a temp dir on 127.0.0.1 (tests/argilla2_server/postgres.py: initdb, trust auth, fsync off),
    once per session, stopped and removed at the end. Not installed: the tests that need it fail, saying so."""
    from tests.argilla2_server.postgres import Postgres, PostgresMissing

    try:
        pg = Postgres().start()
    except PostgresMissing as exc:
        pytest.fail(f"PostgreSQL for the argilla-server 2.8 tests: {exc}", pytrace=False)
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def argilla2_pg(tmp_path_factory, postgres):
    """The real argilla-server 2.8 on PostgreSQL, as Argilla's server deployments run it (else as ``argilla2``)."""
    from tests.argilla2_server import Argilla2Server, ServerFailed

    srv = Argilla2Server(tmp_path_factory.mktemp("argilla2-pg"), database_url=postgres.url())
    try:
        srv.start()
    except ServerFailed as exc:
        pytest.fail(f"the argilla-server 2.8 test server on PostgreSQL did not start: {exc}", pytrace=False)
    yield srv
    srv.stop()


ARGILLA2_DATABASES = {"sqlite": "argilla2", "postgresql": "argilla2_pg"}


@pytest.fixture(params=list(ARGILLA2_DATABASES))
def argilla2_each(request):
    """The real argilla-server 2.8 on each database in turn: a test that takes it runs on SQLite, then PostgreSQL."""
    return request.getfixturevalue(ARGILLA2_DATABASES[request.param])
