"""``report.html``: one self-contained page (images as base64 data URIs, CSS inline, no scripts).

A run builds a :class:`Report` from its summary, plots and tables; any feature may add its own
section (the gradient audit adds a leakage section) with :meth:`Report.add_section`, and the page
is written when the run ends::

    ctx.report.add_section("Leakage", "<p>...</p>")
    ctx.report.add_table("Reconstructions", rows)
    ctx.report.add_image("Rebuilt features", "features.png")
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:right;overflow-wrap:anywhere}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}
"""


def format_value(value: Any) -> str:
    """A cell's text: floats with 4 significant digits, large ints with separators."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows; columns default to the keys of the first row, in order."""
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(columns) if columns is not None else list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_html(data: dict[str, Any]) -> str:
    """A two-column table of ``key | value``."""
    return table_html([{"key": k, "value": v} for k, v in data.items()], ["key", "value"])


def image_html(png: str | Path | bytes, *, alt: str = "", caption: str = "") -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}">{cap}</figure>'


@dataclass
class Section:
    """One titled part of the page; ``html`` is trusted markup."""

    title: str
    html: str


@dataclass
class Report:
    """The sections of a report page, in order."""

    title: str = "cotrain run"
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def add_section(self, title: str, body_html: str) -> Section:
        """Append a section (the hook later features use); returns it for further edits."""
        section = Section(title, body_html)
        self.sections.append(section)
        return section

    def add_table(self, title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                  *, note: str = "") -> Section:
        """Append a section holding a table of ``rows``."""
        intro = f"<p>{html.escape(note)}</p>" if note else ""
        return self.add_section(title, intro + table_html(rows, columns))

    def add_image(self, title: str, png: str | Path | bytes, *, caption: str = "") -> Section:
        """Append a section holding one embedded PNG."""
        return self.add_section(title, image_html(png, alt=title, caption=caption))

    def section(self, title: str) -> Section | None:
        """The first section titled ``title``."""
        return next((s for s in self.sections if s.title == title), None)

    def render(self) -> str:
        """The whole page as HTML text."""
        parts = [f"<section><h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>" for s in self.sections]
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>"
                f"<h1>{html.escape(self.title)}</h1>{sub}\n" + "\n".join(parts) + "\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        """Write :meth:`render` to ``path``."""
        p = Path(path)
        p.write_text(self.render(), encoding="utf-8")
        return p


def round_rows(history: Iterable[dict[str, Any]], *, word: str = "round") -> list[dict[str, Any]]:
    """The per-round table: the scalar columns of each round record (``word``: the first column's name,
    "epoch" for split learning)."""
    return [{word: r.get("round"), "test_accuracy": r.get("test_accuracy"), "test_loss": r.get("test_loss"),
             "participants": len(r.get("participants", [])), "bytes_up": r.get("bytes_up"),
             "bytes_down": r.get("bytes_down"), "seconds": r.get("seconds"),
             "excluded": ", ".join(r.get("aggregation", {}).get("excluded", [])) or "–",
             "rejected": "; ".join(f"{p}: {why}" for p, why in r.get("rejected", {}).items()) or "–",
             "failed": "; ".join(f"{p}: {why}" for p, why in r.get("failed", {}).items()) or "–"} for r in history]
