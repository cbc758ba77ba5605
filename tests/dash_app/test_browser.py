"""The dashboard in headless Chromium: cards, a domain's charts, rankings, comparison
and the fleet's rates.

Screenshots go to ``tests/output/`` (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from werkzeug.serving import make_server

from dash_app.app import create_app
from dash_app.components.axes import MIN_TIME_PAD
from domain_mlflow.metrics.collector import DomainMetricsCollector
from tests.fleet_helpers import seed_fleet
from tests.helpers import open_promotion
from tests.promotion_helpers import FAILING, make_promoter, register_domain_version

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OUTPUT = Path(__file__).parents[1] / "output"
WAIT_SECONDS = 30
# Each domain's runs, oldest first; the newest accuracy is the one its card must show.
DOMAINS = {
    "sql-agent": [0.85, 0.88, 0.912],
    "support.bot": [0.8, 0.74, 0.701],
    "legal_qa-2": [0.63, 0.64, 0.633],
    "med-notes": [0.905],
    "code-review": [0.52, 0.577],
    "travel-faq": [0.77, 0.79, 0.845],
}
PROMOTED = "sql-agent"


def _browser_binaries() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"headless browser tests need {' and '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    _browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--window-size=1400,1000",
                     # A desktop with a mouse: Plotly then shows its toolbar only on hover.
                     "--blink-settings=primaryHoverType=2,availableHoverTypes=2,"
                     "primaryPointerType=4,availablePointerTypes=4",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def seed_domains() -> None:
    """Runs for every domain of DOMAINS, and one promoted version of PROMOTED."""
    mlflow.set_experiment("dashboard-a")
    version = register_domain_version(PROMOTED)
    promoter = make_promoter()
    promoter.request(PROMOTED, int(version.version))
    promoter.process_domain(PROMOTED)
    for index, (domain_id, accuracies) in enumerate(DOMAINS.items()):
        mlflow.set_experiment("dashboard-a" if index % 2 else "dashboard-b")
        for step, accuracy in enumerate(accuracies):
            with mlflow.start_run():
                mlflow.set_tag("domain_id", domain_id)
                mlflow.log_metrics({"accuracy": accuracy, "latency_ms": 30.0 + 5 * step,
                                    "training_loss": 0.5 - 0.05 * step,
                                    "validation_loss": 0.55 - 0.04 * step})
            time.sleep(0.005)  # distinct start times: "newest" must be unambiguous


@contextmanager
def serving(collector: DomainMetricsCollector) -> Iterator[str]:
    """The dashboard over ``collector`` on a free loopback port, for the block."""
    server = make_server("127.0.0.1", 0, create_app(collector).server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def dashboard_url() -> Iterator[str]:
    """The dashboard on a free loopback port, over this test's own MLflow store."""
    seed_domains()
    with serving(DomainMetricsCollector(cache_seconds=0)) as url:
        yield url


def wait_for(driver, selector: str, count: int = 1) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: (found := d.find_elements(By.CSS_SELECTOR, selector)) and
        len(found) >= count and found)


def screenshot(driver, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(OUTPUT / name))


def test_overview_shows_a_card_per_domain_with_its_newest_accuracy(browser, dashboard_url):
    browser.get(dashboard_url + "/")
    cards = wait_for(browser, ".domain-card", count=len(DOMAINS))
    texts = {card.get_attribute("data-domain"): card.text for card in cards}
    assert sorted(texts) == sorted(DOMAINS)
    for domain_id, accuracies in DOMAINS.items():
        assert domain_id in texts[domain_id]
        assert f"accuracy {accuracies[-1]:.3f}" in texts[domain_id]
    promoted = texts[PROMOTED]
    assert "not in production" not in promoted
    assert f"{PROMOTED}-v" in promoted and "last promotion: promote v1" in promoted
    assert "not decided yet" in texts["med-notes"].lower()
    assert "not in production" not in texts["med-notes"]  # said once, by the state
    arrows = browser.find_elements(
        "css selector", f'.domain-card[data-domain="{PROMOTED}"] .trend-improving')
    assert arrows, "sql-agent's accuracy rose: its arrow must say improving"
    link = browser.find_element("css selector",
                                f'.domain-card[data-domain="{PROMOTED}"] a.card-link')
    assert link.get_attribute("href").endswith(f"/domain/{PROMOTED}")
    screenshot(browser, "dashboard-overview.png")

    # A new run shows up on the next refresh tick (the button forces one now).
    with mlflow.start_run():
        mlflow.set_tag("domain_id", "med-notes")
        mlflow.log_metrics({"accuracy": 0.987})
    browser.find_element("css selector", "#refresh-button").click()
    card = '.domain-card[data-domain="med-notes"]'
    assert wait_for(browser, f"{card} .trend-improving")
    assert "accuracy 0.987" in browser.find_element("css selector", card).text


