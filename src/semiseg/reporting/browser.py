"""Look at a report the way a reader does: a screenshot in headless Chromium.

``snakemake --report report.html`` writes a single-page application: the results are menu items
whose content (our table pages) is shown in a frame once clicked, so a plain screenshot of the
file shows only the menu. :func:`screenshot` opens a copy of the report with one line of script
added that shows one result, as a click on it would (the report's own ``app.setView`` with the
result's embedded data), waits for the page to render, and saves what the browser drew::

    python -m semiseg.reporting.browser report.html --show results/report/acdc.html --out report.png

Needs Chromium (Debian/Ubuntu: ``apt-get install -y chromium``; ``scripts/install_chromium.sh``
does that for CI). Nothing is fetched from the network: the report embeds everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "screenshot"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: ``$SEMISEG_CHROMIUM``, else the first of the usual names on PATH."""
    env = os.environ.get("SEMISEG_CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# Shows the result whose path ends with SHOW once the report's app is up (it renders on load).
_SCRIPT = """<script>
(function () {
  const want = %s;
  function show() {
    if (typeof app === "undefined" || typeof results === "undefined") { return setTimeout(show, 50); }
    const path = Object.keys(results).find(function (p) { return p.endsWith(want); });
    if (!path) { document.title = "semiseg: no result " + want; return; }
    app.setView({content: "html", contentPath: results[path].data_uri, resultPath: path,
                 navbarMode: "resultinfo"});
    document.title = "semiseg: showing " + path;
  }
  window.addEventListener("load", show);
})();
</script>"""


# Clicks the first link whose text is CLICK once the report's landing page shows it.
_CLICK = """<script>
(function () {
  const want = %s;
  function click() {
    const link = Array.from(document.querySelectorAll("a")).find(function (a) { return a.textContent.trim() === want; });
    if (!link) { return setTimeout(click, 50); }
    link.click();
    document.title = "semiseg: clicked " + want;
  }
  window.addEventListener("load", click);
})();
</script>"""


def screenshot(report: Path, out: Path, *, show: str | None = None, click: str | None = None,
               size=(1600, 1400), wait_ms: int = 8000, chromium: str | None = None, timeout: float = 120) -> Path:
    """Save a PNG of ``report`` as headless Chromium draws it; with ``show``, of the result whose
    path ends with it (e.g. ``report/demo.html``); with ``click``, after a click on the link whose
    text it is (e.g. a table's link on the landing page). Raises ``FileNotFoundError`` without
    Chromium, ``RuntimeError`` when Chromium fails or writes no image."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("Chromium not found (looked for $SEMISEG_CHROMIUM, " + ", ".join(_NAMES)
                                + "); on Debian/Ubuntu: apt-get install -y chromium")
    report, out = Path(report).resolve(), Path(out).resolve()
    page = report.read_text(encoding="utf-8")
    if show or click:
        # the report's own scripts hold "</body>" in strings: the document's is the last one
        head, tag, tail = page.rpartition("</body>")
        if not tag:
            raise RuntimeError(f"{report}: no </body>; not an HTML report")
        script = _SCRIPT % json.dumps(show) if show else _CLICK % json.dumps(click)
        page = head + script + tag + tail
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="semiseg-browser-") as tmp:
        copy = Path(tmp) / "report.html"
        copy.write_text(page, encoding="utf-8")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--no-default-browser-check", f"--user-data-dir={tmp}/profile",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
               f"--screenshot={out}", copy.as_uri()]
        out.unlink(missing_ok=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{exe} exited with {proc.returncode} and wrote no {out}: {proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semiseg.reporting.browser", description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="the report (snakemake --report report.html), or any HTML page")
    p.add_argument("--show", default=None, help="the result to open, by the end of its path "
                                                "(e.g. results/report/demo.html)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--size", default="1600x1400", help="window size WIDTHxHEIGHT")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    try:
        print(screenshot(args.report, args.out, show=args.show, size=(width, height)))
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
