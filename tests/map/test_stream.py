"""Streamed sliding-window inference over scenes (lsmap.map.stream)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from detect_fixtures import Band0Model, ConstantModel, member, smooth_scene, write_scene

from lsmap.core.bands import PROFILES
from lsmap.core.normalize import BandStats
from lsmap.data.scan import scan_scene
from lsmap.errors import BandMismatchError, CheckpointError, InputError, MissingInputError
from lsmap.io.cog import encode_mask, encode_probability, export_mask, export_probability
from lsmap.io.scene import scene_info
from lsmap.map.stream import PROB_NODATA, _pin, auto_batch_size, ensemble_moments, predict_scene

L4S = PROFILES["l4s14"]
KW = dict(window=64, overlap=16, device="cpu")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def scene(tmp_path, rng):
    data = smooth_scene(rng)
    return write_scene(tmp_path / "scene.tif", data), data


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_identity_model_is_reproduced_exactly_across_window_borders(tmp_path, scene, batch_size):
    """Blending (Hann ramps, positive floor) divides by the summed weights: a per-pixel model's
    output is its input everywhere, whatever the batches (batches of 5 cross window rows)."""
    path, data = scene
    info = scene_info(path, L4S)
    scan = scan_scene(info, L4S)
    predict_scene(info, [member(Band0Model())], tmp_path / "p.tif", stats=scan.stats, batch_size=batch_size, **KW)
    expected = sigmoid((data[0].astype(np.float64) - scan.stats.mean[0]) / scan.stats.std[0])
    np.testing.assert_allclose(read(tmp_path / "p.tif"), expected, atol=2e-6)


def test_constant_model_gives_constant_probability(tmp_path, scene):
    path, _ = scene
    predict_scene(path, [member(ConstantModel(0.7))], tmp_path / "p.tif", stats=None, tta=True, **KW)
    p = read(tmp_path / "p.tif")
    assert p.shape == (260, 300)
    np.testing.assert_allclose(p, sigmoid(0.7), atol=1e-6)


def test_streamed_inference_limits_malloc_arenas_before_its_threads_start(tmp_path, scene, monkeypatch):
    """The reader and the model workers share the arenas (lsmap.io.malloc.limit_malloc_arenas): asked
    for before any of them exists."""
    import threading

    import lsmap.map.stream as stream

    seen = []
    monkeypatch.setattr(stream, "limit_malloc_arenas",
                        lambda: seen.append({t.name for t in threading.enumerate()}) or True)
    predict_scene(scene[0], [member(ConstantModel(0.7))], tmp_path / "p.tif", stats=None, **KW)
    assert len(seen) == 1 and not any(n.startswith(("lsmap-reader", "lsmap-model")) for n in seen[0])


def test_the_models_run_while_freed_memory_is_reused_and_it_ends_with_the_run(tmp_path, scene, monkeypatch):
    """Every batch's forward runs inside lsmap.io.malloc.reuse_freed_memory (its activations' memory kept for
    the next batch), which the run leaves, also when a model fails."""
    import lsmap.io.malloc as malloc

    monkeypatch.setattr(malloc, "_holders", 0)
    held = []

    class Recording(ConstantModel):
        def forward(self, x):
            held.append(malloc._holders)
            return super().forward(x)

    predict_scene(scene[0], [member(Recording(0.7))], tmp_path / "p.tif", stats=None, **KW)
    assert held and all(h == 1 for h in held) and malloc._holders == 0

    class Failing(ConstantModel):
        def forward(self, x):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        predict_scene(scene[0], [member(Failing(0.7))], tmp_path / "q.tif", stats=None, **KW)
    assert malloc._holders == 0


def test_ensemble_is_mean_of_members_and_uncertainty_their_variance(tmp_path, scene):
    path, _ = scene
    stats = BandStats((1.0,) * 14, (0.5,) * 14, 1)
    a, b = member(Band0Model()), member(ConstantModel(-0.4))
    predict_scene(path, [a], tmp_path / "a.tif", stats=stats, **KW)
    predict_scene(path, [b], tmp_path / "b.tif", stats=stats, **KW)
    r = predict_scene(path, [a, b], tmp_path / "ab.tif", stats=stats, uncertainty_out=tmp_path / "u.tif", **KW)
    pa, pb = read(tmp_path / "a.tif"), read(tmp_path / "b.tif")
    np.testing.assert_allclose(read(tmp_path / "ab.tif"), (pa + pb) / 2, atol=2e-6)
    assert r.uncertainty_method == "variance" and r.passes == 2
    np.testing.assert_allclose(read(tmp_path / "u.tif"), ((pa - pb) / 2) ** 2, atol=2e-6)


def test_single_pass_uncertainty_is_bernoulli_variance(tmp_path, scene):
    path, _ = scene
    r = predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=None,
                      uncertainty_out=tmp_path / "u.tif", **KW)
    p = read(tmp_path / "p.tif")
    assert r.uncertainty_method == "bernoulli"
    np.testing.assert_allclose(read(tmp_path / "u.tif"), p * (1 - p), atol=2e-6)


def test_norm_model_uses_card_statistics_and_differs_from_scene_norm(tmp_path, rng):
    data = smooth_scene(rng)
    data[0] += 0.8  # the scene is brighter in band 0 than the training data
    path = write_scene(tmp_path / "s.tif", data)
    m = member(Band0Model(), mean=1.0, std=0.5)
    scan = scan_scene(scene_info(path, L4S), L4S)
    predict_scene(path, [m], tmp_path / "model.tif", stats=None, **KW)
    predict_scene(path, [m], tmp_path / "scene.tif", stats=scan.stats, **KW)
    by_model, by_scene = read(tmp_path / "model.tif"), read(tmp_path / "scene.tif")
    np.testing.assert_allclose(by_model, sigmoid((data[0] - 1.0) / 0.5), atol=2e-6)
    # the scene's own statistics remove the brightness shift: centred around 0.5 instead of ~0.83
    assert abs(np.median(by_scene) - 0.5) < 0.05
    assert np.median(by_model) > 0.75


def test_nodata_pixels_are_nodata_and_filled_with_band_mean(tmp_path, rng):
    data = smooth_scene(rng)
    data[3, 100:140, 50:90] = -9999.0  # nodata in one band only: the pixel is invalid
    data[0, 10:20, 10:20] = np.nan  # non-finite values are invalid too
    path = write_scene(tmp_path / "s.tif", data, nodata=-9999.0)
    info = scene_info(path, L4S)
    scan = scan_scene(info, L4S)
    assert scan.valid_pixels == 260 * 300 - 40 * 40 - 100
    predict_scene(info, [member(ConstantModel(1.0))], tmp_path / "p.tif", stats=scan.stats, **KW)
    p = read(tmp_path / "p.tif")
    assert (p[100:140, 50:90] == PROB_NODATA).all() and (p[10:20, 10:20] == PROB_NODATA).all()
    assert np.isclose(p[p != PROB_NODATA], sigmoid(1.0), atol=1e-6).all()
    # statistics ignore nodata: the mean of band 3 is that of the valid pixels
    valid = np.ones((260, 300), bool)
    valid[100:140, 50:90] = valid[10:20, 10:20] = False
    assert scan.stats.mean[3] == pytest.approx(data[3][valid].mean(), rel=1e-5)


def test_nodata_fill_is_the_band_mean(tmp_path, rng):
    """A model that averages band 0 over the window sees the band mean (0 after normalisation)
    in nodata pixels, so a hole in the data does not change its neighbours' output."""

    class WindowMean(torch.nn.Module):
        def forward(self, x):
            m = x[:, :1].mean(dim=(2, 3), keepdim=True).expand_as(x[:, :1])
            return torch.cat([torch.zeros_like(m), m], 1)

    data = np.ones((14, 64, 64), np.float32)
    data[:, 20:30, 20:30] = -9999.0
    path = write_scene(tmp_path / "s.tif", data, nodata=-9999.0)
    stats = BandStats((1.0,) * 14, (0.5,) * 14, 1)
    predict_scene(path, [member(WindowMean())], tmp_path / "p.tif", stats=stats, window=64, overlap=0,
                  device="cpu", amp=False)
    p = read(tmp_path / "p.tif")
    assert np.allclose(p[p != PROB_NODATA], 0.5, atol=1e-6)


