"""The HTML around every report page: one inline style sheet, optional inline script, nothing fetched."""

from __future__ import annotations

import html

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1em; margin: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.episode { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; margin: 0.8em 0; }
.episode.failed { border-color: #d62728; }
.meta, .note { font-size: 0.9em; color: #555; margin: 0.3em 0; }
.error { color: #b00; font-family: monospace; white-space: pre-wrap; }
.yes { color: #2ca02c; font-weight: bold; } .no { color: #d62728; font-weight: bold; }
pre.command { background: #f6f6f6; border: 1px solid #ddd; padding: 0.5em; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.flags { color: #b35900; } #flags td:first-child { white-space: nowrap; }
img { max-width: 100%; }
"""


def page(title: str, body: list[str], style: str = "", script: str = "") -> str:
    """A whole HTML document: ``body`` under the shared style (plus ``style``), then ``script``."""
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}{style}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n{tail}</body></html>\n"
    )
