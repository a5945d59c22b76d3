"""The batch QC page: flags, ranking, escaping, which JSON counts, resume, links, and a real headless browser."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from lungct import qc, qcflags

MARKERS = {"error": (0xC6, 0x28, 0x28), "warning": (0xE6, 0x9B, 0x00), "ok": (0x2E, 0x7D, 0x32)}  # qc.CSS td.mark


def ct(name="case", right=2500.0, left=2100.0, **extra) -> dict:
    record = {"case": name, "status": "ok", "modality": "ct", "mask": f"{name}.nii.gz", "lungct_version": "9.9",
              "labels": {"background": 0, "right_lung": 1, "left_lung": 2},
              "volumes_ml": {"right_lung": right, "left_lung": left, "total": right + left},
              "components": {"right_lung": 1, "left_lung": 1},
              "confidence": {"flip_dice": 0.99, "uncertain_fraction": 0.01},
              "hu_calibration": {"status": "ok", "air_stored": -1000.0}, "flags": [], "warnings": []}
    record.update(extra)
    return record


def cxr(name="film", areas=None, **extra) -> dict:
    record = {"source": f"/in/{name}.png", "modality": "cxr", "mask": f"{name}.png",
              "labels": {"background": 0, "right_lung": 1, "left_lung": 2},
              "areas_cm2": {"right_lung": 200.0, "left_lung": 170.0, "total": 370.0} if areas is None else areas,
              "warnings": []}
    record.update(extra)
    return record


def codes(record) -> list[str]:
    return [f.code for f in qcflags.qc_flags(record)]


# ------------------------------------------------------------------------------------------------ flags


def test_clean_records_have_no_flags():
    assert qcflags.qc_flags(ct()) == [] and qcflags.qc_flags(cxr()) == []
    assert qcflags.suspicion(ct()) < 1 and qcflags.suspicion(cxr()) == 0


def test_missing_and_tiny_lung_are_errors():
    assert codes(ct(right=0.0)) == ["missing_right_lung"]
    record = ct()
    del record["volumes_ml"]["left_lung"]
    assert "missing_left_lung" in codes(record)
    tiny = qcflags.qc_flags(ct(left=200.0))
    assert [(f.code, f.severity) for f in tiny][0] == ("tiny_left_lung", "error") and "200 mL" in tiny[0].text


def test_ratio_and_total_volume_ranges():
    assert codes(ct(right=3300.0, left=1500.0)) == ["rl_ratio"]  # 2.2
    assert codes(ct(right=1500.0, left=2600.0)) == ["rl_ratio"]  # 0.58
    assert codes(ct(right=700.0, left=600.0)) == ["total_range"]  # 1.3 L
    assert codes(ct(right=5200.0, left=4300.0)) == ["total_range"]  # 9.5 L
    assert all(f.severity == "warning" for f in qcflags.qc_flags(ct(right=700.0, left=600.0)))


def test_volume_ranges_only_on_inputs_covering_the_chest():
    """One axial slice (or a slab) holds a few mL of lung: not 'tiny', not outside the adult range."""
    def geometry(slices, thickness, direction=((1, 0, 0), (0, 1, 0), (0, 0, 1))):
        return {"shape": [512, 512, slices], "spacing_mm": [0.8, 0.8, thickness], "direction": [list(r) for r in direction]}

    assert codes(ct(right=21.0, left=20.0, input=geometry(1, 1.0))) == []
    assert codes(ct(right=0.0, left=20.0, input=geometry(1, 1.0))) == ["missing_right_lung"]  # still checked
    assert codes(ct(right=210.0, left=200.0, input=geometry(100, 1.0))) == []  # a 100 mm slab
    assert codes(ct(right=21.0, left=20.0, input=geometry(300, 1.0)))[:2] == ["tiny_right_lung", "tiny_left_lung"]
    coronal = geometry(300, 1.0, ((1, 0, 0), (0, 0, 1), (0, 1, 0)))  # slices along y: 512 x 0.8 mm head to foot
    assert qcflags.coverage_mm(ct(input=coronal)) == pytest.approx(409.6)
    assert "total_range" in codes(ct(right=210.0, left=200.0, input=coronal))


def test_miscalibration_confidence_components_and_warnings():
    assert codes(ct(hu_calibration={"status": "miscalibrated", "air_stored": -1100.0})) == ["hu_miscalibrated"]
    assert codes(ct(flags=["hu_miscalibrated"], hu_calibration=None)) == ["hu_miscalibrated"]
    assert codes(ct(hu_calibration={"status": "unchecked"})) == []
    assert codes(ct(confidence={"flip_dice": 0.91, "uncertain_fraction": 0.01})) == ["low_flip_dice"]
    assert codes(ct(confidence={"flip_dice": 0.99, "uncertain_fraction": 0.12})) == ["uncertain"]
    assert codes(ct(confidence=None)) == []
    assert codes(ct(confidence={"flip_dice": 0.99, "uncertain_fraction": 0.01, "lung_noise_hu": 272.0})) == ["noisy"]
    assert codes(ct(confidence={"flip_dice": 0.99, "uncertain_fraction": 0.01, "lung_noise_hu": 60.0})) == []
    assert codes(ct(components={"right_lung": 3, "left_lung": 2})) == ["components"]
    assert codes(ct(warnings=["a 3D model on a single slice"])) == ["warnings"]
    assert codes(ct(flags=["one_lung"])) == ["one_lung"]


def test_failed_case_is_an_error_and_ranks_above_everything():
    failed = {"case": "broken", "status": "failed", "reason": "cannot read NIfTI file"}
    flags = qcflags.qc_flags(failed)
    assert [f.code for f in flags] == ["failed"] and flags[0].severity == "error" and "cannot read" in flags[0].text
    worst_ok = ct(right=0.0, left=100.0, warnings=["x"], confidence={"flip_dice": 0.5, "uncertain_fraction": 0.5})
    assert qcflags.suspicion(failed) > qcflags.suspicion(worst_ok)


def test_radiograph_records():
    assert codes(cxr(areas={"right_lung": 210.0, "left_lung": 0.0, "total": 210.0})) == ["missing_left_lung"]
    assert codes(cxr(areas={"right_lung": 20.0, "left_lung": 170.0, "total": 190.0}))[0] == "tiny_right_lung"
    assert codes(cxr(areas={"right_lung": 60.0, "left_lung": 50.0, "total": 110.0})) == ["total_range"]
    assert codes(cxr(areas_cm2=None)) == []  # spacing unknown: no area-based flags
    older = cxr()
    del older["modality"]
    assert qcflags.modality(older) == "cxr" and qcflags.measures(older)[1] == "cm²"
    assert codes(cxr(areas={"lung": 380.0, "total": 380.0}, labels={"background": 0, "lungs": 1})) == []


def test_garbage_fields_do_not_crash():
    odd = {"case": "odd", "status": "ok", "mask": 3, "volumes_ml": {"right_lung": "n/a", "left_lung": None,
           "total": float("nan")}, "components": ["x"], "confidence": "high", "hu_calibration": [],
           "flags": "hu_miscalibrated", "warnings": None, "statistics": {"refused": "not calibrated"}}
    assert "missing_right_lung" in codes(odd)
    assert qcflags.suspicion(odd) >= 20
    assert qcflags.key_statistics(odd) == {"mean_hu": None, "laa950_pct": None, "perc15_hu": None}


def test_ranking_order():
    records = {"clean": ct(), "warn": ct(right=3300.0, left=1500.0), "err": ct(right=0.0),
               "err_and_warn": ct(right=0.0, warnings=["w"]), "failed": {"case": "f", "status": "failed"},
               "unsure": ct(confidence={"flip_dice": 0.96, "uncertain_fraction": 0.01})}
    ranked = sorted(records, key=lambda k: -qcflags.suspicion(records[k]))
    assert ranked == ["failed", "err_and_warn", "err", "warn", "unsure", "clean"]


# ------------------------------------------------------------------------------------------------ pages


def picture(path: Path, seed: int, size=(600, 200)) -> Path:
    """A preview-like picture: grey noise with a coloured blob."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8)
    array[40:160, 100 + 60 * seed:220 + 60 * seed] = (40 * seed % 255, 160, 220)
    Image.fromarray(array).save(path)
    return path