def test_raw_scene_is_detected_and_scaled(tmp_path, scene):
    path, data = scene
    raw = data * np.asarray(L4S.divisors, np.float32)[:, None, None]
    raw_path = write_scene(tmp_path / "raw.tif", raw)
    scan_raw = scan_scene(scene_info(raw_path, L4S), L4S)
    scan = scan_scene(scene_info(path, L4S), L4S)
    assert scan_raw.raw and not scan.raw
    np.testing.assert_allclose(scan_raw.stats.mean, scan.stats.mean, rtol=1e-5)
    m = [member(Band0Model())]
    predict_scene(path, m, tmp_path / "a.tif", stats=scan.stats, **KW)
    predict_scene(raw_path, m, tmp_path / "b.tif", stats=scan_raw.stats, raw=True, **KW)
    np.testing.assert_allclose(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"), atol=1e-5)
    assert not scan_scene(scene_info(raw_path, L4S), L4S, "l4s").raw


def test_raw_scene_without_declared_nodata_uses_profile_nodata(tmp_path, rng):
    data = smooth_scene(rng, bands=4) * np.asarray(PROFILES["rgbn"].divisors, np.float32)[:, None, None]
    data[:, :30, :] = 0  # outside the swath: every spectral band 0
    path = write_scene(tmp_path / "s.tif", data)  # no nodata declared
    scan = scan_scene(scene_info(path, "rgbn"), PROFILES["rgbn"])
    assert scan.raw and scan.valid_pixels == (260 - 30) * 300


def test_stats_subsampling_of_large_scenes(tmp_path, scene):
    path, data = scene
    info = scene_info(path, L4S)
    full = scan_scene(info, L4S, block=64)
    part = scan_scene(info, L4S, block=64, max_pixels=64 * 64 * 5)
    assert not full.sampled and part.sampled and part.valid_pixels < full.valid_pixels
    np.testing.assert_allclose(full.stats.mean, data.reshape(14, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(part.stats.mean, full.stats.mean, rtol=0.2)


def test_scene_without_valid_pixel_is_an_error(tmp_path):
    path = write_scene(tmp_path / "s.tif", np.full((14, 40, 40), -9999.0, np.float32), nodata=-9999.0)
    with pytest.raises(InputError, match="no valid pixel"):
        scan_scene(scene_info(path, L4S), L4S)


def test_bad_scene_inputs(tmp_path, scene):
    path, _ = scene
    with pytest.raises(BandMismatchError, match="expects 4 bands"):
        scene_info(path, "rgbn")
    five = tmp_path / "five.tif"
    write_scene(five, np.ones((5, 32, 32), np.float32))
    with pytest.raises(InputError, match="5 bands without band names"):  # rgbn cannot be told in 5 nameless bands
        predict_scene(five, [member(Band0Model(), "rgbn")], tmp_path / "p.tif", stats=None, **KW)
    with pytest.raises(MissingInputError):
        scene_info(tmp_path / "nope.tif", L4S)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot read"):
        scene_info(junk, L4S)
    with pytest.raises(CheckpointError, match="no model"):
        predict_scene(path, [], tmp_path / "p.tif", stats=None, **KW)
    with pytest.raises(InputError, match="overlap"):
        predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=None, window=64, overlap=64, device="cpu")
    with pytest.raises(InputError, match="statistics have 4 bands"):
        predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=BandStats((1.0,) * 4, (1.0,) * 4, 1), **KW)


def test_reader_errors_reach_the_caller(tmp_path, scene, monkeypatch):
    import lsmap.map.stream as infer

    path, _ = scene

    def broken(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(infer, "read_scene_window", broken)
    with pytest.raises(OSError, match="disk gone"):
        predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=None, **KW)


def test_pinned_non_blocking_path_runs_on_cpu(tmp_path, scene):
    """The CUDA transfer path (pinned host memory, non-blocking copies) gives the same result; on a
    machine without a GPU pinning falls back to ordinary memory."""
    path, _ = scene
    m = [member(Band0Model())]
    predict_scene(path, m, tmp_path / "a.tif", stats=None, pin_memory=False, **KW)
    predict_scene(path, m, tmp_path / "b.tif", stats=None, pin_memory=True, **KW)
    np.testing.assert_array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert torch.equal(_pin(torch.from_numpy(x)).to("cpu", non_blocking=True), torch.from_numpy(x))


def test_tta_and_moments_of_a_flip_equivariant_model():
    x = torch.rand(2, 14, 32, 32)
    stats = BandStats((0.5,) * 14, (0.25,) * 14, 1)
    m = [member(Band0Model())]
    mean, var = ensemble_moments(m, x, stats, tta=True, want_var=True, amp=False)
    plain, none = ensemble_moments(m, x, stats, tta=False, want_var=False, amp=False)
    assert none is None
    torch.testing.assert_close(mean, plain, atol=1e-6, rtol=0)
    assert float(var.max()) < 1e-10


def test_auto_batch_size_shrinks_with_window_and_scale():
    cpu = torch.device("cpu")
    assert auto_batch_size(cpu, 128) == 16
    assert auto_batch_size(cpu, 256) == 4
    assert auto_batch_size(cpu, 128, scale=4) == 1


def test_exported_probability_and_mask_cogs(tmp_path, scene):
    path, _ = scene
    predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=None, **KW)
    p = read(tmp_path / "p.tif")
    p[:5, :5] = PROB_NODATA
    with rasterio.open(tmp_path / "p.tif", "r+") as dst:
        dst.write(p[None])
    export_probability(tmp_path / "p.tif", tmp_path / "prob.tif")
    export_mask(tmp_path / "p.tif", tmp_path / "mask.tif", 0.5)
    with rasterio.open(tmp_path / "prob.tif") as src:
        q = src.read(1)
        assert src.nodata == 255 and src.scales[0] == pytest.approx(1 / 254) and src.crs == "EPSG:32645"
        assert src.profile["tiled"] and src.driver == "GTiff"
    np.testing.assert_array_equal(q, encode_probability(p))
    assert (q[:5, :5] == 255).all() and q.max() <= 255
    assert np.abs(q[5:, 5:] / 254 - p[5:, 5:]).max() <= 0.5 / 254 + 1e-7
    np.testing.assert_array_equal(read(tmp_path / "mask.tif"), encode_mask(p, 0.5))
    with pytest.raises(FileExistsError):
        export_mask(tmp_path / "p.tif", tmp_path / "mask.tif", 0.5)


