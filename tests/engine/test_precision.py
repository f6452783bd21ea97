"""clmini.engine.device: precision as a run setting (resolved, hashed, recorded), bf16 runs finite,
deterministic and resumable on the CPU."""
from __future__ import annotations

import math

import pytest
import torch

from clmini.engine import TrainConfig, native_bf16, resolve_precision, train_or_load
from clmini.engine import device as device_module
from clmini.metrics import autocast, encode
from engine_helpers import killed_at_checkpoint, pattern_data

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return pattern_data(n_train=128, n_test=64)


def tiny(**overrides) -> TrainConfig:
    values = dict(width=4, proj_dim=16, epochs=2, batch_size=32, lr=3e-3, monitor_train_size=64,
                  monitor_test_size=32, knn_k=20, probe_iters=20)
    return TrainConfig(**{**values, **overrides})


def test_resolution(monkeypatch):
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16(CPU) else "fp32")
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(device_module, "native_bf16", lambda device: True)
    assert resolve_precision("auto", CPU) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", CPU)


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not native_bf16(CPU)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bf16(CPU)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not native_bf16(CPU)  # a build without the probes: no claim of native bf16


def test_the_config_holds_the_resolved_precision_and_hashes_it(monkeypatch):
    assert TrainConfig().precision == resolve_precision("auto", torch.device("cuda" if torch.cuda.is_available()
                                                                             else "cpu"))
    fp32, bf16 = TrainConfig(precision="fp32"), TrainConfig(precision="bf16")
    assert fp32.hash != bf16.hash  # a bf16 run is never reused as a float32 one
    assert TrainConfig.from_dict(bf16.to_dict()).hash == bf16.hash
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    assert TrainConfig(precision="auto") == fp32
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")


def test_autocast_and_encode_in_bf16():
    with autocast(CPU, "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    with pytest.raises(ValueError):
        autocast(CPU, "auto")
    from clmini.engine.models import build_model
    model = build_model("small-cnn", 1, [0.5], [0.25], 16, 4)
    images = pattern_data(16, 16).train_x
    h32, z32 = encode(model, images)
    h16, z16 = encode(model, images, precision="bf16")
    assert h16.dtype == torch.float32 and z16.dtype == torch.float32  # features come back as float32
    assert not torch.equal(h16, h32) and torch.allclose(h16, h32, rtol=0.05, atol=0.05)


def test_a_bf16_run_is_finite_deterministic_and_recorded(tmp_path, data):
    config = tiny(precision="bf16")
    first = train_or_load(config, tmp_path / "a", device="cpu", data=data, progress=False)
    second = train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False)
    assert first.metrics["precision"] == "bf16" and first.config.precision == "bf16"
    assert all(math.isfinite(r["loss"]) for r in first.history[1:])
    assert second.history == first.history
    timing = ("train_seconds", "eval_seconds")
    assert {k: v for k, v in first.metrics.items() if k not in timing} == \
        {k: v for k, v in second.metrics.items() if k not in timing}
    fp32 = train_or_load(tiny(precision="fp32"), tmp_path / "a", device="cpu", data=data, progress=False)
    assert fp32.dir != first.dir and fp32.metrics["precision"] == "fp32"
    assert fp32.history[-1]["loss"] != first.history[-1]["loss"]  # it did compute in another precision


def test_an_interrupted_bf16_run_resumes_with_identical_results(tmp_path, data, monkeypatch):
    config = tiny(precision="bf16")
    reference = train_or_load(config, tmp_path / "a", device="cpu", data=data, progress=False)
    with killed_at_checkpoint(monkeypatch, 6):  # 4 steps per epoch: the 6th is mid-epoch 2
        train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False, checkpoint_every=0)
    resumed = train_or_load(config, tmp_path / "b", device="cpu", data=data, progress=False)
    assert resumed.history == reference.history
    timing = ("train_seconds", "eval_seconds")
    assert {k: v for k, v in resumed.metrics.items() if k not in timing} == \
        {k: v for k, v in reference.metrics.items() if k not in timing}


def test_bf16_without_native_support_warns(tmp_path, data, monkeypatch):
    from clmini.engine import runs

    monkeypatch.setattr(runs, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        train_or_load(tiny(precision="bf16", epochs=0), tmp_path, device="cpu", data=data, progress=False)