def test_domain_page_draws_its_chart_versions_and_run_links(browser, dashboard_url):
    browser.get(f"{dashboard_url}/domain/{PROMOTED}")
    traces = wait_for(browser, "#metric-chart .js-plotly-plot .scatterlayer .trace path.js-line")
    assert traces
    assert browser.find_elements("css selector", "#metric-chart .main-svg")
    versions = wait_for(browser, "#versions-table td")
    assert any(cell.text == "yes" for cell in versions)
    run_links = wait_for(browser, "a.run-link", count=len(DOMAINS[PROMOTED]))
    assert all("/#/experiments/" in link.get_attribute("href") for link in run_links)
    assert "promote" in browser.find_element("css selector", ".history-table").text
    time.sleep(0.5)  # let Plotly finish its transitions before the picture
    screenshot(browser, "dashboard-domain.png")

    browser.get(f"{dashboard_url}/domain/no-such-domain")
    message = wait_for(browser, ".unknown-domain")[0]
    assert "unknown domain 'no-such-domain'" in message.text


def test_a_promotion_in_flight_shows_beside_production_on_its_card_and_page(
        browser, dashboard_url):
    moving = register_domain_version(PROMOTED)
    open_promotion(moving, "LocalAI answered 503: model is loading")
    expected = (f"in flight moving to v{moving.version} — at approved — error: LocalAI "
                "answered 503: model is loading (1 failed attempt)")
    browser.get(dashboard_url + "/")
    card = f'.domain-card[data-domain="{PROMOTED}"]'
    assert wait_for(browser, f"{card} .in-flight.has-error")[0].text == expected
    text = browser.find_element("css selector", card).text
    assert "last promotion: promote v1" in text  # production is still the first version
    assert moving.tags["model_version"] not in text.replace(expected, "")
    assert len(browser.find_elements("css selector", ".in-flight")) == 1
    screenshot(browser, "dashboard-in-flight.png")

    browser.get(f"{dashboard_url}/domain/{PROMOTED}")
    assert wait_for(browser, ".domain-facts .in-flight")[0].text == expected


def test_rankings_sort_and_compare_draws_bars(browser, dashboard_url):
    browser.get(dashboard_url + "/rankings")
    rows = wait_for(browser, "#rankings-table tbody tr", count=len(DOMAINS) + 1)
    first = rows[1].text  # row 0 holds the headers
    assert "sql-agent" in first and "0.912" in first
    assert "latency (ms)" in rows[0].text and "latency_ms" not in rows[0].text
    screenshot(browser, "dashboard-rankings.png")

    browser.get(dashboard_url + "/compare")
    bars = wait_for(browser, "#compare-accuracy .barlayer .point path", count=5)
    assert len(bars) == 5  # the first five domains are chosen by default
    screenshot(browser, "dashboard-compare.png")


def test_sixty_domains_logged_straight_through_mlflow_each_get_a_card(browser):
    expected = {}
    for index in range(60):
        domain_id = f"d{index:02d}-agent"
        mlflow.set_experiment("other-tool" if index % 2 else "dashboard-a")
        expected[domain_id] = round(0.5 + index / 150, 3)
        with mlflow.start_run():
            mlflow.set_tag("domain_id", domain_id)
            mlflow.log_metrics({"accuracy": expected[domain_id], "latency_ms": 20.0})
    with serving(DomainMetricsCollector()) as url:
        browser.get(f"{url}/")
        cards = wait_for(browser, ".domain-card", count=60)
        texts = {card.get_attribute("data-domain"): card.text for card in cards}
        assert sorted(texts) == sorted(expected)
        for domain_id, accuracy in expected.items():
            assert domain_id in texts[domain_id]
            assert f"accuracy {accuracy:.3f}" in texts[domain_id]
        notice = wait_for(browser, ".store-notice")[0]  # nothing promoted: no store yet
        assert notice.text.endswith(": nothing has been promoted")
        assert "store-error" not in notice.get_attribute("class")
        screenshot(browser, "dashboard-sixty-domains.png")


