"""Records as the seed builds them, pre-send validation, config precedence, ledger recovery."""

import json

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
    assert (d.rubrix_api_url, d.rubrix_api_key, d.rubrix_workspace) == ("http://localhost:6900", "rubrix.apikey", None)
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
