"""The Prefect UI as a person uses it, in a real (headless) Chromium.

- a deployment of the generate flow: its page, Run > Custom run, the parameter form filled in
  (text fields, a list, and a value picked from each dropdown: stage, backend, image size, aspect
  ratio, format), Submit; a worker runs it; the flow run's Artifacts tab shows the progress at
  100 %, a results table listing every job, and a contact sheet that loads;
- a ``promote`` run with ``approve: ask`` pauses; in the browser: the paused run, Resume, two
  of the three images ticked, Submit; exactly those two are rendered on Vertex and promoted.

Screenshots go to ``BANANAFLOW_SCREENSHOTS`` (default ``tests/.screenshots``); what the UI showed
that the product should fix is appended to ``observations.txt`` there. Skips when Chromium or
Playwright is missing, except under ``CI=true`` where it fails.

The deployments are made with their own names on their own work pool (same flows, same pull
step as deployments/prefect.yaml), so on the run's shared server they neither take runs of
the team tests' pool nor fire the promote automation of ``generate-dev``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bananaflow.manifest import read_manifest
from bananaflow.storage import Store

if TYPE_CHECKING:
    from fixtures.postgres import TeamServer

UI_TIMEOUT_MS = 60_000  # per DOM wait (as fixtures.browser): generous on a busy 2-core machine
pytest_plugins = ["fixtures.postgres", "fixtures.browser"]
pytestmark = pytest.mark.team

RUN_TIMEOUT_S = 240  # hang guard for a run a worker executes, not a timing assertion
DROPDOWNS = {  # form field title -> the value to pick
    "Stage": "dev",
    "Backend": "aistudio",
    "Image Size": "1K",
    "Aspect Ratio": "4:3",
    "Format": "jpeg",
}
PROMPTS = ["a red kite over dunes", "a green kite over a lake", "a blue kite over snow"]


@dataclass
class UiDeployments:
    server: TeamServer
    generate: str  # deployment ids
    promote: str
    pool: str


@pytest.fixture(scope="module")
def ui_team(
    ui_server: TeamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiDeployments]:
    """The generate and promote flows deployed under names of their own, and one process
    worker on their own pool (its own working directory, PREFECT_HOME and TMPDIR)."""
    tag = uuid.uuid4().hex[:8]
    pool = f"ui-pool-{tag}"
    generate = ui_server.deploy_as("generate-dev", f"ui-gen-{tag}", pool)
    promote = ui_server.deploy_as("promote", f"ui-promote-{tag}", pool)
    ui_server.start_worker(f"ui-worker-{tag}", tmp_path_factory.mktemp("ui-worker"), pool=pool)
    try:
        yield UiDeployments(ui_server, generate, promote, pool)
    finally:
        ui_server.stop_workers()


# ------------------------------------------------------------------ helpers


def field(page: Any, title: str) -> Any:
    """The schema-form property whose label is ``title`` (``… (Optional)`` too)."""
    label = page.locator(
        "span.schema-form-property__label",
        has_text=re.compile(rf"^\s*{re.escape(title)}( \(Optional\))?\s*$"),
    )
    return label.locator(
        "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '),"
        " ' schema-form-property ')][1]"
    )


def pick(page: Any, title: str, value: str, observe: Any) -> None:
    """Choose ``value`` in the dropdown of field ``title``.

    Works on a plain enum dropdown, and on today's ``str | None`` fields, which show a
    ``str``/``None`` toggle first (preset to None) and the dropdown only once ``str`` is chosen.
    """
    prop = field(page, title)
    choose_branch(prop, "str", title, observe)
    control = prop.locator(".p-select-button__control").first
    control.wait_for()
    before = prop.locator(".p-select-button__value").first.inner_text().strip()
    if before:
        observe(f"{title}: dropdown preset to {before!r}")
    # A mouse click on this p-select (prefect-design) opens and at once closes its list in
    # headless Chromium; the keyboard opens it reliably, as a keyboard user would.
    control.focus()
    control.press("ArrowDown")
    page.get_by_role("option", name=value, exact=True).click()
    expect(prop.locator(".p-select-button__value").first).to_have_text(value)


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=UI_TIMEOUT_MS)
    return pw_expect(locator)


def choose_branch(prop: Any, branch: str, title: str, observe: Any) -> None:
    """On an ``X | None`` field (a toggle of its types), choose ``branch``; no-op without one."""
    toggle = prop.locator(".p-button-group").first
    if not toggle.count():
        return
    chosen = toggle.locator("button[aria-selected=true]").inner_text().strip()
    if chosen != branch:
        branches = [b.strip() for b in toggle.locator("button").all_inner_texts()]
        observe(f"{title}: a {' | '.join(branches)} toggle preset to {chosen}")
        toggle.get_by_role("button", name=branch, exact=True).click()


OOPS_JS = """() => [...document.querySelectorAll('.p-toast-container')]
    .reduce((n, c) => n + (c.innerText.match(/Something went wrong/g) || []).length, 0)"""


def submit(page: Any, button: Any, done_js: str, what: str, observe: Any, tries: int = 3) -> None:
    """Click ``button`` until the UI shows ``done_js`` (a JS expression). When the server
    answers an error instead, the UI only says "Oops. Something went wrong." and keeps the form;
    a person clicks again, and so does this (a Prefect server on SQLite answers 503, "database
    is locked", when several writers meet: seen on Resume while the paused run polls)."""
    for _ in range(tries):
        before = page.evaluate(OOPS_JS)
        button.click()
        page.wait_for_function(
            f"before => ({done_js}) || ({OOPS_JS})() > before", arg=before, timeout=UI_TIMEOUT_MS
        )
        if page.evaluate(f"() => {done_js}"):
            return
        observe(f"{what}: the UI showed 'Oops. Something went wrong.' (see the server's log); "
                "submitted again")  # fmt: skip
    pytest.fail(f"{what}: the server refused it {tries} times")


def wait_run(server: TeamServer, flow_run_id: str, states: set[str]) -> dict[str, Any]:
    """Poll the API until the run's state type is one of ``states`` (or final: then assert)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = server.api("GET", f"/flow_runs/{flow_run_id}")
        state = run["state"]["type"] if run.get("state") else None
        if state in states:
            return run
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        assert state not in final, (state, run["state"].get("message"))
        assert time.monotonic() < deadline, f"{run['name']} still {state}"
        time.sleep(1)


def runs_of(server: TeamServer, deployment_id: str) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_DESC"}
    return server.api("POST", "/flow_runs/filter", json=body)


def open_artifacts_tab(page: Any, ui: str, flow_run_id: str, observe: Any | None = None) -> None:
    """The flow run's Artifacts tab, the way that works in Prefect 3.9's UI: open the run,
    then click the tab. The deep link ``?tab=Artifacts`` lands on Logs (the tab list is built
    after the run loads, and the unknown-yet tab falls back to the first one)."""
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}?tab=Artifacts")
    tabs = page.locator("ul.p-tab-navigation li.p-tab")
    expect(tabs.filter(has_text="Artifacts")).to_be_visible()
    if observe is not None:
        active = page.locator("li.p-tab.p-tab__active").inner_text().strip()
        if active != "Artifacts":
            observe(f"?tab=Artifacts opened the {active!r} tab (url now {page.url})")
    page.locator("li.p-tab#artifacts").click()
    expect(page.locator("li.p-tab.p-tab__active")).to_have_text("Artifacts")


def open_artifact(page: Any, ui: str, flow_run_id: str, key: str) -> None:
    open_artifacts_tab(page, ui, flow_run_id)
    page.locator(".artifact-card__title", has_text=re.compile(rf"^\s*{key}\s*$")).click()
    page.wait_for_url(re.compile(r"/artifacts/artifact/"))
    expect(page.locator("nav.p-bread-crumbs")).to_contain_text(key)


# ------------------------------------------------------------------ the custom run form


def test_custom_run_from_the_form_and_its_artifacts(
    ui_team: UiDeployments, page: Any, shoot: Any, observe: Any, emu: Any, tmp_path: Path
) -> None:
    from fixtures.postgres import write_emulator_config

    server, ui = ui_team.server, ui_team.server.ui_url
    out = f"file://{tmp_path}/out"
    config = write_emulator_config(emu, tmp_path, out)

    page.goto(f"{ui}/deployments/deployment/{ui_team.generate}")
    run_button = page.get_by_role("button", name="Run", exact=True)
    expect(run_button).to_be_visible()
    shoot(page, "deployment")
    run_button.click()
    page.get_by_role("button", name="Custom run").click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+/run"))
    params = field(page, "params")
    expect(params).to_be_visible()
    choose_branch(params, "GenerateParameters", "params", observe)
    expect(field(page, "Config")).to_be_visible()
    shoot(page, "custom-run-form")
    _observe_field_order(page, observe)

    field(page, "Config").locator("textarea, input").first.fill(config)
    choose_branch(field(page, "Batch File"), "None", "Batch File", lambda note: None)
    items = field(page, "Prompts").locator("textarea, input[type=text]")
    for n, text in enumerate(PROMPTS):
        field(page, "Prompts").get_by_role("button", name="Add item").click()
        expect(items).to_have_count(n + 1)  # the new item is there before it is typed into
        items.nth(n).fill(text)
    for n, text in enumerate(PROMPTS):
        expect(items.nth(n)).to_have_value(text)
    for title, value in DROPDOWNS.items():
        pick(page, title, value, observe)
    expect(page.get_by_role("option")).to_have_count(0)  # every dropdown list closed
    shoot(page, "form-filled")
    submit(
        page,
        page.get_by_role("button", name="Submit", exact=True),
        "document.body.innerText.includes('scheduled to start')",
        "custom run Submit",
        observe,
    )
    toast = page.locator(".p-toast-container").filter(has_text="scheduled to start").last
    expect(toast).to_be_visible()

    (run,) = runs_of(server, ui_team.generate)  # the deployment is this test's own
    expect(toast).to_contain_text(run["name"])
    toast.get_by_role("button", name="View run").click()  # the toast's link to the new run
    expect(page.locator(".page-heading")).to_contain_text(run["name"])
    params = run["parameters"]["params"]
    assert params["config"] == config and params["prompts"] == PROMPTS
    assert {k: params[k] for k in ("stage", "backend", "image_size", "aspect_ratio", "format")} == {
        "stage": "dev",
        "backend": "aistudio",
        "image_size": "1K",
        "aspect_ratio": "4:3",
        "format": "jpeg",
    }
    run = wait_run(server, run["id"], {"COMPLETED"})
    assert emu.control.stats()["generation_requests"] == {"aistudio": 3, "vertex": 0}
    store = Store(out)
    (run_id,) = [r for r in _run_ids(store) if r.endswith("-" + run["id"][:8])]
    rows = read_manifest(store, run_id)
    assert sorted(r.prompt for r in rows) == sorted(PROMPTS)
    assert {(r.status, r.aspect_ratio, r.format) for r in rows} == {("uploaded", "4:3", "jpeg")}

    open_artifacts_tab(page, ui, run["id"], observe)
    expect(
        page.locator(".artifact-card__title", has_text="bananaflow-contact-sheet")
    ).to_be_visible()
    shoot(page, "artifacts-tab")

    open_artifact(page, ui, run["id"], "bananaflow-progress")
    expect(page.locator(".artifact-data-progress")).to_have_text(re.compile(r"Progress:\s*100\s*%"))
    shoot(page, "progress")

    open_artifact(page, ui, run["id"], "bananaflow-results")
    table = page.locator(".artifact-data-view table")
    expect(table.locator("tbody tr")).to_have_count(len(rows))
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    cells = [
        [c.strip() for c in tr.locator("td").all_inner_texts()]
        for tr in table.locator("tbody tr").all()
    ]
    listed = {dict(zip(headers, c, strict=True))["job"] for c in cells}
    assert listed == {r.job_id for r in rows}
    uris = {dict(zip(headers, c, strict=True))["uri"] for c in cells}
    assert uris == {r.uri for r in rows}  # in the DOM in full ...
    _observe_cut_off_columns(page, table, headers, observe)  # ... but is it visible?
    shoot(page, "results-table")

    open_artifact(page, ui, run["id"], "bananaflow-contact-sheet")
    img = page.locator(".artifact-data-image img")
    expect(img).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.evaluate("img => img.naturalWidth") > 0
    link = page.locator(".artifact-data-image a")
    if link.count() and (link.inner_text().startswith("data:") or _overflows(link)):
        observe(
            "contact sheet: the image's 'Image URL' is printed as a link holding the whole "
            f"{len(link.inner_text()):,}-character data: URI, running off the page"
        )
    shoot(page, "contact-sheet")


def _observe_field_order(page: Any, observe: Any) -> None:
    """The form lists fields in the order of the schema the server hands back. PostgreSQL
    stores it as JSONB, which re-orders object keys (shortest first); the UI keeps the model's
    order only for properties that carry a ``position``."""
    from fixtures.postgres import import_flow

    schema = import_flow("generate_images").parameters.model_dump()
    refs = [a["$ref"] for a in schema["properties"]["params"].get("anyOf", []) if "$ref" in a]
    model = schema["definitions"][refs[0].rsplit("/", 1)[1]]  # the `params` model
    declared = [p.get("title", k) for k, p in model["properties"].items()]
    shown = [
        t.strip().removesuffix("(Optional)").strip()
        for t in field(page, "params").locator("span.schema-form-property__label").all_inner_texts()
    ][1:]  # the first label is params itself
    if shown != declared[: len(shown)]:
        observe(f"form field order {shown} differs from the model's {declared}")


def _run_ids(store: Store) -> set[str]:
    return {p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2}


def _overflows(locator: Any) -> bool:
    return bool(locator.evaluate("e => e.scrollWidth > e.parentElement.clientWidth + 1"))


def _observe_cut_off_columns(page: Any, table: Any, headers: list[str], observe: Any) -> None:
    """Which columns end beyond what the table's box shows (and whether it can scroll)."""
    info = table.evaluate(
        """t => {
            let box = t.parentElement;
            while (box && box.clientWidth >= t.scrollWidth && box !== document.body) {
                box = box.parentElement;
            }
            box = box || t.parentElement;
            const right = box.getBoundingClientRect().right;
            const style = getComputedStyle(box);
            return {
                hidden: [...t.querySelectorAll('thead th')]
                    .filter(th => th.getBoundingClientRect().right > right + 1)
                    .map(th => th.innerText.trim()),
                scrolls: ['auto', 'scroll'].includes(style.overflowX),
                tableWidth: t.scrollWidth, boxWidth: box.clientWidth,
            };
        }"""
    )
    if info["hidden"]:
        observe(
            f"results table: columns {info['hidden']} end beyond the visible "
            f"{info['boxWidth']} px of a {info['tableWidth']} px table "
            f"({'scrollable sideways' if info['scrolls'] else 'cut off, no scrollbar'})"
        )


# ------------------------------------------------------------------ promote: approve in the UI


def test_paused_promotion_resumed_in_the_browser_promotes_the_ticked_images(
    ui_team: UiDeployments, page: Any, shoot: Any, observe: Any, emu: Any, tmp_path: Path
) -> None:
    from fixtures.postgres import write_emulator_config

    server, ui = ui_team.server, ui_team.server.ui_url
    dev_out, prod_out = f"file://{tmp_path}/dev", f"file://{tmp_path}/prod"
    config = write_emulator_config(emu, tmp_path, dev_out)

    dev = server.api(
        "POST",
        f"/deployments/{ui_team.generate}/create_flow_run",
        json={"parameters": {"params": {"config": config, "prompts": PROMPTS}}},
    )
    dev = wait_run(server, dev["id"], {"COMPLETED"})
    dev_store = Store(dev_out)
    (dev_run,) = _run_ids(dev_store)
    dev_rows = read_manifest(dev_store, dev_run)
    assert len(dev_rows) == 3 and {r.status for r in dev_rows} == {"uploaded"}
    chosen, left_out = dev_rows[:2], dev_rows[2]

    promote = server.api(
        "POST",
        f"/deployments/{ui_team.promote}/create_flow_run",
        json={
            "parameters": {
                "params": {
                    "source_run": f"prefect.flow-run.{dev['id']}",
                    "source_config": config,
                    "approve": "ask",
                    "config": config,
                    "output": prod_out,
                    "image_size": "1K",
                    "approval_poll_s": 1,
                    "approval_timeout_s": RUN_TIMEOUT_S,
                }
            }
        },
    )
    wait_run(server, promote["id"], {"PAUSED"})
    assert emu.control.stats()["generation_requests"]["vertex"] == 0  # nothing paid yet

    page.goto(f"{ui}/runs/flow-run/{promote['id']}")
    resume = page.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_visible()
    expect(page.locator(".state-badge").filter(has_text="Paused").first).to_be_visible()
    shoot(page, "paused-run")
    resume.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Promote dev run {dev_run}")
    table = dialog.locator("table").first
    if table.count() and _overflows(table):
        observe(
            "resume form: the approval table in its description is wider than the dialog "
            "(cut off; its file:// image links cannot be opened from a browser anyway)"
        )
    switches = {}
    for row in dev_rows:
        prop = field(dialog, f"{row.job_id[:8]} · {row.prompt[:60]}")
        switches[row.job_id] = prop.get_by_role("switch")
        expect(switches[row.job_id]).to_have_attribute("aria-checked", "false")
    for row in chosen:
        switches[row.job_id].click()
        expect(switches[row.job_id]).to_have_attribute("aria-checked", "true")
    expect(switches[left_out.job_id]).to_have_attribute("aria-checked", "false")
    shoot(page, "resume-form-two-ticked")
    submit(
        page,
        dialog.get_by_role("button", name="Submit", exact=True),
        "!document.querySelector('[role=dialog]')",
        "Resume Submit",
        observe,
    )
    expect(dialog).to_be_hidden()

    wait_run(server, promote["id"], {"COMPLETED"})
    assert emu.control.stats()["generation_requests"] == {"aistudio": 3, "vertex": 2}
    prod_store = Store(prod_out)
    (prod_run,) = _run_ids(prod_store)
    prod_rows = read_manifest(prod_store, prod_run)
    assert {r.lineage["dev_job"] for r in prod_rows} == {r.job_id for r in chosen}
    assert {(r.status, r.backend, r.stage) for r in prod_rows} == {("uploaded", "vertex", "prod")}
    after = {r.job_id: r for r in read_manifest(dev_store, dev_run)}
    assert {j for j, r in after.items() if r.lineage.get("prod_run")} == {r.job_id for r in chosen}

    open_artifacts_tab(page, ui, promote["id"])
    expect(page.locator(".state-badge").filter(has_text="Completed").first).to_be_visible()
    expect(page.locator(".artifact-card__title", has_text="bananaflow-promotion")).to_be_visible()
    shoot(page, "promotion-completed-artifacts")