def test_tta_scene_prediction_of_a_per_pixel_model_equals_plain(tmp_path, scene):
    """Flips are undone on the probabilities: a per-pixel model gives the same map with --tta."""
    path, _ = scene
    m = [member(Band0Model())]
    predict_scene(path, m, tmp_path / "a.tif", stats=None, **KW)
    predict_scene(path, m, tmp_path / "b.tif", stats=None, tta=True, **KW)
    np.testing.assert_allclose(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"), atol=1e-6)


def test_dataset_mask_marks_nodata(tmp_path, rng):
    """A GDAL dataset mask (internal .msk / alpha) is honoured like a nodata value."""
    data = smooth_scene(rng, h=80, w=90)
    path = write_scene(tmp_path / "s.tif", data)
    mask = np.full((80, 90), 255, np.uint8)
    mask[:, :30] = 0
    with rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    info = scene_info(path, L4S)
    assert info.declares_nodata
    scan = scan_scene(info, L4S)
    assert scan.valid_pixels == 80 * 60
    predict_scene(info, [member(ConstantModel(0.0))], tmp_path / "p.tif", stats=scan.stats, **KW)
    p = read(tmp_path / "p.tif")
    assert (p[:, :30] == PROB_NODATA).all() and np.allclose(p[:, 30:], 0.5)


def test_reader_thread_reads_what_the_inline_reader_reads(tmp_path, rng, monkeypatch):
    """Prefetching batches in a reader thread (the GPU default) changes nothing in the output, with
    nodata to fill and raw scaling; and the thread's errors reach the caller."""
    import lsmap.map.stream as infer

    data = smooth_scene(rng, h=150, w=170) * np.asarray(L4S.divisors, np.float32)[:, None, None]
    data[:, 20:50, 30:80] = 0  # outside the swath (no nodata declared): filled, written as nodata
    path = write_scene(tmp_path / "s.tif", data)
    stats = BandStats((1.0,) * 14, (0.5,) * 14, 1)
    for prefetch in (0, 2):
        predict_scene(path, [member(Band0Model())], tmp_path / f"p{prefetch}.tif", stats=stats, raw=True,
                      batch_size=3, prefetch=prefetch, **KW)
    p0 = read(tmp_path / "p0.tif")
    np.testing.assert_array_equal(p0, read(tmp_path / "p2.tif"))
    assert (p0[20:50, 30:80] == PROB_NODATA).all() and (p0[50:] >= 0).all()

    original = infer.read_scene_window
    calls = []

    def broken(*a, **k):
        calls.append(1)
        if len(calls) > 2:
            raise OSError("disk gone")
        return original(*a, **k)

    monkeypatch.setattr(infer, "read_scene_window", broken)
    with pytest.raises(OSError, match="disk gone"):
        predict_scene(path, [member(Band0Model())], tmp_path / "p.tif", stats=stats, prefetch=2, **KW)


def test_model_workers_give_the_single_worker_output_and_restore_torch_threads(tmp_path, scene):
    """Several CPU model workers (whole batches on a share of the cores, results blended in window
    order) write what one worker writes, with the reader thread or inline reads, and leave torch's
    thread count as they found it."""
    from lsmap.learn.models import build_model

    path, _ = scene
    torch.manual_seed(0)
    m = [member(build_model("tiny-unet", 14))]
    before = torch.get_num_threads()
    runs = {}
    for workers, prefetch in ((1, 0), (3, None), (2, 0)):
        out = tmp_path / f"w{workers}.tif"
        res = predict_scene(path, m, out, stats=None, batch_size=2, workers=workers, prefetch=prefetch,
                            amp=False, **KW)
        assert res.timings["workers"] == workers and torch.get_num_threads() == before
        runs[workers] = read(out)
    np.testing.assert_allclose(runs[3], runs[1], atol=1e-6)
    np.testing.assert_allclose(runs[2], runs[1], atol=1e-6)
    with pytest.raises(InputError, match="workers must be positive"):
        predict_scene(path, m, tmp_path / "bad.tif", stats=None, workers=0, **KW)


def test_model_threads_share_the_cores(monkeypatch):
    from lsmap.map.stream import MAX_CPU_WORKERS, model_threads

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert model_threads(cpu) == (2, 1) and model_threads(cpu, 1) == (1, 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert model_threads(cpu) == (MAX_CPU_WORKERS, 16 // MAX_CPU_WORKERS)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert model_threads(cpu) == (1, 1)
    assert model_threads(torch.device("cuda")) == (1, 1)


def test_ordered_map_keeps_order_bounds_lookahead_and_propagates_errors():
    import threading
    import time

    from lsmap.map.stream import ordered_map

    taken = []

    def items():
        for i in range(20):
            taken.append(i)
            yield i

    def slow_square(i):
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i, threading.current_thread().name

    seen = []
    for item, (sq, thread) in ordered_map(slow_square, items(), 3):
        assert len(taken) <= item + 1 + 3  # never more than `workers` items taken ahead
        seen.append((item, sq))
        assert thread.startswith("lsmap-model")
    assert seen == [(i, i * i) for i in range(20)]

    def fails(i):
        if i == 5:
            raise ValueError("bad batch")
        return i

    with pytest.raises(ValueError, match="bad batch"):
        list(ordered_map(fails, iter(range(10)), 2))
    assert [r for _, r in ordered_map(lambda i: i + 1, iter(range(4)), 1)] == [1, 2, 3, 4]


def test_ordered_map_runs_each_worker_inside_one_context():
    import contextlib
    import threading

    from lsmap.learn.ensemble import inference_context
    from lsmap.map.stream import ordered_map

    entered, inside = [], threading.local()

    @contextlib.contextmanager
    def ctx():
        entered.append(threading.current_thread().name)
        inside.flag = True
        yield
        inside.flag = False

    out = [r for _, r in ordered_map(lambda i: (i, getattr(inside, "flag", False)), iter(range(12)), 3, ctx)]
    assert out == [(i, True) for i in range(12)] and len(entered) == 3  # once per thread, not per item
    from lsmap.learn.device import amp_dtype

    cpu = torch.device("cpu")
    with inference_context(cpu):
        assert not torch.is_grad_enabled()
        assert torch.is_autocast_enabled("cpu") == (amp_dtype(cpu) is not None)
    with inference_context(cpu, amp=False):
        assert not torch.is_autocast_enabled("cpu")
    assert torch.is_grad_enabled()


def test_ordered_map_reports_a_worker_that_cannot_start():
    """A worker whose context fails raises to the consumer instead of leaving it waiting forever."""
    import contextlib

    from lsmap.map.stream import ordered_map

    @contextlib.contextmanager
    def broken():
        raise RuntimeError("no such device")
        yield

    with pytest.raises(RuntimeError, match="no such device"):
        list(ordered_map(lambda i: i, iter(range(5)), 2, broken))



def test_auto_window_from_the_models():
    """Fully convolutional members get 512 px windows; any attention or unknown member keeps 128."""
    from types import SimpleNamespace

    from lsmap.map.stream import auto_window

    def member(name):
        return SimpleNamespace(card=SimpleNamespace(model=name))

    assert auto_window([member("tiny-unet"), member("unet-resnet18")])[0] == 512
    assert auto_window([member("deeplabv3plus-resnet34")])[0] == 512
    w, why = auto_window([member("unet-resnet18"), member("segformer-mit_b0")])
    assert w == 128 and "segformer-mit_b0" in why
    assert auto_window([member("someone-elses-net")])[0] == 128


def test_auto_window_covers_the_scene_with_the_least_work():
    """For a scene's size the large window is the one of LARGE_WINDOWS whose grid computes the fewest
    pixels (ties: the smaller); scale-promoted models get inputs of at most 640 px on a CPU and windows of
    at most 512 px on a GPU; the reason says so."""
    from types import SimpleNamespace

    from lsmap.core.constants import LARGE_WINDOWS
    from lsmap.core.windows import window_grid
    from lsmap.map.stream import auto_window, computed_pixels

    def member(scale=1.0):
        return SimpleNamespace(card=SimpleNamespace(model="tiny-unet", scale=scale))

    assert auto_window([member()], 512, 512)[0] == 512  # one window, no overlap work
    w, why = auto_window([member()], 4096, 4096)
    assert w == 544 and "544 px" in why and "1.13x" in why
    assert computed_pixels(4096, 4096, 544, 32) < computed_pixels(4096, 4096, 512, 32)
    for h, wd in [(2048, 2048), (10980, 10980), (700, 3000), (100, 90)]:
        best = auto_window([member()], h, wd)[0]
        assert best in LARGE_WINDOWS
        assert all(computed_pixels(h, wd, best, 32) <= computed_pixels(h, wd, c, 32) for c in LARGE_WINDOWS)
        grid = window_grid(h, wd, best, 32)  # the count agrees with the grid detect runs
        padded = [-(-min(best, n) // 32) * 32 for n in (h, wd)]
        assert computed_pixels(h, wd, best, 32) == len(grid) * padded[0] * padded[1]
    # scale-promoted models on a CPU: the enlarged window (the model's input) at most 640 px, least work
    for scale, top in [(2.5, 256), (4.0, 160)]:
        for h, wd in [(4096, 4096), (2048, 2048), (10980, 10980), (700, 3000)]:
            w, why = auto_window([member(scale)], h, wd, 32, torch.device("cpu"))
            sizes = range(64, top + 1, 32)
            assert w * scale <= 640 and w in sizes and f"x{scale:g} on a CPU" in why
            assert all(computed_pixels(h, wd, w, 32) <= computed_pixels(h, wd, c, 32) for c in sizes)
        assert auto_window([member(scale)])[0] == top  # no scene size: the largest
    gpu = SimpleNamespace(type="cuda")  # on a GPU, memory is the batch's: at most 512 px, as before
    assert auto_window([member(2.5)], 4096, 4096, 32, gpu)[0] == 448
    assert auto_window([member(2.5)], None, None, 32, gpu)[0] == 512
    assert auto_window([member()], 4096, 4096, overlap=700)[0] == 512  # no candidate: the check names the overlap


@pytest.mark.parametrize("uncertainty", [False, True])
def test_column_panels_give_the_one_panel_output(tmp_path, rng, monkeypatch, uncertainty):
    """A scene wider than a panel is streamed panel by panel (memory by the panel's width): the
    probabilities (and variance) equal one full-width pass up to float rounding, nodata the same."""
    import lsmap.map.stream as stream
    from lsmap.map.stream import column_panels

    data = smooth_scene(rng)
    data[:, 100:120, 230:260] = -9999.0  # nodata across the panels' shared columns
    path = write_scene(tmp_path / "s.tif", data, nodata=-9999.0)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(14, 2, 5, padding=2)  # spatial context: window borders matter
    stats = BandStats((1.0,) * 14, (0.4,) * 14, 1)
    out = {}
    for name, panel in (("one", 100000), ("many", 64)):
        monkeypatch.setattr(stream, "PANEL_WIDTH", panel)
        unc = tmp_path / f"u_{name}.tif" if uncertainty else None
        predict_scene(path, [member(conv)], tmp_path / f"p_{name}.tif", stats=stats, tta=uncertainty,
                      uncertainty_out=unc, **KW)
        out[name] = read(tmp_path / f"p_{name}.tif"), read(unc) if unc else None
    from lsmap.core.windows import window_grid

    assert len(column_panels(window_grid(260, 300, 64, 16))) == 2  # panels of 4 windows: 0..192 and 236
    (p1, u1), (p2, u2) = out["one"], out["many"]
    assert ((p1 == PROB_NODATA) == (p2 == PROB_NODATA)).all() and (p1 == PROB_NODATA).any()
    np.testing.assert_allclose(p2, p1, atol=1e-6)
    if uncertainty:
        np.testing.assert_allclose(u2, u1, atol=1e-6)


def test_without_rasters_the_sink_gets_what_they_would_hold(tmp_path, rng):
    """``prob_out=None``: nothing is written; the sink gets the same pieces (probability and
    uncertainty) as when the rasters are written, and the pixels with a value are counted. With neither
    a raster nor a sink, the call is refused."""
    data = smooth_scene(rng)
    data[:, 20:50, 30:90] = -9999.0  # nodata: never counted
    path = write_scene(tmp_path / "scene.tif", data, nodata=-9999.0)
    models = [member(ConstantModel(0.3)), member(ConstantModel(0.8))]
    written, streamed = [], []
    kept = predict_scene(path, models, tmp_path / "p.tif", stats=None, uncertainty_out=tmp_path / "u.tif",
                         sink=lambda *piece: written.append(piece), **KW)
    only = predict_scene(path, models, None, stats=None, uncertainty=True, sink=lambda *piece: streamed.append(piece),
                         **KW)
    assert only.prob is None and only.uncertainty is None and only.uncertainty_method == "variance"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "scene.tif", "u.tif"]
    assert len(streamed) == len(written) > 1
    for (r0, c0, p0, u0), (r1, c1, p1, u1) in zip(written, streamed, strict=True):
        assert (r0, c0) == (r1, c1)
        np.testing.assert_array_equal(p0, p1)
        np.testing.assert_array_equal(u0, u1)
    valid = int((read(tmp_path / "p.tif") != PROB_NODATA).sum())
    assert kept.valid_pixels == only.valid_pixels == valid == data.shape[1] * data.shape[2] - 30 * 60
    with pytest.raises(InputError, match="nowhere"):
        predict_scene(path, models, None, stats=None, **KW)
