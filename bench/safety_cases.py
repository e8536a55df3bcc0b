"""Run the failure cases of issue 14 against the real command line and print each outcome.

    $ python bench/safety_cases.py            # as root, the full/read-only disk cases run on a tmpfs

Each case prints: exit status, seconds, and the first line of what lsmap printed (a traceback is
reported as such). Generated data only, in a temporary folder (the Wayanad case reads
../shared/data when present). Bounded: every command has a 300 s timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._rasters import write_tif  # noqa: E402
from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene  # noqa: E402
from tests.patchgen import make_patches  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def lsmap(*args: str, cwd: Path | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "lsmap", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    return res.returncode, time.perf_counter() - t0, res.stdout + res.stderr


def show(case: str, rc: int, secs: float, out: str) -> None:
    text = out.strip().splitlines()
    errors = [line for line in text if line.startswith("Error:")]
    first = "TRACEBACK: " + text[-1] if "Traceback" in out else (errors or text or [""])[0]
    print(f"{case:58s} exit {rc}  {secs:5.1f} s  {first[:230]}")


def run(case: str, *args, cwd=None) -> str:
    rc, secs, out = lsmap(*args, cwd=cwd)
    show(case, rc, secs, out)
    return out


def rewrite_masks(folder: Path, fn) -> None:
    import h5py

    for p in sorted((folder / "mask").glob("*.h5")):
        with h5py.File(p, "r") as f:
            m = f["mask"][()]
        with h5py.File(p, "w") as f:
            f.create_dataset("mask", data=fn(m))


def mount(path: Path, *opts: str) -> bool:
    path.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=2m", *opts)), "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        try:
            cases(Path(d), rng)
        finally:
            for m in ("full", "ro"):
                if (Path(d) / m).is_mount():
                    subprocess.run(["umount", "-l", str(Path(d) / m)], check=False)


def cases(t: Path, rng) -> None:
    scene = write_scene(t / "scene.tif", smooth_scene(rng, h=128, w=128))
    model = tiny_checkpoint(t / "m")
    s2 = t / "s2"
    s2.mkdir()
    for n in ("B02", "B03", "B04", "B08"):
        write_tif(s2 / f"{n}.tif", rng.integers(100, 30000, (512, 512)).astype(np.uint16), nodata=0)
    patches = make_patches(t / "p", 4, size=32)

    print("1. --overwrite and the user's files")
    w = t / "w"
    w.mkdir()
    (w / "thesis.txt").write_text("mine\n")
    run("tile -o . --overwrite (cwd holds thesis.txt)", "tile", scene, "-o", ".", "--overwrite", cwd=w)
    print(f"{'':58s} thesis.txt still there: {(w / 'thesis.txt').exists()}")

    print("2./3. full and read-only disks")
    if os.geteuid() == 0 and mount(t / "full"):
        run("stack on a full 2 MB tmpfs", "stack", s2, "--bands", "rgbn", "-o", t / "full" / "s.tif")
        print(f"{'':58s} left on the tmpfs: {sorted(p.name for p in (t / 'full').iterdir())}")
        mid = write_scene(t / "mid.tif", smooth_scene(rng, h=256, w=256))
        run("tile (3.7 MB of patches) on a 2 MB tmpfs", "tile", mid, "-o", t / "full" / "p", "--size", "32")
        print(f"{'':58s} left on the tmpfs: {sorted(p.name for p in (t / 'full').iterdir())}")
        (t / "full" / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 8192))
        run("stats on a full tmpfs", "stats", scene, "-o", t / "full" / "s.json")
        run("detect on a full tmpfs", "detect", scene, "-o", t / "full" / "o.gpkg", "--model", model, "--device",
            "cpu")
        run("train on a full tmpfs", "train", "--train", patches, "--val", patches, "--model", "tiny-unet",
            "--scale", "1", "--steps", "100000", "--device", "cpu", "-o", t / "full" / "run")
        subprocess.run(["umount", "-l", str(t / "full")], check=False)
    else:
        print("   (skipped: needs root and tmpfs)")
    if os.geteuid() == 0 and mount(t / "ro", "ro"):
        ro = t / "ro"
        run("stack into a read-only folder", "stack", s2, "--bands", "rgbn", "-o", ro / "s.tif")
        run("tile into a read-only folder", "tile", scene, "-o", ro / "p")
        run("detect into a read-only folder", "detect", scene, "-o", ro / "o.gpkg", "--model", model,
            "--device", "cpu")
        run("train into a read-only folder (100000 steps)", "train", "--train", patches, "--val", patches,
            "--model", "tiny-unet", "--scale", "1", "--steps", "100000", "--device", "cpu", "-o", ro / "run")
        subprocess.run(["umount", "-l", str(ro)], check=False)
    (t / "afile").write_text("x")
    run("stats with a parent that is a file", "stats", scene, "-o", t / "afile" / "s.json")

    print("4. labels")
    p255 = make_patches(t / "p255", 4, size=32)
    rewrite_masks(p255, lambda m: (m * 255).astype(np.uint8))
    run("train on 0/255 masks", "train", "--train", p255, "--val", p255, "--model", "tiny-unet", "--scale", "1",
        "--steps", "2", "--device", "cpu", "-o", t / "r255")
    pf = make_patches(t / "pf", 4, size=32)
    rewrite_masks(pf, lambda m: m.astype(np.float32) * 0.9)
    run("evaluate on float {0, 0.9} masks", "evaluate", model, "--data", pf, "--device", "cpu")
    p0 = make_patches(t / "p0", 4, size=32)
    rewrite_masks(p0, lambda m: np.zeros_like(m))
    run("evaluate on masks without landslides", "evaluate", model, "--data", p0, "--device", "cpu")

    print("5. wrong results with exit 0")
    run("detect --threshold nan", "detect", scene, "-o", t / "a.gpkg", "--model", model, "--threshold", "nan")
    run("detect --min-area nan", "detect", scene, "-o", t / "a.gpkg", "--model", model, "--min-area", "nan")
    (t / "std0.json").write_text(json.dumps({"mean": [1.0] * 14, "std": [0.0] + [1.0] * 13, "count": 1}))
    run("detect --stats with std 0", "detect", scene, "-o", t / "a.gpkg", "--model", model, "--stats",
        t / "std0.json")
    card = json.loads((t / "m.json").read_text())
    (t / "thr.json").write_text(json.dumps({**card, "threshold": 1.5}))
    (t / "thr.safetensors").write_bytes((t / "m.safetensors").read_bytes())
    run("detect with card threshold 1.5", "detect", scene, "-o", t / "a.gpkg", "--model", t / "thr")
    nod = np.ones((14, 20, 20), np.float32)
    nod[:, :10] = -9999
    write_scene(t / "nod.tif", nod, nodata=-9999.0)
    run("stats on a scene with declared -9999 nodata", "stats", t / "nod.tif", "-o", t / "nod.json")
    print(f"{'':58s} mean of band 1: {json.loads((t / 'nod.json').read_text())['mean'][0]}")
    off = t / "off"
    off.mkdir()
    for n in ("B02", "B03", "B04", "B08"):
        write_tif(off / f"{n}.tif", rng.integers(100, 3000, (64, 64)).astype(np.uint16), nodata=0,
                  origin=(900000.0, 3690000.0) if n == "B03" else (400000.0, 3690000.0))
    run("stack with B03 off the footprint", "stack", off, "--bands", "rgbn", "-o", t / "off.tif")
    import rasterio

    with rasterio.open(scene, "r+") as dst:
        names = ["B2", "B1", *[f"B{i}" for i in range(3, 10)], "B10", "B11", "B12", "slope", "DEM"]
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
    run("detect a scene whose descriptions swap B1/B2", "detect", scene, "-o", t / "a.gpkg", "--model", model)
    with rasterio.open(scene, "r+") as dst:
        for i in range(1, 15):
            dst.set_band_description(i, "")
    way = ROOT.parent / "shared" / "data" / "s2" / "kerala" / "wayanad_2024_a"
    if way.exists():
        out = run("stack rgbn of real Wayanad L2A bands (block 1024)", "stack",
                  *[way / f"{b}.tif" for b in ("B02", "B03", "B04", "B08")], "--bands", "rgbn", "-o",
                  t / "way.tif")
        del out

    print("6. sizes")
    run("tile --size 100000", "tile", scene, "-o", t / "big", "--size", "100000")
    run("detect --window 100000 (128 px scene)", "detect", scene, "-o", t / "w.gpkg", "--model", model,
        "--window", "100000", "--device", "cpu")
    run("train --batch-size 100000 on 4 patches", "train", "--train", patches, "--val", patches, "--model",
        "tiny-unet", "--batch-size", "100000", "--device", "cpu", "-o", t / "rb")
    (t / "sc.json").write_text(json.dumps({**card, "scale": 1000}))
    (t / "sc.safetensors").write_bytes((t / "m.safetensors").read_bytes())
    run("detect with card scale 1000", "detect", scene, "-o", t / "sc.gpkg", "--model", t / "sc")

    print("7. cards")
    from lsmap.core.bands import get_profile

    older = get_profile(",".join(card["bands"])).to_dict()  # the band-profile object of cards before band names
    for name, edit in (("JSON list", [card]), ("string threshold", {**card, "threshold": "0.5"}),
                       ("scale 0", {**card, "scale": 0}),
                       ("unknown band", {**card, "bands": ["B99", *card["bands"][1:]]}),
                       ("a band twice", {**card, "bands": [card["bands"][1], *card["bands"][1:]]}),
                       ("zero divisors (older card)", {**card, "bands": {**older, "divisors": [0] * len(older["bands"])}}),
                       ("unknown band (older card)", {**card, "bands": {**older, "bands": ["B99"] * len(older["bands"])}})):
        (t / "c.json").write_text(json.dumps(edit))
        (t / "c.safetensors").write_bytes((t / "m.safetensors").read_bytes())
        run(f"info on a card with {name}", "info", t / "c")

    print("8./9. concurrency and leftovers")
    big = write_scene(t / "big.tif", smooth_scene(rng, h=1024, w=1024))
    first = lsmap("detect", big, "-o", t / "same.gpkg", "--model", model, "--device", "cpu", wait=False)
    time.sleep(4)
    run("second detect on the same output", "detect", scene, "-o", t / "same.gpkg", "--model", model)
    print(f"{'':58s} first run: exit {first.wait(timeout=300)}")
    stale = t / f".same.gpkg.lsmap-{socket.gethostname().replace('-', '_')}-4999999-abcd.tmp"
    stale.mkdir()
    run("detect --overwrite with a dead run's temporary", "detect", scene, "-o", t / "same.gpkg", "--model", model,
        "--overwrite")
    print(f"{'':58s} dead run's temporary removed: {not stale.exists()}")

    print("10./12. API and messages")
    code = ("import lsmap,sys; g=lsmap.detect(sys.argv[1], sys.argv[2], device='cpu'); "
            "print(len(g), 'polygons with model', g.attrs['lsmap']['models'])")
    res = subprocess.run([sys.executable, "-c", code, str(scene), str(model)], env=ENV, capture_output=True,
                         text=True)
    show("lsmap.detect(scene, 'm.safetensors')", res.returncode, 0, res.stdout + res.stderr)
    code = "import lsmap,sys; lsmap.detect(sys.argv[1], sys.argv[2], threshold=2.0)"
    res = subprocess.run([sys.executable, "-c", code, str(scene), str(model)], env=ENV, capture_output=True,
                         text=True)
    show("lsmap.detect(..., threshold=2.0)", res.returncode, 0, res.stdout + res.stderr)
    import torch

    torch.save({"w": torch.zeros(1)}, t / "evil.pth")
    run("detect --model evil.pth", "detect", scene, "-o", t / "evil.gpkg", "--model", t / "evil.pth")
    part = t / "part"
    part.mkdir()
    write_tif(part / "B02.tif", np.ones((8, 8), np.uint16))
    run("stack with B03, B04, B08 missing", "stack", part, "--bands", "rgbn", "-o", t / "x.tif")

    print("11. odd services")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)

    def garbage() -> None:
        for _ in range(2):
            srv.settimeout(60)
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"\xff" * 64)
            conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    run("detect 2 scenes --scheduler <garbage TCP service>", "detect", scene, big, "-o", t / "ev", "--model",
        model, "--scheduler", f"tcp://127.0.0.1:{srv.getsockname()[1]}")
    srv.close()


if __name__ == "__main__":
    main()
