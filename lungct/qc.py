"""A self-contained batch QC page (report.html) built from every JSON sidecar in an output folder.

Why a page and not a CSV: reviewing a batch means looking at pictures next to numbers, suspicious
cases first. The page is rebuilt from *all* sidecars present (so a resumed batch is complete), written
atomically (so a browser never sees half a file), and needs no network (CSS, JS and thumbnails inline).
What each case is flagged for, and the ranking, come from lungct.qcflags.
"""
from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import json
import os
from pathlib import Path
from urllib.parse import quote

from lungct import __version__
from lungct.io.atomic import write_text
from lungct.qcflags import _dict, _num, key_statistics, measures, modality, qc_flags, rl_ratio, suspicion

THUMB_SIZE = (224, 120)  # max width, height: ~10 kB JPEG each, so 500 cases stay ~5 MB
REPORT_NAME = "report.html"


# ------------------------------------------------------------------------------------------- sidecars


def is_sidecar(record) -> bool:
    """A lungct per-case sidecar, as opposed to report.json, a statistics table or a recipe."""
    if not isinstance(record, dict):
        return False
    if "case" in record and "status" in record:
        return True
    return "mask" in record and any(k in record for k in ("labels", "volumes_ml", "areas_cm2"))


def load_sidecars(out_dir: Path) -> list[tuple[Path, dict]]:
    """Every sidecar in the folder (not only this run's cases); dot files (atomic-write temporaries)
    and unreadable or foreign JSON are skipped."""
    found = []
    for path in sorted(Path(out_dir).glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if is_sidecar(record):
            found.append((path, record))
    return found


def _locate(value, out_dir: Path) -> Path | None:
    """The file a sidecar names. The sibling in out_dir wins, so a moved or copied folder still links
    inside itself; then the recorded path (absolute, or relative to where infer ran)."""
    if not value or not isinstance(value, str):
        return None
    recorded = Path(value)
    for candidate in (out_dir / recorded.name, recorded if recorded.is_absolute() else out_dir / recorded, recorded):
        if candidate.is_file():
            return candidate
    return None


def _href(path: Path, out_dir: Path) -> str:
    """A relative link; the name's own bytes percent-encoded, so a name that is not UTF-8 links too."""
    return quote(os.fsencode(os.path.relpath(path.resolve(), out_dir.resolve()).replace(os.sep, "/")))


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime_ns: int, size: int) -> tuple[str, int, int] | None:
    """(data URI, width, height) of a small JPEG; cached by mtime so rewriting the page after every
    case does not re-encode the whole batch."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_SIZE[0] * 2, THUMB_SIZE[1] * 2))  # JPEG: decode at a reduced size
            if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit grey: stretch to 8 bits
                array = np.asarray(image, dtype=np.float32)
                lo, hi = np.percentile(array, (0.5, 99.5))
                image = Image.fromarray((np.clip((array - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8))
            image = image.convert("RGB")
            image.thumbnail(THUMB_SIZE, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), *image.size


# ----------------------------------------------------------------------------------------------- page

CSS = """
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:16px;color:#1d232a;background:#fff}
h1{font-size:19px;margin:0 0 4px}.summary{color:#4a5560;margin:0 0 12px}.summary b{color:#1d232a}
table{border-collapse:collapse;width:100%}th,td{padding:5px 8px;border-bottom:1px solid #e3e7eb;vertical-align:middle;text-align:left}
th{background:#f3f5f7;position:sticky;top:0;font-weight:600;white-space:nowrap;cursor:pointer;user-select:none}
th.nosort{cursor:default}th[aria-sort=ascending]::after{content:" \\25B2";font-size:9px}th[aria-sort=descending]::after{content:" \\25BC";font-size:9px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}th.num{text-align:right}
tr:hover td{background:#f8fafc}td.mark{width:6px;padding:0;border-bottom:1px solid #fff}
tr.error td.mark{background:#c62828}tr.warning td.mark{background:#e69b00}tr.ok td.mark{background:#2e7d32}
td.case a{font-weight:600;color:#0b57a4;text-decoration:none}td.case small a{font-weight:400;color:#5b6670;margin-right:6px}
td.thumb img{display:block;border-radius:3px;background:#000}.muted{color:#8a949e}
.badge{display:inline-block;margin:1px 3px 1px 0;padding:1px 6px;border-radius:9px;font-size:11.5px}td.flags{min-width:150px;max-width:250px}
.badge.error{background:#fde4e4;color:#9b1c1c;border:1px solid #f2b8b8}.badge.warning{background:#fff3d6;color:#7a5200;border:1px solid #f0d48a}
.score{font-weight:600;margin-right:4px}td.warn{min-width:120px;max-width:240px;font-size:12px;color:#5b4a1e}td.warn div+div{margin-top:2px}
"""

JS = """
(function(){
  var table=document.getElementById('qc'),body=table.tBodies[0],heads=table.tHead.rows[0].cells;
  function sortBy(key,desc){
    var rows=Array.prototype.slice.call(body.rows);
    if(!rows.length||!rows[0].hasAttribute('data-'+key))return false;
    rows.sort(function(a,b){
      var x=a.getAttribute('data-'+key),y=b.getAttribute('data-'+key),c;
      if(x===''||y==='')c=x===y?0:(x===''?1:-1);  // empty cells last, whatever the direction
      else{var nx=Number(x),ny=Number(y);
        c=isNaN(nx)||isNaN(ny)?x.localeCompare(y,undefined,{numeric:true,sensitivity:'base'}):nx-ny;
        if(desc)c=-c;}
      return c||(a.getAttribute('data-i')-b.getAttribute('data-i'));
    });
    rows.forEach(function(r){body.appendChild(r);});
    for(var i=0;i<heads.length;i++){var h=heads[i];
      if(h.getAttribute('data-key')===key)h.setAttribute('aria-sort',desc?'descending':'ascending');
      else h.removeAttribute('aria-sort');}
    table.setAttribute('data-sort',key);table.setAttribute('data-desc',desc?'1':'0');
    return true;
  }
  function fromHash(){
    var q={};location.hash.replace(/^#/,'').split('&').forEach(function(p){
      var kv=p.split('=');q[decodeURIComponent(kv[0])]=decodeURIComponent(kv[1]||'');});
    if(q.sort)sortBy(q.sort.replace(/_(ml|cm2)$/,''),q.desc==='1'||q.desc==='true');
  }
  for(var i=0;i<heads.length;i++)(function(h){
    var key=h.getAttribute('data-key');if(!key)return;
    h.addEventListener('click',function(){
      var desc=table.getAttribute('data-sort')===key?table.getAttribute('data-desc')!=='1':h.getAttribute('data-first')==='desc';
      sortBy(key,desc);
      try{history.replaceState(null,'','#sort='+key+(desc?'&desc=1':''));}catch(e){}
    });
  })(heads[i]);
  window.addEventListener('hashchange',fromHash);fromHash();
})();
"""

# (key, header, numeric, first click descending)
COLUMNS = [("", "", False, False), ("", "Preview", False, False), ("case", "Case", False, False),
           ("modality", "Modality", False, False), ("right", "Right", True, True), ("left", "Left", True, True),
           ("total", "Total", True, True), ("ratio", "R/L", True, True), ("mean_hu", "Mean HU", True, False),
           ("laa950", "%LAA-950", True, True), ("perc15", "Perc15", True, False),
           ("flip_dice", "Flip Dice", True, False), ("score", "Flags", False, True),
           ("warnings", "Warnings", False, True)]


def _fmt(value: float | None, pattern: str = "{:,.0f}", unit: str = "") -> str:
    if value is None:
        return '<span class="muted">–</span>'
    return html.escape(pattern.format(value)) + (f' <small class="muted">{html.escape(unit)}</small>' if unit else "")


def _row(json_path: Path, record: dict, out_dir: Path) -> tuple[float, str, str, str, str]:
    """(suspicion, case name, error/warning/ok, the <tr> attributes and cells, lungct version) for one
    sidecar; every string from a sidecar goes through html.escape."""
    esc = html.escape
    name = str(record.get("case") or json_path.stem)
    flags, score = qc_flags(record), suspicion(record)
    level = "error" if any(f.severity == "error" for f in flags) else "warning" if flags else "ok"
    values, unit = measures(record)
    stats, ratio = key_statistics(record), rl_ratio(record)
    confidence = _dict(record, "confidence")
    flip, uncertain = _num(confidence.get("flip_dice")), _num(confidence.get("uncertain_fraction"))
    warnings = [str(w) for w in record.get("warnings") or []] if isinstance(record.get("warnings"), list) else []
    sort = {"case": name, "modality": modality(record), "right": values.get("right_lung"),
            "left": values.get("left_lung"), "total": values.get("total"), "ratio": ratio,
            "mean_hu": stats.get("mean_hu"), "laa950": stats.get("laa950_pct"), "perc15": stats.get("perc15_hu"),
            "flip_dice": flip, "uncertain": uncertain, "score": score, "warnings": len(warnings)}
    attrs = "".join(f' data-{k}="{esc("" if v is None else str(v))}"' for k, v in sort.items())

    preview, thumb = _locate(record.get("preview"), out_dir), None
    if preview is not None:
        stat = preview.stat()
        thumb = _thumbnail(str(preview.resolve()), stat.st_mtime_ns, stat.st_size)
    if thumb:
        picture = (f'<a href="{esc(_href(preview, out_dir))}"><img src="{thumb[0]}" width="{thumb[1]}" '
                   f'height="{thumb[2]}" alt="preview of {esc(name)}" loading="lazy"></a>')
    else:
        picture = '<span class="muted">no preview</span>'
    mask = _locate(record.get("mask"), out_dir)
    title = esc(name) if mask is None else f'<a href="{esc(_href(mask, out_dir))}">{esc(name)}</a>'
    links = [f'<a href="{esc(_href(json_path, out_dir))}">json</a>']
    links += ['<span class="muted">mask file missing</span>'] if mask is None and record.get("mask") else []
    refused = _dict(record, "statistics").get("refused")
    stat_title = f' title="statistics refused: {esc(str(refused))}"' if refused else ""
    badges = "".join(f'<span class="badge {f.severity}" title="{esc(f.code)}">{esc(f.text)}</span>' for f in flags)
    cells = [
        '<td class="mark"></td>', f'<td class="thumb">{picture}</td>',
        f'<td class="case">{title}<br><small>{" ".join(links)}</small></td>', f"<td>{esc(sort['modality'])}</td>",
        *(f'<td class="num">{_fmt(values.get(k), unit=unit)}</td>' for k in ("right_lung", "left_lung", "total")),
        f'<td class="num">{_fmt(ratio, "{:.2f}")}</td>',
        f'<td class="num"{stat_title}>{_fmt(stats.get("mean_hu"))}</td>',
        f'<td class="num"{stat_title}>{_fmt(stats.get("laa950_pct"), "{:.1f}", "%")}</td>',
        f'<td class="num"{stat_title}>{_fmt(stats.get("perc15_hu"))}</td>',
        f'<td class="num" title="{"" if uncertain is None else f"uncertain {uncertain:.1%}"}">'
        f'{_fmt(flip, "{:.3f}")}</td>',
        f'<td class="flags">{f"<span class=score title={score:g}>{score:.0f}</span>" if flags else ""}{badges}</td>',
        f'<td class="warn">{"".join(f"<div>{esc(w)}</div>" for w in warnings)}</td>']
    return score, name, level, f'{attrs}>{"".join(cells)}</tr>', str(record.get("lungct_version") or "")


def render(out_dir: Path, title: str | None = None, sidecars: list | None = None) -> str:
    """The whole page as a string: suspicious cases first (suspicion, then name). `sidecars`: what
    load_sidecars(out_dir) returns, when the caller has read them already."""
    out_dir = Path(out_dir)
    sidecars = load_sidecars(out_dir) if sidecars is None else sidecars
    rows = sorted((_row(p, r, out_dir) for p, r in sidecars), key=lambda row: (-row[0], row[1]))
    flagged = sum(row[2] != "ok" for row in rows)
    errors = sum(row[2] == "error" for row in rows)
    versions = sorted({row[4] for row in rows} - {__version__, ""})  # sidecars from other versions (a resume)
    made = f" (sidecars also from {', '.join(versions)})" if versions else ""
    written = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    title = title or f"lungct QC: {out_dir.resolve().name}"
    head = "".join(f'<th{" class=num" if num else ""}{f" data-key={key}" if key else " class=nosort"}'
                   f'{" data-first=desc" if first else ""}{" aria-sort=descending" if key == "score" else ""}>'
                   f'{label}</th>' for key, label, num, first in COLUMNS)
    body = "\n".join(f'<tr class="{row[2]}" data-i="{i}"{row[3]}' for i, row in enumerate(rows))
    empty = "" if rows else f'<tr><td colspan="{len(COLUMNS)}" class="muted">no sidecars yet</td></tr>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n'
            f'<h1>{html.escape(title)}</h1>\n<p class="summary"><b>{len(rows)}</b> cases · '
            f'<b>{flagged}</b> flagged ({errors} with errors) · written {written} · lungct {html.escape(__version__)}'
            f'{html.escape(made)}'
            f' · click a header to sort</p>\n<table id="qc" data-sort="score" data-desc="1"><thead><tr>{head}</tr>'
            f'</thead><tbody>\n{body}{empty}\n</tbody></table>\n<script>{JS}</script></body></html>\n')


def write_report(out_dir, title: str | None = None, sidecars: list | None = None) -> Path:
    """Write out_dir/report.html from every sidecar in out_dir, atomically (temporary sibling, then
    os.replace), so it can be rewritten after every case of a running batch."""
    out_dir = Path(out_dir)
    return write_text(out_dir / REPORT_NAME, render(out_dir, title, sidecars))
