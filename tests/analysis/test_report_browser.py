"""The report in a real browser: headless chromium (Debian's package) at a phone's width and a desktop's.

A probe page frames the report at that width and, on its load event (every figure loaded), measures it and
writes the numbers into its own DOM; chromium's --dump-dom prints that DOM once the page has loaded.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.report import write_report
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_power_table, synthetic_table
from powersweep.analysis.table import load_table

CHROMIUM = "/usr/bin/chromium"  # apt-get install chromium
PHONE, DESKTOP = 390, 1280  # viewport widths (CSS px)
MIN_SCALE = 0.75  # a figure shown at 0.75 of its size shows its 10 pt labels at 10 px

# The report in a frame as wide as the screen (headless chromium keeps its own window at least 500 px wide);
# on the outer page's load event, which waits for the frame's and its figures', the probe measures the
# report and writes the numbers into the outer page.
PROBE = """<!doctype html><html><body style='margin:0'>
<iframe id='report' src='index.html' style='width:WIDTHpx;height:844px;border:0'></iframe>
<script>
window.addEventListener('load', () => {
  const view = document.getElementById('report').contentWindow, doc = view.document;
  const root = doc.documentElement, right = root.clientWidth + 0.5;
  const images = [...doc.images].map(i => ({
    src: i.currentSrc.split('/').pop(), alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
    natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
  const sticking_out = [...doc.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > right && !e.closest('.scroll'))
    .map(e => e.tagName + ': ' + e.textContent.slice(0, 60));
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    viewport: view.innerWidth, client: root.clientWidth, scroll: root.scrollWidth, lang: root.lang,
    meta: (doc.querySelector('meta[name=viewport]') || {}).content || null,
    text: doc.body.innerText, images, sticking_out});
  document.body.append(probe);
});
</script></body></html>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    grid = SweepGrid(
        models=(("12M", 12e6), ("36M", 36e6)),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64, 128, 256),
        lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
    )
    table = pd.concat(
        [
            synthetic_table(PlantedLaw(), grid, seed=1),
            synthetic_power_table(tokens=(8e9, 32e9), batch_sizes=(64,), seed=2),
        ]
    )
    out = tmp_path_factory.mktemp("report")
    return write_report(load_table(table), out, n_boot=100)


def render(report, width: int) -> dict:
    """What the probe measured with the page loaded in a window ``width`` px wide."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: apt-get install chromium")
    page = report.index_html.with_name(f"probe-{width}.html")  # beside index.html
    page.write_text(PROBE.replace("WIDTH", str(width)), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    # file access: the probe reads the framed report (file: pages are each their own origin otherwise)
    command += [
        "--allow-file-access-from-files",
        f"--window-size={width + 20},900",
        "--dump-dom",
        page.as_uri(),
    ]
    # the timeout only bounds a hung browser: the dump comes when the page's load event has run
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no probe in chromium's DOM (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found[1]))


@pytest.fixture(scope="module", params=[PHONE, DESKTOP], ids=["phone", "desktop"])
def measured(request, report) -> dict:
    return render(report, request.param)


def test_the_page_declares_its_language_and_a_device_width_viewport(measured):
    assert measured["lang"] == "en"
    assert "width=device-width" in measured["meta"]


def test_the_page_never_scrolls_sideways(measured):
    assert measured["viewport"] == measured["client"] == measured["scroll"]
    assert measured["sticking_out"] == []  # wide tables scroll inside their own box, long lines wrap


def test_every_figure_is_shown_at_a_legible_scale(measured, report):
    images = measured["images"]
    assert len(images) == len(report.figures)
    for image in images:
        assert image["loaded"], image["src"]
        assert image["shown"] <= measured["client"]
        assert image["shown"] / image["natural"] >= MIN_SCALE, image
    narrow = measured["viewport"] == PHONE  # the one-column layout on the phone, the wide one on the desktop
    assert {image["src"].endswith("-narrow.svg") for image in images} == {narrow}
    assert all(image["src"].endswith(".svg") for image in images)


def test_every_figure_says_what_it_shows(measured):
    for image in measured["images"]:
        alt = image["alt"]
        assert not re.search(r"\.(png|svg)$|^fig\d", alt), alt
        assert len(alt.split()) >= 8, alt


def test_no_literal_backticks(measured):
    assert "`" not in measured["text"]
