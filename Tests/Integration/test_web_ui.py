"""The web run view in a real browser: Debian's Chromium and chromedriver, driven by Selenium,
against the real daemon with bearer tokens of two tenants. Runs are ingested with the real
OpenTelemetry SDK. Screenshots go to $FLIGHTREC_SCREENSHOTS (default .build/screenshots)."""

import os
import shutil
import time
import urllib.parse
import urllib.request

import pytest
from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode, format_span_id

from conftest import Daemon, pseudonym
from test_tenants_and_auth import auth_config, token

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

T0 = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000  # ten minutes ago: in the default window
MS = 1_000_000
SHOTS = os.environ.get("FLIGHTREC_SCREENSHOTS", os.path.join(os.path.dirname(__file__), "..", "..", ".build", "screenshots"))


class Service:
    def __init__(self, d, tok, name="support-agent"):
        self.provider = TracerProvider(resource=Resource.create({"service.name": name, "service.version": "3.2.0"}))
        exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=10, headers={"authorization": "Bearer " + tok})
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("agent.runtime")

    def span(self, name, start, end, parent=None, links=(), error=None, **attributes):
        ctx = api.set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, context=ctx, links=list(links), start_time=T0 + start * MS,
                                   attributes={k.replace("__", "."): v for k, v in attributes.items()})
        if error:
            s.set_status(Status(StatusCode.ERROR, error))
        s.end(end_time=T0 + end * MS)
        return s


def wrong_disable(d, tok, run_id):
    """The wrong-account disable: memory, a model call, an ambiguous lookup, a lookup of
    someone else, another tool's approval, the disable's policy check, request, grant and
    allowed check, and the execution with its operation ID. One tool call carries an email."""
    svc = Service(d, tok)
    t = svc.tracer
    root = t.start_span("invoke_agent support-agent", start_time=T0,
                        attributes={"agent.run.id": run_id, "gen_ai.operation.name": "invoke_agent",
                                    "gen_ai.agent.name": "support-agent"})
    ids = {}
    ids["memory"] = svc.span("memory recall", 5, 9, parent=root, **{"memory.source": "case-notes",
                             "memory.age_seconds": 2592000, "memory.content": '{"case":"C-77","owner":"E-3003"}'})
    ids["chat"] = svc.span("chat gpt-4o", 10, 100, parent=root, gen_ai__operation__name="chat",
                           gen_ai__request__model="gpt-4o", gen_ai__prompt__version="it-support-v7")
    ids["lookup"] = svc.span("execute_tool lookup_employee", 110, 150, parent=root, gen_ai__tool__name="lookup_employee",
                             tool__risk_tier="read", gen_ai__tool__call__arguments='{"name": "John Smith"}',
                             gen_ai__tool__call__result='{"matches": [{"id": "E-3003"}, {"id": "E-4004"}]}')
    ids["other_lookup"] = svc.span("execute_tool lookup_employee", 160, 170, parent=root,
                                   gen_ai__tool__name="lookup_employee", tool__risk_tier="read",
                                   gen_ai__tool__call__arguments='{"name": "Jane Roe"}')
    ids["notify"] = svc.span("execute_tool notify_manager", 180, 190, parent=root, gen_ai__tool__name="notify_manager",
                             tool__risk_tier="read",
                             gen_ai__tool__call__arguments='{"to": "manager.jane@example.com"}')
    ids["check"] = svc.span("policy.check", 300, 310, parent=root, policy__outcome="approval_required",
                            policy__rule="privileged-needs-approval", gen_ai__tool__name="disable_managed_device",
                            approval__ticket=f"APR-{run_id}", idempotency__key=f"idem-{run_id}",
                            gen_ai__tool__call__arguments='{"device_id": "D-300", "owner": "E-3003"}')
    grant = svc.span("approval.granted", 2000, 2010, parent=root, links=[Link(ids["check"].get_span_context())],
                     approval__approver="alice@corp.example", approval__ticket=f"APR-{run_id}",
                     approval__decision="granted", gen_ai__tool__name="disable_managed_device")
    ids["grant"] = grant
    ids["allowed"] = svc.span("policy.check", 3000, 3010, parent=root, policy__outcome="allowed",
                              policy__rule="privileged-needs-approval", gen_ai__tool__name="disable_managed_device",
                              idempotency__key=f"idem-{run_id}", approval__ticket=f"APR-{run_id}")
    ids["exec"] = svc.span("execute_tool disable_managed_device", 3100, 3200, parent=root,
                           gen_ai__operation__name="execute_tool", gen_ai__tool__name="disable_managed_device",
                           tool__risk_tier="privileged_write", operation__id=f"op-{run_id}",
                           idempotency__key=f"idem-{run_id}",
                           gen_ai__tool__call__arguments='{"device_id": "D-300", "owner": "E-3003"}')
    root.end(end_time=T0 + 4000 * MS)
    svc.provider.shutdown()
    return {k: format_span_id(v.get_span_context().span_id) for k, v in ids.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("chromium and chromium-driver are needed: `make test-deps` installs them")
    workdir = str(tmp_path_factory.mktemp("webui"))
    d = Daemon(workdir, extra_config=auth_config()).start()
    acme = wrong_disable(d, token("acme-ingest"), "run-ui-acme")
    wrong_disable(d, token("globex-ingest"), "run-ui-globex")
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                "--disable-gpu", "--lang=en-US"]:
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                               options=options)
    browser.set_window_size(1280, 800)
    os.makedirs(SHOTS, exist_ok=True)
    yield dict(d=d, browser=browser, acme=acme)
    browser.quit()
    d.stop()