def write_case(out: Path, record: dict, preview=True, seed=0) -> dict:
    name = record.get("case") or Path(record["mask"]).stem
    stem = re.sub(r"[^\w-]", "_", name)
    (out / f"{stem}.nii.gz").write_bytes(b"\x1f\x8b")  # contents do not matter to the page
    record["mask"] = str(out / f"{stem}.nii.gz")
    if preview:
        record["preview"] = str(picture(out / f"{stem}.png", seed))
    (out / f"{stem}.json").write_text(json.dumps(record))
    return record


BATCH = {"alpha": dict(right=2500.0, left=2100.0), "bravo": dict(right=0.0, left=2300.0),
         "charlie": dict(right=3300.0, left=1500.0), "delta": dict(right=1900.0, left=1700.0),
         "echo": dict(right=700.0, left=600.0, warnings=["slice spacing 10 mm"])}


@pytest.fixture
def batch(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for seed, (name, kwargs) in enumerate(BATCH.items()):
        write_case(out, ct(name, **kwargs, statistics={"both": {"whole": {"mean_hu": -850.0 + seed,
                   "laa950_pct": 5.0 + seed, "perc15_hu": -930.0}}}), seed=seed)
    return out


class Rows(HTMLParser):
    """data-case of every <tr> in <tbody>, in document order, and every href/src."""

    def __init__(self, text):
        super().__init__()
        self.cases, self.links, self.sources, self.table = [], [], [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-case" in attrs:
            self.cases.append(attrs["data-case"])
        if tag == "table":
            self.table = attrs
        if "href" in attrs:
            self.links.append(attrs["href"])
        if "src" in attrs:
            self.sources.append(attrs["src"])


def test_page_rows_ranked_and_self_contained(batch):
    path = qc.write_report(batch, title="Night batch")
    text = path.read_text()
    rows = Rows(text)
    assert rows.cases[:3] == ["bravo", "echo", "charlie"] and sorted(rows.cases) == sorted(BATCH)
    assert "<b>5</b> cases" in text and "<b>3</b> flagged" in text and "Night batch" in text
    assert all(s.startswith("data:image/jpeg;base64,") for s in rows.sources) and len(rows.sources) == 5
    assert not re.search(r"https?://|<link|@import|url\(", text)  # no network requests of any kind
    widths = [int(w) for w in re.findall(r'<img[^>]* width="(\d+)"', text)]
    assert widths and max(widths) <= 256
    assert not [p for p in batch.iterdir() if p.name.startswith(".")]  # the atomic write left nothing behind


def test_html_escaping(tmp_path):
    nasty = "<img src=x onerror=alert(1)>&co"
    write_case(tmp_path, ct(nasty, warnings=["<script>alert('w')</script>"], flags=['"><b>x']), preview=False)
    text = qc.write_report(tmp_path).read_text()
    assert "<img src=x" not in text and "<script>alert" not in text and '"><b>x' not in text
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;co" in text and "&lt;script&gt;" in text
    assert Rows(text).cases == [nasty]


def test_ignores_json_that_is_not_a_sidecar(batch):
    (batch / "report.json").write_text(json.dumps({"cases": [{"case": "x"}], "created": "now"}))
    (batch / "statistics.json").write_text(json.dumps([{"case": "alpha", "mean_hu": -850}]))
    (batch / "recipe.json").write_text(json.dumps({"name": "ct-lungs", "steps": []}))
    (batch / "broken.json").write_text('{"case": "half')
    (batch / ".alpha.json.1234abcd.tmp.json").write_text(json.dumps(ct("ghost")))
    assert sorted(Rows(qc.write_report(batch).read_text()).cases) == sorted(BATCH)


def test_rewritten_after_a_resume(tmp_path):
    write_case(tmp_path, ct("first"))
    assert Rows(qc.write_report(tmp_path).read_text()).cases == ["first"]
    write_case(tmp_path, ct("second", right=0.0), seed=1)  # a later run adds cases; the page shows all
    write_case(tmp_path, cxr("third"), seed=2)
    text = qc.write_report(tmp_path).read_text()
    assert Rows(text).cases == ["second", "first", "third"] and "370 <small class=\"muted\">cm²</small>" in text


def test_links_are_relative_and_exist(batch, monkeypatch):
    moved = ct("moved")  # a sidecar naming an absolute path from another machine: the sibling is linked
    write_case(batch, moved, seed=2)
    data = json.loads((batch / "moved.json").read_text())
    data["mask"], data["preview"] = "/elsewhere/out/moved.nii.gz", "/elsewhere/out/moved.png"
    (batch / "moved.json").write_text(json.dumps(data))
    sub = batch / "masks"  # and one relative to where infer ran (the parent folder)
    sub.mkdir()
    (sub / "rel.nii.gz").write_bytes(b"x")
    monkeypatch.chdir(batch.parent)
    (batch / "rel.json").write_text(json.dumps(ct("rel", mask="out/masks/rel.nii.gz")))
    write_case(batch, ct("nomask"), preview=False)
    (batch / "nomask.nii.gz").unlink()
    text = qc.write_report(batch).read_text()
    links = Rows(text).links
    assert len(links) == 6 * 3 + 2 + 1  # picture, mask, json; rel has no picture; nomask only its json
    for link in links:
        assert not link.startswith(("/", "file:", "http")) and (batch / unquote(link)).is_file(), link
    assert "masks/rel.nii.gz" in links and "moved.nii.gz" in links and "mask file missing" in text


def test_thumbnails_are_cached_by_mtime(batch):
    qc._thumbnail.cache_clear()
    qc.write_report(batch)
    qc.write_report(batch)
    info = qc._thumbnail.cache_info()
    assert info.misses == 5 and info.hits == 5
    picture(batch / "alpha.png", 9)
    os.utime(batch / "alpha.png", ns=(time.time_ns() + 10**9,) * 2)
    qc.write_report(batch)
    assert qc._thumbnail.cache_info().misses == 6


# ---------------------------------------------------------------------------------------------- browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, args: list[str], profile: Path, timeout: float = 60.0) -> str:
    """Run headless Chromium once; its own process group, killed whole on timeout so a test never hangs."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args, url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within {timeout:.0f} s: {' '.join(command)}")
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def marker_runs(png: Path) -> list[str]:
    """Severity of each run of marker colour down the screenshot column richest in marker pixels."""
    array = np.asarray(Image.open(png).convert("RGB")).astype(int)
    hits = {level: (np.abs(array - colour).max(axis=2) <= 3) for level, colour in MARKERS.items()}
    any_marker = np.logical_or.reduce(list(hits.values()))
    x = int(any_marker.sum(axis=0).argmax())
    runs, previous = [], None
    for y in range(array.shape[0]):
        level = next((k for k, h in hits.items() if h[y, x]), None)
        if level and level != previous or level and previous is None:
            runs.append(level)
        previous = level
    return runs


@pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_in_a_real_browser(batch, tmp_path):
    page = qc.write_report(batch)
    url = page.resolve().as_uri()
    shot = tmp_path / "report.png"
    browse(url, [f"--screenshot={shot}", "--window-size=1400,1000"], tmp_path / "profile1")
    array = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert array.std() > 20, "blank screenshot"
    assert marker_runs(shot) == ["error", "warning", "warning", "ok", "ok"]  # bravo, echo, charlie, alpha, delta

    dom = browse(url + "#sort=total_ml&desc=1", ["--dump-dom", "--virtual-time-budget=2000"], tmp_path / "profile2")
    rows = Rows(dom)
    totals = {n: kw["right"] + kw["left"] for n, kw in BATCH.items()}
    assert rows.table.get("data-sort") == "total" and rows.table.get("data-desc") == "1"  # the script ran
    assert rows.cases == sorted(BATCH, key=lambda n: -totals[n])

    clicks = page.with_name("clicks.html")  # the page plus a script that clicks headers and logs the order
    clicks.write_text(page.read_text().replace("</body>", CLICKER + "</body>"))
    dom = browse(clicks.resolve().as_uri(), ["--dump-dom", "--virtual-time-budget=2000"], tmp_path / "profile3")
    log = json.loads(unquote(re.search(r'<pre id="log">(.*?)</pre>', dom).group(1)))
    assert log["case"] == sorted(BATCH)
    assert log["total"] == sorted(BATCH, key=lambda n: -totals[n])  # first click on a number: largest first
    assert log["total again"] == sorted(BATCH, key=lambda n: totals[n]) and log["hash"] == "#sort=total"


CLICKER = """<script>
var log = {}, order = function () {
  return Array.prototype.map.call(document.querySelectorAll('#qc tbody tr'), function (r) { return r.dataset.case; }); };
function click(key) { document.querySelector('th[data-key="' + key + '"]').click(); }
click('case'); log['case'] = order(); click('total'); log['total'] = order(); click('total');
log['total again'] = order(); log['hash'] = location.hash;
var pre = document.createElement('pre'); pre.id = 'log'; pre.textContent = encodeURIComponent(JSON.stringify(log));
document.body.appendChild(pre);
</script>"""