CURVE_STEPS = {"training_loss": [2.1, 1.7, 1.2, 0.9, 0.7, 0.55, 0.5],
               "validation_loss": [2.0, 1.1, 0.8]}


def log_training_run(domain_id: str, evaluation: dict[str, float] | None = None) -> None:
    """A training run as training logs one: its tags, a loss value per step and the
    ``evaluation`` figures."""
    with mlflow.start_run():
        mlflow.set_tags({"domain_id": domain_id, "training_run_id": f"{domain_id}_20260301_120000"})
        for metric, values in CURVE_STEPS.items():
            for step, value in enumerate(values):
                mlflow.log_metric(metric, value, step=step * 10)
        mlflow.log_metrics(evaluation or {})


@pytest.fixture
def fleet_url() -> Iterator[tuple[str, object]]:
    """The dashboard over tests/fleet_helpers.py's fleet and one training run of "curves"."""
    fleet = seed_fleet()
    log_training_run("curves")
    with serving(DomainMetricsCollector(cache_seconds=0)) as url:
        yield url, fleet


def _cell(row, column: str) -> str:
    return row.find_element("css selector", f'td[data-dash-column="{column}"]').text


def test_fleet_page_shows_each_domains_rates_the_time_to_live_and_the_approval_queue(
        browser, fleet_url):
    url, fleet = fleet_url
    browser.get(f"{url}/fleet")
    rows = wait_for(browser, "#fleet-table tbody tr", count=5)[1:]  # row 0: the headers
    shown = {_cell(row, "domain"): row for row in rows}
    assert sorted(shown) == ["alpha", "beta", "curves", "gamma"]
    assert [_cell(shown["alpha"], c) for c in ("gate_hit_rate", "passed", "decided",
                                               "failing_thresholds", "success_rate",
                                               "started")] == \
        ["67%", "2", "3", "accuracy 1, training_loss 1", "100%", "3"]
    assert [_cell(shown["beta"], c) for c in ("gate_hit_rate", "success_rate",
                                              "reached_all_targets", "started", "retries",
                                              "awaiting_now")] == \
        ["100%", "33%", "1", "3", "1", "1"]
    assert float(_cell(shown["beta"], "live_median_min")) == pytest.approx(120, abs=2)
    assert float(_cell(shown["beta"], "approval_median_min")) == pytest.approx(30, abs=2)
    assert [_cell(shown["gamma"], c) for c in ("gate_hit_rate", "decided", "success_rate")] \
        == ["—", "0", "—"]
    assert "gate hit rate 86% (6 of 7 decided passed); failing: accuracy 1, training_loss 1" \
        in browser.find_element("css selector", "#fleet-rates").text
    assert "active" in browser.find_element("css selector", "#nav-fleet").get_attribute("class")

    # Every version that went live is a point: alpha's three and beta's one.
    assert len(wait_for(browser, "#time-to-live-chart .boxlayer .points path.point",
                        count=4)) == 4

    [queued] = wait_for(browser, ".approval-queue tbody tr")
    waiting = fleet.beta[2]
    text = queued.text
    assert text.startswith(f"beta v3 · {waiting.tags['model_version']} "
                           f"{waiting.tags['semver']} ")
    assert "accuracy 0.93 >= minimum 0.85" in text
    assert "domain-mlflow approve beta --version 3 --by NAME" in text
    link = queued.find_element("css selector", "a.version-link")
    assert link.get_attribute("href").endswith("/#/models/domain.beta/versions/3")
    screenshot(browser, "dashboard-fleet.png")

    # Sorted by deployment success, lowest first: beta (33%) comes before alpha (100%).
    browser.find_element("css selector",
                         'th[data-dash-column="success_rate"] .column-header--sort').click()
    order = [_cell(row, "domain") for row in
             browser.find_elements("css selector", "#fleet-table tbody tr")[1:]]
    assert order.index("beta") < order.index("alpha")