def wait(browser, condition, timeout=15):
    return WebDriverWait(browser, timeout).until(condition)


def shot(browser, name):
    browser.save_screenshot(os.path.join(SHOTS, name + ".png"))


def sign_in(w, tok):
    b, d = w["browser"], w["d"]
    b.get(d.api_url + "/ui/runs")
    field = wait(b, EC.presence_of_element_located((By.ID, "token")))
    assert "/ui/signin" in b.current_url
    field.send_keys(tok)
    field.send_keys(Keys.ENTER)
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=runs]"))


def test_pages_are_served_with_a_strict_content_security_policy(world):
    d = world["d"]
    for path in ["/ui/runs", "/ui/runs/x", "/ui/lookup", "/ui/assets/app.js"]:
        with urllib.request.urlopen(d.api_url + path) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    with urllib.request.urlopen(d.api_url + "/ui/runs") as r:
        html = r.read().decode()
        assert "<script type=\"module\" src=\"/ui/assets/app.js\">" in html and "<script>" not in html
    # The API behind the pages needs the token like every /api/v1 route.
    assert d.get("/api/v1/view/runs")[0] == 401
    # The search box's resolver: a trace ID leads to its run; another tenant's IDs lead nowhere.
    acme = token("acme-responder")
    status, run = d.get("/api/v1/runs/run-ui-acme", token=acme)
    trace = run["spans"][0]["traceId"]
    status, found = d.get(f"/api/v1/view/resolve?q={trace}", token=acme)
    assert status == 200 and [(m["kind"], m["runId"]) for m in found["matches"]] == [("trace", "run-ui-acme")]
    status, found = d.get("/api/v1/view/resolve?q=op-run-ui-acme", token=acme)
    assert [(m["kind"], m["runId"]) for m in found["matches"]] == [("operation.id", "run-ui-acme")]
    for q in ["op-run-ui-globex", "run-ui-globex", "idem-run-ui-globex"]:
        assert d.get(f"/api/v1/view/resolve?q={q}", token=acme)[1]["matches"] == []
    assert d.get("/api/v1/view/runs?tenant=globex", token=acme)[0] == 403
    # Pages: an admin sees both tenants' runs, one per page, each once.
    admin = token("admin")
    status, first = d.get("/api/v1/view/runs?limit=1", token=admin)
    assert status == 200 and len(first["runs"]) == 1 and first["next"]
    status, second = d.get("/api/v1/view/runs?limit=1&cursor=" + urllib.parse.quote(first["next"]), token=admin)
    assert status == 200 and len(second["runs"]) == 1 and second.get("next") is None
    assert {first["runs"][0]["runId"], second["runs"][0]["runId"]} == {"run-ui-acme", "run-ui-globex"}
    assert d.get("/api/v1/view/runs?cursor=nonsense", token=admin)[0] == 400


def test_a_responder_opens_a_run_and_the_card_answers_for_the_write(world):
    b, d, ids = world["browser"], world["d"], world["acme"]
    sign_in(world, token("acme-responder"))
    rows = b.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
    text = " ".join(r.text for r in rows)
    assert "run-ui-acme" in text and "run-ui-globex" not in text
    # The run has not settled (run_settle is 30 s): its figures come from its spans now.
    cells = [r.find_elements(By.TAG_NAME, "td") for r in rows if "run-ui-acme" in r.text][0]
    assert cells[4].text == "3.2.0" and cells[5].text.isdigit() and int(cells[5].text) >= 2
    shot(b, "runs")
    b.find_element(By.LINK_TEXT, "run-ui-acme").click()
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=run]"))
    head = b.find_element(By.CSS_SELECTOR, ".runhead").text
    assert "run-ui-acme" in head and "support-agent" in head and "approval required 1" in head
    lane = b.find_elements(By.CSS_SELECTOR, ".lane .mark")
    assert {m.get_attribute("data-span") for m in lane} >= {ids["check"], ids["grant"], ids["exec"], ids["allowed"]}
    # Click the write step.
    write = b.find_element(By.CSS_SELECTOR, f".row[data-span='{ids['exec']}']")
    assert write.get_attribute("data-category") == "write"
    write.click()
    card = wait(b, EC.presence_of_element_located((By.CSS_SELECTOR, "dl.card")))
    field = lambda name: card.find_element(By.CSS_SELECTOR, f"dd[data-field={name}]").text
    assert "allowed" in field("policy") and "privileged-needs-approval" in field("policy")
    assert pseudonym(d, "alice@corp.example") in field("approval") and "granted" in field("approval")
    assert "op-run-ui-acme" in field("execution") and "succeeded" in field("execution")
    assert "gpt-4o" in field("proposed_by") and "it-support-v7" in field("proposed_by")
    assert "AMBIGUOUS" in field("entity_resolution") and "E-3003" in field("entity_resolution")
    assert "memory recall" in field("context") and "case-notes" in field("context")
    # Each answer names its span; the causal path is highlighted, the unrelated lookup is not.
    policy_jump = card.find_element(By.CSS_SELECTOR, "dd[data-field=policy] button.jump")
    assert policy_jump.get_attribute("data-span") == ids["allowed"]
    fed = {r.get_attribute("data-span") for r in b.find_elements(By.CSS_SELECTOR, ".row.fed")}
    assert {ids["check"], ids["grant"], ids["lookup"], ids["chat"]} <= fed
    assert ids["other_lookup"] not in fed and ids["notify"] not in fed
    shot(b, "run-view")
    # Jumping from the card selects that span.
    card.find_element(By.CSS_SELECTOR, "dd[data-field=approval] button.jump").click()
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, f".row.sel[data-span='{ids['grant']}']"))


