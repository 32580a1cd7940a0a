"""Records as the seed builds them, pre-send validation, config precedence, ledger recovery."""

import json
import math
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from tests.rubrix_server import LABELS, MODEL, make_output

from zs_ray.errors import ZsRayError
from zs_ray.output import open_output
from zs_ray.rubrix import records as rec
from zs_ray.rubrix.client import RubrixClient
from zs_ray.rubrix.config import RubrixConfig, parse_tags
from zs_ray.rubrix.ledger import Ledger


def read_output(path):
    out = open_output(str(path))
    return out.dataset, out.manifest


def _spec(tmp_path, **kw):
    ds, manifest = read_output(tmp_path)
    return ds, manifest, rec.make_spec(ds, manifest, kw.get("fields"), kw.get("agent"))


def test_records_match_the_seed(tmp_path):
    make_output(tmp_path, 60, empty_every=50)
    ds, _, (spec, warnings) = _spec(tmp_path)
    assert spec.metadata_fields == ("topic", "url", "title", "date")
    assert any("'text'" in w for w in warnings)  # the long article is named, not dropped silently
    built = [r for b in ds.to_batches() for r in rec.build_records(b, spec)]
    assert built[7] is None  # empty summary: not logged
    r = built[0]
    assert r["id"] == "es-test-000000" and r["inputs"] == {"text": "Resumen de la noticia número 0 sobre política"}
    assert r["prediction"]["agent"] == MODEL and r["multi_label"] is False
    assert [x["class"] for x in r["prediction"]["labels"]][0] in LABELS
    assert r["metadata"]["topic"] == "política" and "text" not in r["metadata"]
    body = json.loads(rec.bulk_body([rec.encode(r)], {"tags": "data-annotation"}))
    assert body["records"][0] == r and body["tags"] == {"tags": "data-annotation"}


def test_multi_label_records(tmp_path):
    make_output(tmp_path, 20, multi_label=True)
    ds, _, (spec, _) = _spec(tmp_path)
    r = next(rec.build_records(next(ds.to_batches()), spec))
    assert r["multi_label"] is True and sum(x["score"] for x in r["prediction"]["labels"]) > 1.001


def test_metadata_checks(tmp_path):
    make_output(tmp_path / "a", 20, long_url=True)
    ds, m = read_output(tmp_path / "a")
    spec, warnings = rec.make_spec(ds, m, None, None)
    assert "url" not in spec.metadata_fields and any("'url'" in w and "128" in w for w in warnings)
    with pytest.raises(ZsRayError, match="'url'.*128"):
        rec.make_spec(ds, m, ["topic", "url"], None)
    with pytest.raises(ZsRayError, match="not columns"):
        rec.make_spec(ds, m, ["nope"], None)
    make_output(tmp_path / "b", 10, extra_cols=50)
    ds, m = read_output(tmp_path / "b")
    with pytest.raises(ZsRayError, match="limit of 50"):
        rec.make_spec(ds, m, None, None)