def test_domain_page_draws_each_logged_loss_step_and_the_production_semver(
        browser, fleet_url):
    url, fleet = fleet_url
    browser.get(f"{url}/domain/curves")
    panels = {"training_loss": "g.subplot.xy", "validation_loss": "g.subplot.x2y2"}
    for metric, panel in panels.items():
        points = wait_for(browser, f"#loss-chart {panel} .scatterlayer .trace .points path.point",
                          count=len(CURVE_STEPS[metric]))
        assert len(points) == len(CURVE_STEPS[metric]), metric
    traces = browser.execute_script(
        "return document.querySelector('#loss-chart .js-plotly-plot').data"
        ".map(t => [t.meta, t.name, t.y]);")
    assert traces == [[metric, "curves_20260301_120000", values]
                      for metric, values in CURVE_STEPS.items()]
    browser.execute_script("document.getElementById('loss-chart').scrollIntoView();")
    time.sleep(0.5)  # let Plotly finish its transitions before the picture
    screenshot(browser, "dashboard-loss-curves.png")

    browser.get(f"{url}/domain/alpha")
    production = fleet.alpha[0]  # rolled back to v1
    facts = wait_for(browser, ".domain-facts")[0].text
    assert f"production {production.tags['model_version']} ({production.tags['semver']})" \
        in facts


def test_each_card_states_the_domains_decision_in_words(browser, dashboard_url):
    rejected = register_domain_version("vector-agent", FAILING)
    promoter = make_promoter()
    promoter.request("vector-agent", int(rejected.version))
    promoter.process_domain("vector-agent")
    browser.get(dashboard_url + "/")
    wait_for(browser, ".domain-card", count=len(DOMAINS) + 1)
    card = browser.find_element("css selector", '.domain-card[data-domain="vector-agent"]')
    state = card.find_element("css selector", ".card-state")
    assert "state-rejected" in state.get_attribute("class")
    assert state.text.lower().startswith("rejected version 1: accuracy 0.15 < minimum 0.85")
    production = browser.find_element(
        "css selector", f'.domain-card[data-domain="{PROMOTED}"] .card-state')
    assert "state-in-production" in production.get_attribute("class")
    assert production.text.lower().startswith("in production version 1 1.0.0")
    undecided = browser.find_element(
        "css selector", '.domain-card[data-domain="med-notes"] .card-state')
    assert undecided.text.lower().startswith("not decided yet")
    screenshot(browser, "dashboard-card-states.png")


def _card_arrow(driver, domain_id: str, metric: str):
    return driver.find_element(
        "css selector",
        f'.domain-card[data-domain="{domain_id}"] .metric-line[data-metric="{metric}"] .trend')


def test_cards_name_metrics_in_words_and_arrows_show_the_values_way_and_whether_better(
        browser, dashboard_url):
    browser.get(dashboard_url + "/")
    cards = wait_for(browser, ".domain-card", count=len(DOMAINS))
    for card in cards:
        for words, key in (("latency (ms)", "latency_ms"), ("training loss", "training_loss"),
                           ("validation loss", "validation_loss")):
            assert words in card.text and key not in card.text, card.text
    # support.bot's training loss fell from a mean of 0.475 to 0.4 (16%): lower is better.
    loss = _card_arrow(browser, "support.bot", "training_loss")
    assert loss.text == "↓" and "trend-better" in loss.get_attribute("class")
    assert loss.get_attribute("title") == \
        "training loss went down 16% against the runs before — better"
    # Its latency rose from a mean of 32.5 ms to 40 ms (23%).
    latency = _card_arrow(browser, "support.bot", "latency_ms")
    assert latency.text == "↑" and "trend-worse" in latency.get_attribute("class")
    assert latency.get_attribute("title") == \
        "latency went up 23% against the runs before — worse"
    accuracy = _card_arrow(browser, "support.bot", "accuracy")
    assert accuracy.text == "↓" and "trend-worse" in accuracy.get_attribute("class")
    lone = _card_arrow(browser, "med-notes", "accuracy")  # one run: no trend
    assert lone.text == "·"
    assert lone.get_attribute("title") == "accuracy: not enough runs for a trend (it needs two)"
    legend = browser.find_element("css selector", ".trend-legend").text
    assert "better" in legend and "worse" in legend and "not enough runs for a trend" in legend
    screenshot(browser, "dashboard-card-trends.png")


