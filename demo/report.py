"""``report.html``: one self-contained page (images inlined, no external
assets) with what each stage of the demo made and measured."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from demo.options import WORLD, DemoOptions, DemoResult

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em;
       padding: 0 1em; color: #222; background: #fafafa; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #e4e4e4; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.good { color: #176c2c; font-weight: 600; } .bad { color: #a11; font-weight: 600; }
figure { display: inline-block; margin: 0.5em 1.5em 0.5em 0; vertical-align: top; }
figcaption { font-size: 13px; color: #555; max-width: 28em; }
video { image-rendering: pixelated; max-width: 100%; background: #000; }
img { image-rendering: pixelated; border: 1px solid #ccc; background: #000; max-width: 100%; }
code, pre { background: #eee; padding: 0.1em 0.3em; border-radius: 3px; }
pre { padding: 0.6em; overflow-x: auto; }
.muted { color: #666; font-size: 13px; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    if path.suffix == ".mp4":
        return (f'<video controls loop muted autoplay playsinline title="{html.escape(alt)}" '
                f'src="data:video/mp4;base64,{data}"></video>')
    kind = "gif" if path.suffix == ".gif" else "png"
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{data}">'


def _video_or(video: Path, picture: Path) -> Path:
    """The MP4 when there is one (the video extra), else the GIF."""
    return video if video.is_file() else picture


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p class=muted>({html.escape(path.name)} missing)</p>"
    return f"<figure>{_img(path, caption)}<figcaption>{caption}</figcaption></figure>"


def _gain(value: float) -> str:
    cls = "good" if value > 0 else "bad"
    return f'<span class="{cls}">{value:+.2f} dB</span>'


def eval_table(report: dict[str, Any]) -> str:
    o = report["one_step"]
    rows = [("1 step", o, report["samples"])] + [
        (f"{h}-step rollout", r, r["samples"])
        for h, r in report.get("rollout", {}).items() if h != "1"]

    def still(r: dict[str, Any]) -> str:
        return f"{r['mean_psnr']:.2f} dB" if "mean_psnr" in r else "–"

    body = "".join(
        f"<tr><td>{name}</td><td>{r['psnr']:.2f} dB</td><td>{r['copy_psnr']:.2f} dB</td>"
        f"<td>{_gain(r['psnr_gain_db'])}</td><td>{still(r)}</td><td>{r['ssim']:.3f}</td>"
        f"<td>{r['copy_ssim']:.3f}</td><td>{n}</td></tr>"
        for name, r, n in rows)
    if "likely_psnr" in o:  # a drawing head's most likely frame, no drawing
        body += (f"<tr><td>1 step, most likely codes</td><td>{o['likely_psnr']:.2f} dB</td>"
                 f"<td>{o['copy_psnr']:.2f} dB</td>"
                 f"<td>{_gain(o['likely_psnr'] - o['copy_psnr'])}</td><td>–</td><td>–</td>"
                 f"<td>–</td><td>{report['samples']}</td></tr>")
    return ("<table><tr><th>held-out</th><th>PSNR model</th><th>PSNR copy-last</th>"
            "<th>gain</th><th title=\"the held-out recording's mean picture: a dream faded "
            "to a blur scores about as much\">PSNR mean frame</th><th>SSIM model</th>"
            "<th>SSIM copy-last</th><th>samples</th></tr>"
            f"{body}</table>")


def sticks_html(sticks: dict[str, dict[str, float]],
                motion: dict[str, dict[str, list[float]]] | None = None) -> str:
    """Does the dream listen to each stick? (``train.evaluate.stick_response`` and
    ``view_motion``)"""
    def verdict(name: str, ratio: float) -> str:
        if ratio < 1.005:
            return '<span class="bad">ignored</span>'
        shift = motion.get(name) if motion else None
        if shift is not None:  # a game that moves its view a pixel or more: as far in the dream?
            game, dream = (abs(v) for v in shift["game"]), (abs(v) for v in shift["dream"])
            pairs = [(g, d) for g, d in zip(game, dream, strict=True) if g >= 1.0]
            if any(d < 0.5 * g for g, d in pairs):
                return '<span class="bad">barely moves the dream</span>'
            if any(d > 2.0 * g for g, d in pairs):
                return '<span class="bad">moves the dream too far</span>'
        return '<span class="good">followed</span>'

    def moves(name: str) -> str:
        if not motion or name not in motion:
            return "<td>–</td><td>–</td>"
        dream, game = motion[name]["dream"], motion[name]["game"]
        return (f"<td>{dream[0]:+.1f}, {dream[1]:+.1f}</td>"
                f"<td>{game[0]:+.1f}, {game[1]:+.1f}</td>")

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r['flip_l1_ratio']:.2f}x</td>"
        f"<td>{r['response']:.2f}</td>{moves(name)}"
        f"<td>{verdict(name, r['flip_l1_ratio'])}</td></tr>"
        for name, r in sticks.items())
    return ("<h2>Does it listen to the sticks?</h2><table><tr><th>stick axis</th>"
            "<th>error with the axis flipped</th><th>picture moves</th>"
            "<th>dream's view moves (x, y px a step)</th><th>game's view moves</th><th></th></tr>"
            f"{rows}</table><p class=muted>On held-out frames where the axis is pushed at "
            "least half way: the one-step error with that axis flipped over the error with the "
            "true sticks (1.00x: the model ignores it), and how much the picture changes when "
            "it flips, over the real frame-to-frame change. Then how far the whole picture "
            "shifts a step in a 12-step dream with only that axis pushed all the way, beside "
            "the game's own frames where it is.</p>")


def _at(step: int | None) -> str:
    return '<span class="good">none</span>' if step is None else \
        f'<span class="bad">from step {step}</span>'


def realism_html(realism: dict[str, dict[str, float]]) -> str:
    """The realism table: how often a critic tells each kind of frame from the game."""
    rows = "".join(
        f"<tr><td>{html.escape(band)}</td><td>{100 * r['accuracy']:.0f}%</td>"
        f"<td>{100 * r['low']:.0f}-{100 * r['high']:.0f}%</td><td>{r['test_images']}</td></tr>"
        for band, r in realism.items())
    return ("<table><tr><th>frames</th><th>told from the game</th><th>95% interval</th>"
            f"<th>held out</th></tr>{rows}</table><p class=muted>A small CNN, trained with a "
            "fixed recipe on half of the frames, tells dream frames from held-out real ones "
            "on the other half; both sides first get the same random noise and JPEG, so only "
            "what a player could see counts. 50% means it cannot tell them apart.</p>")


def collapse_html(c: dict[str, Any]) -> str:
    f = c["figures"]
    verdict = '<span class="good">passed</span>' if c["passed"] else \
        '<span class="bad">failed</span>'
    return (f"<p>Collapse check over {c['steps']} free-running steps under scripted sticks: "
            f"{verdict}.</p><table>"
            f"<tr><td>freeze (picture stops while the sticks move)</td><td>{_at(c['freeze_step'])}"
            f"</td><td>least change {f['change_min_ratio']:.2f}x the recording's median "
            f"(bound {c['thresholds']['freeze_fraction']:.2f}x)</td></tr>"
            f"<tr><td>blow-out (brightness or contrast out of the recording's range)</td>"
            f"<td>{_at(c['blowout_step'])}</td><td>mean {f['mean_min']:.3f}-{f['mean_max']:.3f} "
            f"in {f['ref_mean_min']:.3f}-{f['ref_mean_max']:.3f}; contrast "
            f"{f['contrast_min']:.3f}-{f['contrast_max']:.3f} in {f['ref_contrast_min']:.3f}-"
            f"{f['ref_contrast_max']:.3f}</td></tr>"
            f"<tr><td>detail (high frequencies fade, or the picture dissolves into stripes "
            f"or speckle)</td><td>{_at(c['detail_step'])}</td>"
            f"<td>detail {f['detail_min_ratio']:.2f}x{_most(f)} the recording's mean (bounds "
            f"{f.get('detail_bound_ratio', c['thresholds']['detail_fraction']):.2f}x"
            f"{_ceiling(f)})</td></tr>"
            f"{boil_row(c)}</table>")


def _most(f: dict[str, float]) -> str:  # (reports from before the upper bound have none)
    return f"-{f['detail_max_ratio']:.2f}x" if "detail_max_ratio" in f else ""


def _ceiling(f: dict[str, float]) -> str:
    return f"-{f['detail_ceiling_ratio']:.2f}x" if "detail_ceiling_ratio" in f else ""


def boil_row(c: dict[str, Any]) -> str:
    """The boil check's row (a report from before it has none)."""
    if "boil_fraction" not in c["thresholds"]:
        return ""
    rest = c["figures"].get("rest_change_max_ratio")
    seen = ("no resting window" if rest is None or math.isnan(rest) else
            f"most change at rest {rest:.2f}x the recording's median")
    return (f"<tr><td>boil (picture keeps changing while the sticks rest)</td>"
            f"<td>{_at(c.get('boil_step'))}</td>"
            f"<td>{seen} (bound {c['thresholds']['boil_fraction']:.2f}x)</td></tr>")


