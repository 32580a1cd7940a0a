"""CPU precision modes: each fast mode within its stated agreement bound, and ``auto`` decided from what
torch will actually run (never assuming bf16 is native: these pass on AVX2-only and AVX-512 CPUs)."""

import json
import os
import subprocess
import sys

import pytest

from tests.agreement import check_bound
from tests.builders import mlsum_rows
from tests.conftest import LABELS, TEMPLATE
from zs_ray import ZeroShotClassifier, ZsRayError
from zs_ray.engine import cpu_int8_available, device, resolve_precision

TEXTS = [r["summary"] for r in mlsum_rows(120, seed=3)]


@pytest.fixture(scope="module")
def exact(nli_model):
    return ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32")(TEXTS)


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_fast_modes_within_their_bound(nli_model, exact, mode):
    """bf16 runs everywhere (natively or emulated); int8 where torch has an x86 int8 engine."""
    if mode == "int8" and not cpu_int8_available():
        pytest.skip("no x86 int8 engine in this torch / CPU")
    clf = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision=mode)
    assert clf.precision == mode
    if mode == "int8":
        assert clf.scorer.int8_linears == 2 * 6  # the encoder's linears (2 layers); the head stays fp32
        assert clf.scorer.first_token_only
    check_bound(mode, exact, clf(TEXTS))


def test_onnx_int8_within_its_bound_and_exported_once(nli_model, exact, tmp_path, monkeypatch):
    """ONNX Runtime int8: within its bound; the quantized model is cached, so a second load reuses it."""
    from zs_ray.engine.onnx import OrtNliModel, onnx_available

    assert onnx_available()  # a dependency of zs-ray
    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path))
    clf = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="onnx-int8")
    assert clf.precision == "onnx-int8" and isinstance(clf.scorer.model, OrtNliModel)
    assert clf.scorer.first_token_only
    check_bound("onnx-int8", exact, clf(TEXTS))
    files = list(tmp_path.rglob("*.onnx"))
    assert len(files) == 1 and not list(tmp_path.rglob(".export-*"))
    stamp = files[0].stat().st_mtime_ns
    again = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="onnx-int8")
    assert again.scorer.model.path == str(files[0]) and files[0].stat().st_mtime_ns == stamp
    assert again(TEXTS[:5]) == clf(TEXTS[:5])


def test_onnx_int8_is_refused_off_cpu_and_without_onnxruntime(monkeypatch):
    from zs_ray.engine import onnx

    with pytest.raises(ZsRayError, match="CPUs only"):
        resolve_precision("onnx-int8", "cuda")
    monkeypatch.setattr(onnx, "onnx_available", lambda: False)
    with pytest.raises(ZsRayError, match=r"needs ONNX Runtime, which this install lacks: pip install onnxruntime onnx"):
        resolve_precision("onnx-int8", "cpu")


def test_auto_measures_this_machine_once_and_stays_within_its_modes_bound(nli_model, exact, tmp_path, monkeypatch):
    """``auto`` measures every candidate mode of this CPU on the loaded model, stores what it saw and what it
    chose, and later loads take the stored choice without measuring; the choice is within its bound."""
    from zs_ray.engine import calibrate, cpu_candidates

    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path))
    clf = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="auto")
    (entry,) = json.loads(calibrate.cache_file().read_text()).values()
    assert set(entry["pairs_per_s"]) == set(cpu_candidates()) and clf.precision in cpu_candidates()
    assert entry["choice"] == clf.precision == calibrate.choose(entry["pairs_per_s"])
    monkeypatch.setattr(calibrate, "measure", lambda *a: pytest.fail("measured again"))
    assert ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="auto").precision == clf.precision
    if clf.precision != "fp32":
        check_bound(clf.precision, exact, clf(TEXTS))


@pytest.mark.parametrize("rates,expected", [
    ({"fp32": 10, "bf16": 20, "int8": 21, "onnx-int8": 23}, "bf16"),  # int8 not 1.2x bf16: the faithful one
    ({"fp32": 10, "int8": 16, "onnx-int8": 22}, "onnx-int8"),  # AVX2-only: the fastest int8 runtime
    ({"fp32": 10, "int8": 11.5}, "fp32"),  # int8 barely faster: fp32
    ({"fp32": 10, "bf16": 11, "int8": 30}, "int8"),
    ({"fp32": 10}, "fp32"),
])
def test_auto_takes_the_fastest_unless_a_faithful_mode_is_close(rates, expected):
    from zs_ray.engine.calibrate import choose

    assert choose(rates) == expected


@pytest.mark.parametrize("capability,flags,onednn,int8,expected", [
    ("AVX512", {"avx2", "avx512f", "avx512_bf16"}, None, True, "bf16"),
    ("AVX512", {"avx2", "avx512f", "amx_bf16"}, "ALL", True, "bf16"),
    ("AVX512", {"avx2", "avx512f", "avx512_vnni"}, None, True, "int8"),  # AVX-512 without bf16
    ("AVX2", {"avx2", "avx512f", "avx512_bf16"}, None, True, "int8"),  # the flags say bf16, torch runs AVX2
    ("AVX512", {"avx2", "avx512f", "avx512_bf16"}, "AVX2", True, "int8"),  # oneDNN capped below bf16
    ("AVX512", {"avx2", "avx512f", "avx512_bf16"}, "avx512_core_bf16", True, "bf16"),
    ("AVX2", {"avx2"}, None, False, "fp32"),
    ("DEFAULT", set(), None, False, "fp32"),
])
def test_auto_on_cpu_follows_what_torch_runs(monkeypatch, capability, flags, onednn, int8, expected):
    monkeypatch.setattr(device, "cpu_capability", lambda: capability)
    monkeypatch.setattr(device, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(device, "cpu_int8_available", lambda: int8)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if onednn:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert resolve_precision("auto", "cpu") == expected
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, "cpu") == explicit
    if not int8:
        with pytest.raises(ZsRayError, match="int8"):
            resolve_precision("int8", "cpu")


def test_int8_is_refused_off_cpu_and_unknown_names_too():
    with pytest.raises(ZsRayError, match="int8 runs on x86 CPUs"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ZsRayError, match="unknown --precision"):
        resolve_precision("int4", "cpu")


def test_int8_vnni_follows_fbgemm_setting(monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    assert device.cpu_int8_vnni()
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    assert not device.cpu_int8_vnni()
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2"})
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS")
    assert not device.cpu_int8_vnni()


def test_auto_under_avx2_kernels_is_not_bf16():
    """A real process with torch capped at AVX2 (what an AVX2-only CPU gives): torch reports AVX2 and
    ``auto`` does not pick bf16, whatever /proc/cpuinfo says."""
    code = ("import torch, zs_ray.engine as e; "
            "print(torch.backends.cpu.get_cpu_capability(), e.resolve_precision('auto', 'cpu'), "
            "e.cpu_runs_native_bf16(), e.cpu_int8_vnni(), e.cpu_int8_available(), ','.join(e.cpu_candidates()))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    capability, auto, native_bf16, vnni, int8, candidates = done.stdout.split()
    assert capability in ("AVX2", "DEFAULT")
    assert auto != "bf16" and native_bf16 == "False" and vnni == "False"
    assert auto == ("int8" if int8 == "True" else "fp32")
    assert "bf16" not in candidates.split(",")  # what a loaded model's auto measures