# The figure as Plotly drew it: per trace its points, per axis its range (as numbers,
# dates in milliseconds), the threshold and promotion lines, the x tick labels.
READ_CHART = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const L = gd._fullLayout;
const axis = (ref) => L[ref[0] + 'axis' + ref.replace(' domain', '').slice(1)];
const range = (ax) => ax.range.map((v) => ax.d2l(v));
return {
  traces: gd._fullData.filter((t) => t.meta).map((t) => ({
    metric: t.meta, x: Array.from(t.x, (v) => axis(t.xaxis).d2l(v)), y: Array.from(t.y),
    xrange: range(axis(t.xaxis)), yrange: range(axis(t.yaxis))})),
  vlines: L.shapes.filter((s) => s.yref.endsWith('domain')).map((s) => ({
    x: axis(s.xref).d2l(s.x0), xrange: range(axis(s.xref))})),
  thresholds: L.shapes.filter((s) => s.xref.endsWith('domain')).map((s) => ({
    y: s.y0, yrange: range(axis(s.yref))})),
  notes: L.annotations.map((a) => a.text),
  ticks: Array.from(gd.querySelectorAll('.xaxislayer-above text'), (t) => t.textContent),
};
"""


def read_chart(driver, graph_id: str) -> dict:
    return driver.execute_script(READ_CHART, graph_id)


def assert_everything_inside(chart: dict) -> None:
    """Every point inside its panel's ranges, every line inside the range it crosses."""
    for trace in chart["traces"]:
        (left, right), (bottom, top) = trace["xrange"], trace["yrange"]
        for x, y in zip(trace["x"], trace["y"], strict=True):
            assert left < x < right and (y is None or bottom < y < top), (trace["metric"], x, y)
    for line in chart["vlines"]:
        assert line["xrange"][0] < line["x"] < line["xrange"][1]
    for line in chart["thresholds"]:
        assert line["yrange"][0] < line["y"] < line["yrange"][1]


def test_domain_chart_holds_every_point_threshold_and_promotion_by_time_and_by_version(
        browser, dashboard_url):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{dashboard_url}/domain/{PROMOTED}")
    runs = len(DOMAINS[PROMOTED]) + 1  # and the run of the promoted version, the oldest
    wait_for(browser, "#metric-chart .scatterlayer .trace .points path.point", count=4 * runs)
    by_time = read_chart(browser, "metric-chart")
    assert [len(t["x"]) for t in by_time["traces"]] == [runs] * 4
    assert len(by_time["vlines"]) == 4  # the promotion, in each panel
    # Three thresholds drawn to scale; latency's 500 ms is named instead (runs: 30-40 ms).
    assert len(by_time["thresholds"]) == 3
    assert "threshold 500.0 ms: far above every run" in by_time["notes"]
    assert_everything_inside(by_time)
    assert browser.find_elements("css selector", "#metric-chart .modebar.modebar--hover")
    assert by_time["ticks"] and not any(re.search(r":\d\d\.\d", t) for t in by_time["ticks"])
    left, right = by_time["traces"][0]["xrange"]
    assert right - left >= 2 * MIN_TIME_PAD.total_seconds() * 1000
    time.sleep(0.5)  # let Plotly finish its transitions before the picture
    screenshot(browser, "dashboard-domain-by-time.png")

    browser.find_element("css selector", "#metric-x-axis input[value='version']").click()
    labels = ["v1", *(f"run {n}" for n in range(2, runs + 1))]
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: read_chart(d, "metric-chart")["ticks"][:runs] == labels)
    by_version = read_chart(browser, "metric-chart")
    assert [line["x"] for line in by_version["vlines"]] == [1] * 4  # v1's run, in each panel
    assert_everything_inside(by_version)
    time.sleep(0.5)
    screenshot(browser, "dashboard-domain-by-version.png")