def serve_table(s: dict[str, Any]) -> str:
    base = s["in_process_fps"]
    rows = "".join(
        f"<tr><td>{r['clients']}</td><td>{r['aggregate_fps']:.1f}</td>"
        f"<td>{r['aggregate_fps'] / base:.2f}x</td><td>{r['p50_ms']:.1f}</td>"
        f"<td>{r['p95_ms']:.1f}</td><td>{r['mean_batch']:.2f}</td></tr>" for r in s["runs"])
    return (f"<p>Model called in-process at batch 1: <b>{base:.1f} frames/s</b> "
            f"({html.escape(s['backend'])}).</p>"
            "<table><tr><th>lockstep clients</th><th>frames/s, all clients</th>"
            "<th>vs in-process</th><th>p50 ms</th><th>p95 ms</th><th>mean batch</th></tr>"
            f"{rows}</table>")


def write_report(result: DemoResult, options: DemoOptions) -> Path:
    st = result.stages
    work = options.work
    ev = st["evaluate"]["report"]
    train, serve, export = st["train"], st["serve"], st["export"]
    m = st["machine"]
    timings = "".join(
        f"<tr><td>{html.escape(name)}</td><td>"
        + ("reused" if info.get("reused") else f"{info.get('seconds', 0):.0f} s")
        + "</td></tr>"
        for name, info in st.items() if name not in ("machine", "total"))
    parity = export["parity"]
    noise = ev.get("noise_level")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>TinyDreams demo report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>TinyDreams: a world model of Doom, learned here</h1>",
        f"<p class=muted>{html.escape(m['cpu'])}, {m['cpus']} CPUs"
        + (f", {html.escape(m['gpu'])}" if "gpu" in m else "")
        + f"; torch {html.escape(m['torch'])}, Python {m['python']}. "
        f"Total {st['total']['seconds'] / 60:.1f} min"
        + (" (quick mode)" if options.quick else "") + ".</p>",
        f"<p>Recorded {st['record']['steps']:,} steps of <code>{WORLD}</code> under the "
        f"<code>wander</code> policy (and {st['record held-out']['steps']:,} held-out steps "
        f"from unseen seeds), trained the <code>{html.escape(train['config'])}</code> "
        f"preset for {train.get('trained_steps', '?')} steps "
        f"(budget {train['minutes']:g} min, {html.escape(train['precision'])}), scored it on "
        "the held-out recording against the copy-last-frame baseline, exported it, and "
        "played it through the dream server.</p>",
        "<h2>How well it predicts</h2>",
        eval_table(ev),
        "<p class=muted>PSNR of the dream against the real frames, beside simply repeating "
        "the last real frame, on the same held-out samples. A rollout feeds the model its own "
        "predictions for that many steps, under the recorded sticks."
        + (f" The model is told a context noise level of {noise:g}." if noise else "")
        + "</p>",
        sticks_html(ev["sticks"], ev.get("view_motion")) if ev.get("sticks") else "",
        "<h2>How real it looks</h2>" + realism_html(ev["realism"]) if ev.get("realism") else "",
        "<h2>Reality beside the dream</h2>",
        _figure(work / "eval" / "rollout.gif",
                "Left: the real held-out episode. Right: the dream, started from the same "
                "frames and driven by the same sticks, never shown a real frame again."),
        _figure(work / "eval" / "rollout.png",
                "The first 16 steps: real frames (top) over the dream (bottom)."),
        "<h2>Dreaming freely</h2>",
        _figure(_video_or(work / "eval" / "freerun.mp4", work / "eval" / "freerun.gif"),
                f"{ev.get('collapse', {}).get('steps', '?')} steps of free-running dream "
                "under scripted sticks."),
        _figure(work / "eval" / "freerun.png", "Every 100th frame of the same dream."),
        collapse_html(ev["collapse"]) if "collapse" in ev else "",
        "<h2>Served</h2>",
        _figure(work / "served.gif",
                f"{serve['frames']} frames a headless client played through the websocket "
                f"server on loopback with a scripted stick path (PNG frames); step latency "
                f"p50 {serve['p50_ms']:.1f} ms, p95 {serve['p95_ms']:.1f} ms."),
        serve_table(serve),
        "<h2>Export</h2>",
        "<table><tr><th>backend</th><th>batch 1</th><th>batch 8</th><th>16-step rollout</th>"
        "</tr>" + "".join(
            f"<tr><td>{name}</td><td>{f['batch1_max_abs']:.1e}</td>"
            f"<td>{f['batch8_max_abs']:.1e}</td><td>{f['rollout16_max_abs']:.1e}</td></tr>"
            for name, f in parity.items() if isinstance(f, dict))
        + "</table><p class=muted>Largest difference from eager PyTorch"
        + (f"; a codebook model's patches where two codes tie within float rounding may "
           f"take either (at most {parity['tie_share']:.0%} of them may), and are left "
           f"out." if "tie_share" in parity else ".") + "</p>",
        "<h2>Play it</h2>",
        f"<pre>python -m play dream --bundle {html.escape(str(work / 'bundle'))}\n"
        f"python -m serve --bundle {html.escape(str(work / 'bundle'))}   "
        "# then open http://127.0.0.1:8765/</pre>",
        "<h2>Where the time went</h2>",
        f"<table>{timings}</table>",
        "<details><summary>All figures (JSON)</summary><pre>"
        + html.escape(json.dumps(st, indent=1, default=str)) + "</pre></details>",
        "</body></html>",
    ]
    path = options.out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

