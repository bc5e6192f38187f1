"""The model card: one self-contained HTML page describing a bundle, rendered from its manifest
alone (same manifest, same bytes), with inline CSS and SVG, no scripts, and every manifest
string escaped.

Must not import server or sklearn.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from model_export.bundle._card_contents import (
    _catalogue_section,
    _data_section,
    _header,
    _lifecycle_section,
    _personas_section,
    _segments_section,
)
from model_export.bundle._card_data import METRIC_GROUPS, _Card
from model_export.bundle._card_html import _e, _Html, _join, _tag, format_condition, format_number
from model_export.bundle._card_quality import (
    _churn_section,
    _importance_section,
    _metrics_section,
    _other_diagnostics,
    _parity_section,
    _rfm_section,
    _value_models_section,
)
from sdk.manifest import Manifest, manifest_decoder, manifest_encoder

__all__ = [
    "METRIC_GROUPS",
    "REPORT_FILE",
    "format_condition",
    "format_number",
    "render_report",
    "write_report",
]

#: File name of the model card inside a bundle.
REPORT_FILE = "report.html"

_CSS = """
:root{--ink:#1f2933;--muted:#61707e;--line:#dfe4ea;--soft:#f4f6f8;--accent:#3b5bdb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:var(--ink);background:#fff}
.page{max-width:1120px;margin:0 auto;padding:32px 28px 64px}
header{border-bottom:1px solid var(--line);padding-bottom:20px}
.eyebrow{margin:0;color:var(--accent);font-weight:600;letter-spacing:.06em;text-transform:uppercase;
font-size:12px}
h1{margin:4px 0 16px;font-size:28px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
h2{margin:40px 0 8px;font-size:21px;padding-top:8px;border-top:1px solid var(--line)}
h3{margin:22px 0 8px;font-size:16px}
h4{margin:14px 0 6px;font-size:15px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px 20px;margin:0}
.fact dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.fact dd{margin:0;font-weight:600}
nav{margin:18px 0 0;display:flex;flex-wrap:wrap;gap:6px}
nav a{font-size:13px;color:var(--accent);text-decoration:none;border:1px solid var(--line);
border-radius:999px;padding:2px 10px}
nav a:hover{background:var(--soft)}
.scroll{overflow-x:auto;margin:8px 0 12px}
table{border-collapse:collapse;font-size:13.5px;min-width:50%}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{color:var(--muted);font-weight:500;background:none;white-space:nowrap}
table.kv{margin:6px 0}
table.profile td{padding:3px 4px;font-size:12.5px}
table.profile thead th{white-space:normal;min-width:88px;font-size:12.5px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
overflow-wrap:break-word}
.sub{display:block;font-size:11px;color:var(--muted);font-weight:400}
.muted{color:var(--muted)}
.note{color:var(--muted);font-size:13.5px;max-width:80ch}
.up{color:#1e7b34;font-weight:600}.down{color:#b42318;font-weight:600}
.pill{display:inline-block;border-radius:999px;padding:0 8px;font-size:12px;font-weight:600}
.pill.good{background:#e3f4e8;color:#1e7b34}.pill.bad{background:#fde8e6;color:#b42318}
.pill.warn{background:#fff3d6;color:#8a5a00}.pill.info{background:#e7ecfb;color:#3b5bdb}
.tags{display:flex;flex-wrap:wrap;gap:6px}
.tag{display:inline-block;background:var(--soft);border:1px solid var(--line);border-radius:6px;
padding:1px 8px;font-size:12.5px}
.chip{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:6px}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.kpis>div{background:var(--soft);border-radius:10px;padding:10px 16px;min-width:150px}
.kpis .v{display:block;font-size:22px;font-weight:700;font-variant-numeric:tabular-nums}
.kpis .k{color:var(--muted);font-size:12.5px}
.input{border:1px solid var(--line);border-radius:10px;padding:4px 16px 10px;margin:12px 0}
details summary{cursor:pointer;color:var(--accent);font-size:13.5px;margin:6px 0}
figure.fig{margin:10px 0 18px}
figure.fig svg{max-width:100%;height:auto}
footer{margin-top:48px;color:var(--muted);font-size:12.5px;border-top:1px solid var(--line);
padding-top:12px}
@media print{nav{display:none}h2{break-before:auto}figure{break-inside:avoid}}
"""

# No scripts, no external loads: only inline styles and the page itself.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_report(manifest: Manifest) -> str:
    """Render the model card of ``manifest`` as one self-contained HTML page.

    Reads every figure from the manifest and nothing else (not ``manifest.files``), so the same
    manifest renders the same page. Not thread-safe: plotting temporarily changes matplotlib's
    global rcParams and the warnings filters.
    """
    # what manifest.json says: the deterministic encoder sorts every mapping, so a manifest in
    # memory and the same manifest read back from disk render the same bytes
    manifest = manifest_decoder.decode(manifest_encoder.encode(manifest))
    card = _Card(manifest)
    sections: list[tuple[str, str, _Html | None]] = [
        ("data", "Training data", _data_section(card)),
        ("segments", "Segments", _segments_section(card)),
        ("personas", "Personas", _personas_section(card)),
        ("lifecycle", "Lifecycle rules", _lifecycle_section(card)),
        ("catalogue", "Offers and slots", _catalogue_section(card)),
        ("metrics", "Held-out metrics", _metrics_section(card)),
        ("parity", "ONNX parity", _parity_section(card)),
        ("importance", "Feature importance", _importance_section(card)),
        ("churn", "Churn model", _churn_section(card)),
        ("value-models", "Customer-value models", _value_models_section(card)),
        ("rfm", "RFM", _rfm_section(card)),
        ("diagnostics", "Other diagnostics", _other_diagnostics(card)),
    ]
    present = [(sid, title, body) for sid, title, body in sections if body is not None]
    nav = _tag("nav", _join(_tag("a", title, href=f"#{sid}") for sid, title, _ in present))
    body = _join(
        _tag("section", _join([_tag("h2", title), body]), id=sid) for sid, title, body in present
    )
    footer = _tag(
        "footer",
        f"Rendered from manifest.json of {manifest.model_version} by model_export.bundle.card. "
        "Every number on this page is read from the manifest.",
    )
    page = _tag("div", _join([_header(card), nav, _tag("main", body), footer]), class_="page")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(f'Model card · {manifest.model_version}')}</title>"
        f"<style>{_CSS}</style></head>\n<body>{page}</body></html>\n"
    )


def write_report(bundle_dir: Path, manifest: Manifest) -> Path:
    """Render the model card of ``manifest`` into ``bundle_dir/report.html`` (atomically:
    written to a temporary file, then renamed) and return its path."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / REPORT_FILE
    text = render_report(manifest)
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_FILE}.", dir=bundle_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