def test_a_domain_with_one_run_leads_with_its_loss_curves_and_keeps_its_point_in_range(
        browser):
    log_training_run("solo-agent", {"accuracy": 0.95, "latency_ms": 42.0})
    with serving(DomainMetricsCollector(cache_seconds=0)) as url:
        browser.get(f"{url}/domain/solo-agent")
        steps = len(CURVE_STEPS["training_loss"])
        points = wait_for(browser, "#loss-chart g.subplot.xy .scatterlayer .trace .points "
                          "path.point", count=steps)
        assert len(points) == steps
        assert browser.find_element("css selector", "#loss-chart-title").text == \
            "Loss curves of its one run"
        top = "return document.getElementById(arguments[0]).getBoundingClientRect().top;"
        assert browser.execute_script(top, "loss-chart-wrap") < \
            browser.execute_script(top, "domain-chart-wrap")
        wait_for(browser, "#metric-chart .scatterlayer .trace .points path.point", count=4)
        chart = read_chart(browser, "metric-chart")
        accuracy, latency = chart["traces"][:2]
        bottom, top_of_axis = accuracy["yrange"]
        assert bottom < 0.85 < 0.95 < top_of_axis  # the gate's default minimum and the run
        low, high = latency["yrange"]
        assert low < 42 < high and high - low < 42  # not squashed under a 500 ms threshold
        assert "threshold 500.0 ms: far above every run" in chart["notes"]
        assert_everything_inside(chart)
        time.sleep(0.5)
        screenshot(browser, "dashboard-one-run.png")


def test_compare_keeps_one_domain_order_and_colour_in_every_chart_and_names_no_traffic(
        browser, dashboard_url):
    browser.get(dashboard_url + "/compare")
    wait_for(browser, "#compare-accuracy .barlayer .point path", count=5)
    wait_for(browser, "#compare-error-rate .js-plotly-plot")
    read = ("return Array.from(document.querySelector('#' + arguments[0] + "
            "' .js-plotly-plot').data, (t) => [t.x, t.marker.color, t.customdata]);")
    chosen = sorted(DOMAINS)[:5]
    bars = {metric: browser.execute_script(read, f"compare-{metric.replace('_', '-')}")
            for metric in ("accuracy", "latency_ms", "training_loss", "validation_loss")}
    [[_, colors, _]] = bars["accuracy"]
    for metric, [[domains, metric_colors, _]] in bars.items():
        assert (domains, metric_colors) == (chosen, colors), metric
    assert len(set(colors)) == len(chosen)
    [[_, _, ranks]] = bars["accuracy"]
    assert ranks[chosen.index("sql-agent")] == "ranked 1 of 5"  # 0.912, the highest
    assert "best: sql-agent" in browser.find_element("css selector", "#compare-accuracy").text
    [[_, _, places]] = bars["training_loss"]  # 0.4 for three of them: they share the top
    assert places == ["ranked 4 of 5", "ranked 1 of 5", "ranked 5 of 5", "ranked 1 of 5",
                      "ranked 1 of 5"]
    assert "best: legal_qa-2, sql-agent, support.bot (tied)" in \
        browser.find_element("css selector", "#compare-training-loss").text
    for graph in ("compare-requests", "compare-error-rate"):
        assert browser.execute_script(read, graph) == []
        assert "no traffic yet" in browser.find_element("css selector", f"#{graph}").text
    browser.execute_script("document.getElementById('compare-requests').scrollIntoView();")
    time.sleep(0.5)
    screenshot(browser, "dashboard-compare-no-traffic.png")


CANARY = "canary-agent"


@pytest.fixture
def canary_url(localai) -> Iterator[tuple[str, int]]:
    """CANARY in production at version 1, a canary of version 2 past its first step (10%)
    and at 50%, with traffic on both steps; the dashboard over it."""
    from domain_mlflow.promotion import rollout
    from domain_mlflow.promotion.monitor import Monitor
    from tests.promotion.test_rollout_figures import send

    promoter = make_promoter()
    first = register_domain_version(CANARY)
    promoter.run(promoter.request(CANARY, int(first.version)))
    second = register_domain_version(CANARY)
    localai.behave(second.tags["model_version"], error_rate=0.05)
    localai.behave(first.tags["model_version"], error_rate=0.05)
    started = rollout.start(promoter, CANARY, int(second.version),
                            rollout.canary_plan([10, 50, 100], 0, 20), kind="canary")
    send(300, domain_id=CANARY)
    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert decided["decision"] == "next"
    for burst in range(3):
        time.sleep(1.0)  # the series spans a few buckets
        send(60, start=300 + 60 * burst, domain_id=CANARY)
    with serving(DomainMetricsCollector(cache_seconds=0)) as url:
        yield url, started["id"]