def odd_metadata(n: int) -> dict:
    """Source columns whose values JSON cannot carry as they are, or the server would cut or refuse."""
    t0 = datetime(2019, 1, 1, 12, tzinfo=timezone.utc)
    return {
        "published": pa.array([t0 + timedelta(days=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "day": [date(2019, 1, 1) + timedelta(days=i) for i in range(n)],
        "ratio": [math.nan if i % 5 == 0 else math.inf if i == 3 else i / 10 for i in range(n)],
        "price": [Decimal("1.50")] * n,
        "section": pa.array(["s" * 200 if i == 4 else "short" for i in range(n)]).dictionary_encode(),
        "blob": [b"\x00"] * n,
    }


def test_metadata_values_converted_or_refused(tmp_path):
    """Defect 5: dates -> ISO strings, decimals -> numbers, NaN/inf -> missing (counted), long strings
    also in dictionary-encoded (categorical) columns and unloggable types -> left out with a warning,
    or refused before any work when named."""
    make_output(tmp_path, 20, empty_every=0, columns=odd_metadata(20))
    ds, m = read_output(tmp_path)
    spec, warnings = rec.make_spec(ds, m, None, None)
    assert {"published", "day", "ratio", "price"} <= set(spec.metadata_fields)
    assert "section" not in spec.metadata_fields and any("'section'" in w and "128" in w for w in warnings)
    assert "blob" not in spec.metadata_fields and any("'blob'" in w and "binary" in w for w in warnings)
    dropped = Counter()
    built = [r for b in ds.to_batches() for r in rec.build_records(b, spec, dropped)]
    assert dropped == {"ratio": 5}
    assert built[1]["metadata"]["published"] == "2019-01-02T12:00:00+00:00"
    assert built[1]["metadata"]["day"] == "2019-01-02" and built[1]["metadata"]["price"] == 1.5
    assert "ratio" not in built[0]["metadata"] and "ratio" not in built[3]["metadata"]
    assert built[2]["metadata"]["ratio"] == 0.2
    body = rec.bulk_body([rec.encode(r) for r in built], {})
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} sent"))["records"][1] == built[1]
    with pytest.raises(ZsRayError, match="'section'.*128"):
        rec.make_spec(ds, m, ["topic", "section"], None)
    with pytest.raises(ZsRayError, match="'blob'.*binary"):
        rec.make_spec(ds, m, ["blob"], None)


def test_agent_and_label_checks(tmp_path):
    make_output(tmp_path, 10)
    ds, m = read_output(tmp_path)
    with pytest.raises(ZsRayError, match="agent.*--rubrix-agent"):
        rec.make_spec(ds, m, None, "x" * 65)
    with pytest.raises(ZsRayError, match="1-128"):
        rec.make_spec(ds, {**m, "candidate_labels": ["ok", "y" * 129]}, None, None)
    with pytest.raises(ZsRayError, match="sum to"):
        rec.check_prediction("a", ["x", "y"], [0.9, 0.5], multi_label=False)
    rec.check_prediction("a", ["x", "y"], [0.9, 0.5], multi_label=True)
    with pytest.raises(ZsRayError, match="not in"):
        rec.check_prediction("a", ["x"], [float("nan")], multi_label=True)


def test_read_output_errors(tmp_path):
    with pytest.raises(ZsRayError, match="does not exist"):
        read_output(tmp_path / "missing")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(ZsRayError, match="_zs_ray_manifest.json"):
        read_output(tmp_path)


def test_config_precedence_and_secrecy(monkeypatch):
    for name, value in {"RUBRIX_API_URL": "http://env:1", "RUBRIX_API_KEY": "env-key", "RUBRIX_WORKSPACE": "ws",
                        "ARGILLA_API_URL": "http://argilla-env:3"}.items():
        monkeypatch.setenv(name, value)
    c = RubrixConfig(rubrix_dataset="ds", rubrix_api_url="http://flag:2/")
    assert (c.rubrix_api_url, c.rubrix_api_key, c.rubrix_workspace) == ("http://flag:2", "env-key", "ws")
    monkeypatch.delenv("RUBRIX_API_URL")
    assert RubrixConfig(rubrix_dataset="ds").rubrix_api_url == "http://argilla-env:3"  # the 2.x SDK's name
    for name in ("RUBRIX_API_KEY", "RUBRIX_WORKSPACE", "ARGILLA_API_URL"):
        monkeypatch.delenv(name)
    d = RubrixConfig(rubrix_dataset="ds")
    # No key given: None, so that the server's generation chooses its default (rubrix.apikey / argilla.apikey).
    assert (d.rubrix_api_url, d.rubrix_api_key, d.rubrix_workspace) == ("http://localhost:6900", None, None)
    assert d.rubrix_tags == {"tags": "data-annotation"}
    assert "env-key" not in repr(c) and "env-key" not in str(c)
    with pytest.raises(ZsRayError, match="dataset name"):
        RubrixConfig(rubrix_dataset="Zero Shot").validate()
    with pytest.raises(ZsRayError, match="dataset name"):
        RubrixConfig(rubrix_dataset="_x").validate()
    assert parse_tags(["a=b", "c = d"]) == {"a": "b", "c": "d"} == parse_tags({"a": "b", "c": "d"})
    assert RubrixClient(d).session.verify is True  # TLS verified unless turned off
    assert RubrixClient(RubrixConfig(rubrix_dataset="ds", rubrix_no_verify_tls=True)).session.verify is False
    with pytest.raises(ZsRayError, match="key=value"):
        parse_tags(["nokey"])


def test_ledger_recovers_from_a_torn_write(tmp_path):
    ident = {"api_url": "u", "workspace": None, "dataset": "d"}
    led = Ledger.open(tmp_path / "l.jsonl", ident)
    led.ack("r-0", ["a", "b"])
    led.close()
    with open(tmp_path / "l.jsonl", "a") as fh:
        fh.write('{"op":"ack","chunk":"r-1","ids":["c"')  # crash mid-append
    led = Ledger.open(tmp_path / "l.jsonl", ident)
    assert led.acked == {"a", "b"}  # the torn ack's ids are not taken as delivered
    led.ack("r-1", ["c", "d"])
    led.close()
    led = Ledger.open(tmp_path / "l.jsonl", ident)
    assert led.acked == {"a", "b", "c", "d"}
    led.close()
    assert "key" not in (tmp_path / "l.jsonl").read_text()
    with pytest.raises(ZsRayError, match="belongs to"):
        Ledger.open(tmp_path / "l.jsonl", {**ident, "dataset": "other"})
    led = Ledger.open(tmp_path / "l.jsonl", ident, reset=True)  # dataset gone from the server
    assert not led.acked and list(tmp_path.glob("l.jsonl.stale-*"))
    led.close()


def test_the_old_package_name_is_an_alias_of_servers():
    """``zs_ray.rubrix`` (the old name) keeps working: the same module objects and the same RubrixConfig."""
    import zs_ray
    import zs_ray.rubrix
    import zs_ray.servers
    from zs_ray.servers import client, config, records, v1
    from zs_ray.workflow.config import RubrixConfig as New

    assert rec is records and RubrixClient is client.RubrixClient and zs_ray.rubrix.client is client
    assert zs_ray.rubrix.v1 is v1
    assert RubrixConfig is New is zs_ray.rubrix.RubrixConfig is zs_ray.RubrixConfig
    assert parse_tags is config.parse_tags and zs_ray.rubrix.log_output is zs_ray.servers.log_output
    assert issubclass(RubrixConfig, config.SendConfig)
    assert config.SendConfig(rubrix_dataset="d").sample_rule_for(None) is None  # servers: no sample of their own
    assert not hasattr(config.SendConfig(rubrix_dataset="d"), "sample")