def test_a_redacted_field_is_marked_with_its_rule(world):
    b, ids = world["browser"], world["acme"]
    b.find_element(By.CSS_SELECTOR, f".row[data-span='{ids['notify']}']").click()
    row = wait(b, EC.presence_of_element_located(
        (By.CSS_SELECTOR, "tr.redacted[data-field='attributes.gen_ai.tool.call.arguments']")))
    assert "redacted: email" in row.text and "manager.jane" not in row.text
    b.find_element(By.CSS_SELECTOR, f".row[data-span='{ids['grant']}']").click()
    approver = wait(b, EC.presence_of_element_located(
        (By.CSS_SELECTOR, "tr.redacted[data-field='attributes.approval.approver']")))
    assert "pseudonymised: identity" in approver.text and "alice" not in approver.text
    shot(b, "span-panel")


def test_keyboard_alone_selects_steps_and_finds_a_side_effect(world):
    b, d, ids = world["browser"], world["d"], world["acme"]
    b.get(d.api_url + "/ui/runs/run-ui-acme")
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=run]"))
    body = b.find_element(By.TAG_NAME, "body")
    # Tab from the top of the page to the timeline, then arrows and Enter.
    for _ in range(20):
        body = b.switch_to.active_element
        if body.get_attribute("role") == "listbox":
            break
        body.send_keys(Keys.TAB)
    rows = b.switch_to.active_element
    assert rows.get_attribute("role") == "listbox"
    rows.send_keys(Keys.END)
    rows.send_keys(Keys.ENTER)
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "dl.card"))
    selected = b.find_element(By.CSS_SELECTOR, ".row.sel").get_attribute("data-span")
    rows.send_keys(Keys.ARROW_UP)
    wait(b, lambda b: b.find_element(By.CSS_SELECTOR, ".row.sel").get_attribute("data-span") != selected)
    # The search box: "/" focuses it; an operation ID leads straight to its step.
    b.find_element(By.TAG_NAME, "body").send_keys("/")
    search = b.switch_to.active_element
    assert search.get_attribute("id") == "search-q"
    search.send_keys("op-run-ui-acme", Keys.ENTER)
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, f".row.sel[data-span='{ids['exec']}']"))
    assert "span=" + ids["exec"] in b.current_url
    # A span ID works too.
    search = b.find_element(By.ID, "search-q")
    search.send_keys(ids["check"], Keys.ENTER)
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, f".row.sel[data-span='{ids['check']}']"))
    # The lookup page.
    b.get(d.api_url + "/ui/lookup?key=operation.id&value=op-run-ui-acme")
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=lookup]"))
    assert "run run-ui-acme" in b.find_element(By.CSS_SELECTOR, ".matches").text
    assert "policy allowed" in b.find_element(By.CSS_SELECTOR, ".matches").text


def test_another_tenants_run_is_not_shown(world):
    b, d = world["browser"], world["d"]
    b.get(d.api_url + "/ui/runs/run-ui-globex")
    wait(b, lambda b: "Run not found" in b.find_element(By.TAG_NAME, "main").text)
    assert "run-ui-globex" not in b.find_element(By.TAG_NAME, "main").text.replace("No run run-ui-globex", "")
    b.get(d.api_url + "/ui/lookup?key=operation.id&value=op-run-ui-globex")
    wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=lookup]"))
    assert "run-ui-globex" not in b.find_element(By.CSS_SELECTOR, "section[aria-label=Results]").text.replace(
        "op-run-ui-globex", "")
    # No page broke the Content-Security-Policy or threw (the 401 before signing in and the
    # 404 of the other tenant's run are network answers, not page errors).
    errors = [e for e in b.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, errors
