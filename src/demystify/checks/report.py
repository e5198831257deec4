"""A self-contained HTML page of the data checks, readable in any browser."""

from __future__ import annotations

import html

from demystify.core.config import ChecksParams

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; font-size: 0.92em; }
th { background: #f2f2f2; }
.pass { color: #17702b; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def _mark(ok: bool) -> str:
    return '<span class="pass">pass</span>' if ok else '<span class="fail">FAIL</span>'


def render_html(
    outcomes, corpora: dict[str, dict], checks: ChecksParams, skipped: dict[str, str] | None = None
) -> str:
    r = checks.object_centric
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>demystify data checks</title>"
        f"<style>{STYLE}</style></head><body><h1>Data checks</h1>"
    ]
    out.append(
        "<h2>Object-centricity of the training corpora</h2>"
        f"<p>Object-centric means, over a corpus's images: median largest-object box share &ge; "
        f"{r.min_largest_share}, median objects per image &le; {r.max_objects}, median centre offset &le; "
        f"{r.max_center_offset} (share of the half-diagonal).</p>"
        "<p>Object side: the largest object's box side at <code>pretrain.image_size</code> (median, pixels).</p>"
        "<table><tr><th>corpus</th><th>images</th><th>unique images</th><th>largest share (median)</th>"
        "<th>object side px (median)</th><th>objects (median)</th>"
        "<th>centre offset (median)</th><th>measured from</th><th>object-centric</th></tr>"
    )
    for name, c in corpora.items():
        out.append(
            f"<tr><td>{html.escape(name)}</td><td>{c['images']}</td><td>{c['unique_images']}</td>"
            f"<td>{c['largest_share_median']:.3f}</td><td>{c['object_side_px_median']:g}</td>"
            f"<td>{c['objects_median']:g}</td><td>{c['center_offset_median']:.3f}</td>"
            f"<td>{html.escape(c['measured_from'])}</td><td>{'yes' if c['object_centric'] else 'no'}</td></tr>"
        )
    out.append("</table>")
    out.append(
        f"<p>Suites that stop the pipeline when they fail (<code>checks.fail_on</code>): "
        f"{html.escape(', '.join(checks.fail_on) or 'none')}.</p>"
    )
    for suite, why in (skipped or {}).items():
        out.append(f"<p><b>{html.escape(suite)}</b>: {html.escape(why)}</p>")
    for o in outcomes:
        out.append(
            f"<h2>{html.escape(o.suite)}: {_mark(o.success)}</h2><table><tr><th>expectation</th><th>column</th>"
            "<th>arguments</th><th>observed</th><th>result</th></tr>"
        )
        for res in o.results:
            args = ", ".join(f"{k}={v}" for k, v in res["kwargs"].items())
            out.append(
                f"<tr><td>{html.escape(res['expectation'])}</td><td>{html.escape(res['column'])}</td>"
                f"<td>{html.escape(args)}</td><td>{html.escape(res['observed'])}</td><td>{_mark(res['success'])}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)
