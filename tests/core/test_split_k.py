"""The split-K heuristic: the two regimes, the device's multiprocessor count read at run time
(mocked device properties: no GPU here), the key-count cap, the CPU, and the constants file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from vllm_rocm_accel import policy, split_k

CUDA = torch.device("cuda", 0)


@pytest.fixture
def device_with(monkeypatch):
    """Pretend cuda:0 has ``n`` multiprocessors (and belongs to device family ``family``)."""

    def apply(n: int, family: str = "cuda"):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda index: SimpleNamespace(multi_processor_count=n, name=f"mock-{n}"))
        monkeypatch.setattr(policy, "family_of", lambda device: family)
        split_k._clear()

    yield apply
    monkeypatch.undo()
    split_k._clear()


def test_cpu_never_splits():
    assert split_k.choose_num_splits(1, 1, 1, 131072, torch.device("cpu")) == 1
    assert split_k.choose_num_splits(1, 1, 1, 131072, None) == 1
    assert split_k.multiprocessors(torch.device("cpu")) == 1


@pytest.mark.parametrize("family", ["cuda", "rocm_gfx9"])
def test_saturated_batches_do_not_split(device_with, family):
    for n in (132, 304):
        device_with(n, family)
        assert split_k.choose_num_splits(n, 1, 1, 131072, CUDA) == 1  # one wave of programs already
        assert split_k.choose_num_splits(64, 8, 1, 32768, CUDA) == 1  # 512 programs
        assert split_k.choose_num_splits(1, 8, 4096, 4096, CUDA) == 1  # a long prefill: 64 query blocks x 8


def test_undersubscribed_long_contexts_split(device_with):
    device_with(132)
    assert split_k.choose_num_splits(1, 8, 1, 32768, CUDA) == 16  # 8 programs on 132 SMs
    assert split_k.choose_num_splits(4, 8, 1, 32768, CUDA) == 16  # 32 * 8 = 256 < 264 -> 16
    assert split_k.choose_num_splits(8, 8, 1, 32768, CUDA) == 8  # 64 * 4 < 264 <= 64 * 8
    assert split_k.choose_num_splits(16, 8, 1, 32768, CUDA) == 4  # 128 * 2 < 264 <= 128 * 4


def test_the_multiprocessor_count_changes_the_answer(device_with):
    """Same shapes, an H100's 132 SMs vs an MI300X's 304 CUs: the device is read, not assumed."""
    shapes = [(8, 8, 1, 32768), (16, 8, 1, 8192), (32, 8, 1, 8192), (2, 32, 1, 65536)]
    on_132, on_304 = [], []
    for n, out in ((132, on_132), (304, on_304)):
        device_with(n)
        out.extend(split_k.choose_num_splits(*s, CUDA) for s in shapes)
    assert on_132 != on_304
    assert on_132[0] == 8 and on_304[0] == 16
    assert on_132[2] == 1 and on_304[2] == 4  # 256 programs: saturated on 132, not on 304
    assert all(a <= b for a, b in zip(on_132, on_304))  # more multiprocessors never split less


def test_short_contexts_keep_enough_keys_per_split(device_with):
    device_with(304)
    c = split_k.constants_for(CUDA)
    assert split_k.choose_num_splits(1, 8, 1, c.min_keys_per_split - 1, CUDA) == 1
    assert split_k.choose_num_splits(1, 8, 1, 2 * c.min_keys_per_split, CUDA) == 2
    assert split_k.choose_num_splits(1, 8, 1, 5 * c.min_keys_per_split, CUDA) == 4
    assert split_k.choose_num_splits(1, 8, 1, 0, CUDA) == 1


def test_answers_are_splits_and_monotone_in_batch(device_with):
    device_with(304, "rocm_gfx9")
    for ctx in (1, 100, 1024, 8192, 131072):
        for sq in (1, 16, 300):
            prev = 16
            for batch in (1, 2, 4, 16, 64, 256, 1024):
                g = split_k.choose_num_splits(batch, 8, sq, ctx, CUDA)
                assert g in split_k.SPLITS and g <= prev
                prev = g


def test_multiprocessor_count_read_per_device(monkeypatch):
    seen = []

    def props(index):
        seen.append(index)
        return SimpleNamespace(multi_processor_count=100 + index)

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    split_k._clear()
    try:
        assert split_k.multiprocessors(torch.device("cuda", 1)) == 101
        assert split_k.multiprocessors(torch.device("cuda", 1)) == 101  # cached
        assert split_k.multiprocessors(torch.device("cuda", 3)) == 103
        assert seen == [1, 3]
    finally:
        split_k._clear()


def test_shipped_constants_load_and_say_they_are_not_fitted():
    table = split_k.load()
    assert {"default", "cuda", "rocm", "rocm_gfx9"} <= set(table)
    with open(split_k.PATH) as f:
        note = json.load(f)["note"]
    assert "NOT yet fitted" in note


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["families"].pop("default"), "default"),
    (lambda d: d["families"]["cuda"].update(target_waves=-1), "target_waves"),
    (lambda d: d["families"]["cuda"].update(min_keys_per_split=1.5), "min_keys_per_split"),
    (lambda d: d["families"]["cuda"].update(saturate_waves=True), "saturate_waves"),
    (lambda d: d["families"]["cuda"].update(typo=1), "keys"),
    (lambda d: d["families"]["cuda"].pop("q_block_rows"), "keys"),
    (lambda d: d["families"]["cuda"].update(saturate_waves=4.0, target_waves=2.0), "saturate_waves"),
    (lambda d: d.update(splits=[1, 2, 3]), "splits"),
    (lambda d: d.pop("families"), "families"),
])
def test_loader_rejects_bad_files(tmp_path, mutate, match):
    with open(split_k.PATH) as f:
        data = json.load(f)
    mutate(data)
    path = tmp_path / "split_k.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        split_k.load(str(path))


def test_model_on_plain_numbers():
    c = split_k.SplitConstants(saturate_waves=1.0, target_waves=2.0, min_keys_per_split=256, q_block_rows=64)
    assert split_k.splits_for(0, 4096, 132, c) == 1
    assert split_k.splits_for(132, 1 << 20, 132, c) == 1
    assert split_k.splits_for(131, 1 << 20, 132, c) == 4  # 131 * 2 < 264 <= 131 * 4
    assert split_k.splits_for(1, 1 << 20, 132, c) == 16  # nothing reaches 2 waves: the most splits