def test_a_canary_marks_its_card_and_its_page_shows_the_arms_figures_and_decisions(
        browser, canary_url):
    from tests.promotion.test_rollout_figures import stored_arms

    url, rollout_id = canary_url
    browser.get(url + "/")
    mark = wait_for(browser, f'.domain-card[data-domain="{CANARY}"] .card-rollout')[0]
    assert mark.text == "canary 50% → version 2 (step 2 of 3)"
    card = browser.find_element("css selector", f'.domain-card[data-domain="{CANARY}"]')
    assert "has-rollout" in card.get_attribute("class")
    screenshot(browser, "dashboard-canary-card.png")

    browser.get(f"{url}/domain/{CANARY}")
    rows = wait_for(browser, "#rollout-arms tbody tr", count=2)
    step_started = make_promoter().store.get_rollout(rollout_id).step_started_at
    stored = stored_arms(rollout_id, since=step_started)
    for row in rows:
        arm = row.get_attribute("data-arm")
        cell = {c.get_attribute("data-column"): c.text
                for c in row.find_elements("css selector", "td")}
        assert (cell["requests"], cell["errors"], cell["rated"]) == (
            str(stored[arm]["requests"]), str(stored[arm]["errors"]), str(stored[arm]["rated"]))
        assert cell["error_rate"] == f"{stored[arm]['errors'] / stored[arm]['requests']:.1%}"
        assert cell["share"] == "50%"  # at 50%, each arm takes half
    assert sum(stored[arm]["requests"] for arm in stored) == 180

    wait_for(browser, "#rollout-chart .scatterlayer .trace")
    traces = browser.execute_script(
        "return document.querySelector('#rollout-chart .js-plotly-plot').data"
        ".filter(t => t.meta).map(t => [t.meta, t.y]);")
    everything = stored_arms(rollout_id)
    by_meta = dict(traces)
    assert sorted(by_meta) == sorted(f"{arm}:{metric}" for arm in ("production", "candidate")
                                     for metric in ("requests", "error_rate", "latency_p95_ms",
                                                    "quality"))
    for arm in ("production", "candidate"):
        assert sum(by_meta[f"{arm}:requests"]) == everything[arm]["requests"]
    decisions = browser.find_element("css selector", ".rollout-decisions").text
    assert "step 1 at 10%: next_step" in decisions and "not worse than production" in decisions
    checks = browser.find_elements("css selector", ".rollout-decisions .rollout-checks tbody tr")
    assert [row.text.split()[0] for row in checks] == ["error_rate", "latency_p95_ms",
                                                       "quality"]
    browser.execute_script("document.getElementById('rollout-section').scrollIntoView();")
    time.sleep(0.5)  # let Plotly finish its transitions before the picture
    screenshot(browser, "dashboard-canary.png")
    browser.execute_script("document.getElementById('rollout-chart').scrollIntoView();")
    time.sleep(0.5)
    screenshot(browser, "dashboard-canary-chart.png")


def _no_constant(name: str) -> None:
    raise AssertionError(f"the API answered {name}: not JSON")


def test_the_api_carries_a_canarys_figures_and_its_mark(canary_url):
    from tests.promotion.test_rollout_figures import stored_arms

    url, rollout_id = canary_url
    with urllib.request.urlopen(f"{url}/api/metrics?domain_id={CANARY}", timeout=30) as answer:
        found = json.loads(answer.read(), parse_constant=_no_constant)["rollout"]
    step_started = make_promoter().store.get_rollout(rollout_id).step_started_at
    stored = stored_arms(rollout_id, since=step_started)
    assert {arm: found["arms"][arm]["requests"] for arm in stored} == \
        {arm: figures["requests"] for arm, figures in stored.items()}
    assert [d["decision"] for d in found["decisions"]] == ["next_step"]
    with urllib.request.urlopen(f"{url}/api/metrics", timeout=30) as answer:
        [summary] = json.loads(answer.read(), parse_constant=_no_constant)["domains"]
    assert (summary["rollout"]["kind"], summary["rollout"]["percent"]) == ("canary", 50.0)
