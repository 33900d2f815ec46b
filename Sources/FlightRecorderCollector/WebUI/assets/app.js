// FlightRecorder web run view. Plain JavaScript, no dependencies, no build step: the daemon
// embeds this file and serves it under a strict Content-Security-Policy (no inline script),
// so every element is built with the DOM API and every value is set as text, never as HTML.

const TOKEN_KEY = "flightrec.token";
const ROW = 22;
const SEVERITY = {
  unapproved_write: "critical", approval_without_grant: "critical", duplicate_execution: "high",
  unconfirmed_success: "high", success_without_operation_id: "high", uncertain_write: "medium",
  loop: "medium", missing_parent: "medium", repeated_call: "info",
};
const LOOKUP_KEYS = ["operation.id", "ticket.id", "idempotency.key", "approval.ticket", "gen_ai.tool.call.id"];

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function main() { return document.getElementById("main"); }

function setPage(title, ...content) {
  document.title = title + " · FlightRecorder";
  main().replaceChildren(...content.filter((c) => c !== null && c !== undefined));
}

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { headers, credentials: "omit", cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) {
    const next = location.pathname + location.search;
    location.assign("/ui/signin?next=" + encodeURIComponent(next));
    throw new APIError(401, "sign in needed");
  }
  if (!r.ok) throw new APIError(r.status, (body && body.error) || r.statusText || "request failed");
  return body;
}

function fail(err) {
  if (err && err.status === 401) return;
  setPage("Error", h("div", { class: "error-box", role: "alert", text: err && err.message ? err.message : String(err) }));
}

function fmtTime(nanos) {
  if (nanos === undefined || nanos === null) return "";
  const ms = Number(BigInt(nanos) / 1000000n);
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// RFC 3339 with nanoseconds, shown to the millisecond.
function shortTime(text) { return text.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z"); }

function fmtDuration(nanos) {
  const n = Number(nanos);
  if (!isFinite(n)) return "";
  if (n < 1e3) return n + " ns";
  if (n < 1e6) return (n / 1e3).toFixed(1) + " µs";
  if (n < 1e9) return (n / 1e6).toFixed(1) + " ms";
  if (n < 60e9) return (n / 1e9).toFixed(2) + " s";
  if (n < 3600e9) return (n / 60e9).toFixed(1) + " min";
  return (n / 3600e9).toFixed(1) + " h";
}

function runLink(runId, span) {
  return "/ui/runs/" + encodeURIComponent(runId) + (span ? "?span=" + encodeURIComponent(span) : "");
}

function findingBadges(counts) {
  const out = [];
  for (const [kind, n] of Object.entries(counts || {})) {
    const sev = SEVERITY[kind] || "medium";
    out.push(h("span", { class: "badge sev-" + sev, title: sev + ": " + kind, text: kind + (n > 1 ? " ×" + n : "") }));
  }
  return out;
}

// ---------------------------------------------------------------- sign-in

function signInPage() {
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/ui/runs";
  const safeNext = next.startsWith("/ui/") ? next : "/ui/runs";
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const message = h("p", { class: "muted", role: "status" });
  const form = h("form", { class: "signin" },
    h("h1", { text: "Sign in" }),
    h("p", { class: "muted", text: "This collector needs a bearer token with a reading role (responder, auditor or admin). It is kept for this tab only." }),
    h("label", { for: "token", text: "Bearer token" }), input,
    h("button", { type: "submit", text: "Sign in" }), message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const r = await fetch("/api/v1/view/runs?limit=1", { headers: { Authorization: "Bearer " + input.value.trim() } });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      message.textContent = "That token was not accepted.";
      message.className = "error-box";
      input.focus();
      return;
    }
    if (r.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      message.textContent = "That token has no reading role.";
      message.className = "error-box";
      return;
    }
    location.assign(safeNext);
  });
  setPage("Sign in", form);
  input.focus();
}

// ---------------------------------------------------------------- runs list

function whereExpression(p) {
  const parts = [];
  const quote = (v) => '"' + v.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  if (p.get("where")) parts.push("(" + p.get("where") + ")");
  if (p.get("agent")) parts.push("agent = " + quote(p.get("agent")));
  if (p.get("version")) parts.push("agent.version = " + quote(p.get("version")));
  return parts.join(" and ");
}

async function runsPage() {
  const p = new URLSearchParams(location.search);
  const field = (name, label, attrs) => h("label", { class: attrs && attrs.wide ? "wide" : undefined }, label,
    h("input", { name, value: p.get(name) || "", placeholder: (attrs && attrs.placeholder) || "", spellcheck: "false" }));
  // Newest first over all time unless narrowed: a run from an old incident is still a click away.
  const since = p.get("since") || "";
  const sinceSelect = h("select", { name: "since" }, h("option", { value: "", selected: since === "", text: "any time" }),
    ...["1h", "6h", "24h", "7d", "30d", "365d"].map((v) => h("option", { value: v, selected: v === since, text: "last " + v })));
  const filters = h("form", { class: "filters", method: "get", action: "/ui/runs", "aria-label": "Filter runs" },
    h("label", {}, "Since", sinceSelect),
    field("until", "Until", { placeholder: "RFC 3339 or 2h" }),
    field("tenant", "Tenant"), field("agent", "Agent"), field("version", "Version"),
    field("where", "Where", { wide: true, placeholder: 'gen_ai.tool.name = "disable_managed_device"' }),
    h("button", { type: "submit", text: "Apply" }));
  const q = new URLSearchParams();
  if (since) q.set("since", since);
  for (const k of ["until", "tenant", "cursor"]) if (p.get(k)) q.set(k, p.get(k));
  const where = whereExpression(p);
  if (where) q.set("where", where);
  q.set("limit", "50");
  setPage("Runs", h("h1", { text: "Recent runs" }), filters, h("p", { class: "muted", text: "Loading runs…" }));
  const body = await api("/api/v1/view/runs?" + q.toString());
  const table = h("table", { class: "runs" },
    h("caption", { class: "sr", text: "Runs, newest first" }),
    h("thead", {}, h("tr", {}, ...["Started (UTC)", "Run", "Tenant", "Agent", "Version", "Steps", "Spans", "Errors", "Duration", "Findings"]
      .map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, ...body.runs.map((r) => h("tr", {},
      h("td", { class: "mono", text: fmtTime(r.startTimeUnixNano) }),
      h("td", {}, h("a", { href: runLink(r.runId), text: r.runId })),
      h("td", { text: r.tenant || "" }),
      h("td", { text: r.agent || "" }),
      h("td", { text: r.version || "" }),
      h("td", { class: "num", text: r.steps !== undefined ? String(r.steps) : "…", title: r.settled ? "" : "still settling: figures so far" }),
      h("td", { class: "num", text: String(r.spanCount) }),
      h("td", { class: "num" }, r.errorCount > 0 ? h("span", { class: "badge err", text: String(r.errorCount) }) : "0"),
      h("td", { class: "num", text: fmtDuration(r.durationNanos) }),
      h("td", {}, ...findingBadges(r.findings))))));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of runs" });
  if (p.get("cursor")) {
    const first = new URLSearchParams(p);
    first.delete("cursor");
    pager.append(h("a", { href: "/ui/runs?" + first.toString(), text: "« Newest" }));
  }
  if (body.next) {
    const older = new URLSearchParams(p);
    older.set("cursor", body.next);
    pager.append(h("a", { href: "/ui/runs?" + older.toString(), rel: "next", text: "Older runs »" }));
  }
  const summary = h("p", { class: "muted", role: "status",
    text: body.runs.length === 0 ? "No runs match." : body.runs.length + " runs" + (body.complete ? "" : " (the search stopped early; narrow it for more)") });
  setPage("Runs", h("h1", { text: "Recent runs" }), filters, summary, table, pager);
}

// ---------------------------------------------------------------- run view

class RunView {
  constructor(runId, data) {
    this.runId = runId;
    this.data = data;
    const t = data.timeline;
    this.spans = t.spans.map((s, row) => ({
      row, id: s[0], parent: s[1], depth: s[2], trace: t.traces[s[3]], service: t.services[s[4]], name: s[5],
      start: s[6], end: s[7], status: s[8], cat: s[9],
    }));
    this.byId = new Map(this.spans.map((s) => [s.id, s]));
    this.total = this.spans.reduce((m, s) => Math.max(m, s.end), 1);
    this.critical = new Map();
    for (const [row, s, e] of t.critical) {
      if (!this.critical.has(row)) this.critical.set(row, []);
      this.critical.get(row).push([s, e]);
    }
    this.decisionRows = new Map(t.decisions.map((d) => [d.row, d]));
    this.selected = -1;
    this.fed = new Set();
    this.rendered = new Map();
  }

  pct(n) { return (100 * n / this.total).toFixed(4) + "%"; }

  build() {
    const d = this.data, hd = d.header;
    const outcome = h("span", { class: "badge " + (hd.outcome === "error" ? "err" : "ok"), text: hd.outcome });
    const fact = (label, value) => h("span", { class: "fact" }, label + " ", h("b", { text: value }));
    const head = h("section", { class: "runhead", "aria-label": "Run summary" },
      h("h1", {}, "Run ", h("span", { class: "mono", text: hd.runId })), outcome,
      fact("agent", (hd.agent || "?") + (hd.version && hd.version !== "unknown" ? " " + hd.version : "")),
      fact("tenant", hd.tenant || ""), fact("duration", fmtDuration(hd.durationNanos)),
      fact("steps", String(hd.steps)), fact("tokens", hd.tokensIn + " in / " + hd.tokensOut + " out"),
      fact("cost", "$" + Number(hd.costUsd).toFixed(4)), fact("blocked", String(hd.blocked)),
      fact("approval required", String(hd.approvalRequired)), fact("approvals", hd.approvals + (hd.denied ? " (" + hd.denied + " denied)" : "")),
      fact("spans", String(hd.spanCount)), fact("traces", String(hd.traceCount)),
      d.findings.length ? fact("findings", String(d.findings.length)) : null);

    // Time axis, decision lane, rows.
    const ticks = h("div", { class: "ticks" });
    for (let i = 0; i <= 4; i++) {
      const tk = h("span", { class: "tick", text: fmtDuration(this.total * i / 4) });
      tk.style.left = (25 * i) + "%";
      if (i === 4) tk.style.transform = "translateX(-100%)";
      ticks.append(tk);
    }
    const axis = h("div", { class: "axis", "aria-hidden": "true" }, h("div", { class: "label", text: "Started " + fmtTime(d.header.startTimeUnixNano) }), ticks);
    this.lane = h("div", { class: "track", role: "group", "aria-label": "Decision lane: policy checks, approvals and executions" });
    const lane = h("div", { class: "lane" }, h("div", { class: "label", text: "Decisions" }), this.lane);
    this.buildLane();
    this.spacer = h("div", { class: "spacer" });
    this.spacer.style.height = (this.spans.length * ROW) + "px";
    this.rows = h("div", { class: "rows", tabindex: "0", role: "listbox", "aria-label": "Spans of the run, in tree order; arrow keys move, Enter selects" }, this.spacer);
    this.rows.addEventListener("scroll", () => this.paint());
    this.rows.addEventListener("keydown", (e) => this.key(e));
    this.rows.addEventListener("click", (e) => {
      const r = e.target.closest(".row");
      if (r) this.select(Number(r.dataset.row), true);
    });
    const legend = h("div", { class: "legend", "aria-hidden": "true" },
      ...["agent", "model", "tool", "write", "policy", "approval", "memory", "retrieval", "span"].map((c) =>
        h("span", {}, h("span", { class: "sw c-" + c }), c)),
      h("span", {}, h("span", { class: "critsw" }), "critical path"));
    const timeline = h("section", { class: "timeline", "aria-label": "Timeline" }, axis, lane, this.rows, legend);

    this.card = h("section", { class: "panel", "aria-label": "Incident card", "aria-live": "polite" },
      h("h2", { text: "Incident card" }), h("p", { class: "muted", text: "Select a step (click, or arrow keys and Enter) to see why it happened." }));
    this.spanPanel = h("section", { class: "panel", "aria-label": "Span" }, h("h2", { text: "Span" }), h("p", { class: "muted", text: "No step selected." }));
    const findings = h("section", { class: "panel", "aria-label": "Findings" }, h("h2", { text: "Findings (" + d.findings.length + ")" }),
      d.findings.length === 0 ? h("p", { class: "muted", text: "None." }) :
        h("ul", { class: "findings" }, ...d.findings.map((f) => h("li", {},
          h("button", { type: "button", class: "finding", "data-span": f.spanIds[0], onclick: () => this.selectId(f.spanIds[0]) },
            h("span", { class: "badge sev-" + f.severity, text: f.severity }), " ", h("b", { text: f.kind }), ": ", f.message)))));
    const decisions = this.decisionTable();
    const warnings = d.warnings.length ? h("div", { class: "error-box", role: "alert", text: d.warnings.join(" ") }) : null;
    const side = h("aside", { class: "side" }, this.card, this.spanPanel, findings, decisions);
    setPage("Run " + this.runId, head, warnings, h("div", { class: "runview" }, timeline, side));
    this.paint();
  }

  buildLane() {
    const t = this.data.timeline;
    this.marks = new Map();
    if (t.decisions.length > 1500) {
      // Too many to be buttons: a density strip; the rows and the table below carry them.
      const c = h("canvas", { width: "1000", height: "30", "aria-hidden": "true" });
      const ctx = c.getContext("2d");
      for (const dcs of t.decisions) {
        const s = this.spans[dcs.row];
        ctx.fillStyle = dcs.kind === "policy" ? (dcs.outcome === "blocked" ? "#c62828" : "#3a7d2c") : dcs.kind === "approval" ? "#a0761a" : "#c2571a";
        ctx.fillRect(Math.floor(1000 * s.start / this.total), 6, 1, 18);
      }
      this.lane.append(c);
      return;
    }
    for (const dcs of t.decisions) {
      const s = this.spans[dcs.row];
      const label = [dcs.kind, dcs.tool, dcs.outcome, dcs.rule && "rule " + dcs.rule, dcs.approver && "approver " + dcs.approver,
        dcs.operationId && "operation " + dcs.operationId].filter(Boolean).join(" · ");
      // Not tab stops: the same decisions are rows of the timeline and of the decisions table.
      const m = h("button", { type: "button", tabindex: "-1", class: "mark " + dcs.kind + " " + (dcs.outcome || ""), title: label, "aria-label": label,
        "data-span": s.id, onclick: () => this.select(s.row, true) });
      m.style.left = this.pct(s.start);
      this.marks.set(s.row, m);
      this.lane.append(m);
    }
  }

  decisionTable() {
    const t = this.data.timeline;
    const shown = t.decisions.slice(0, 300);
    return h("section", { class: "panel", "aria-label": "Decisions" },
      h("h2", { text: "Decisions (" + t.decisions.length + ")" }),
      h("table", { class: "decisions" },
        h("thead", {}, h("tr", {}, ...["Step", "Outcome", "Rule", "Approver", "Operation"].map((x) => h("th", { scope: "col", text: x })))),
        h("tbody", {}, ...shown.map((dcs) => {
          const s = this.spans[dcs.row];
          return h("tr", {},
            h("td", {}, h("button", { type: "button", class: "jump", "data-span": s.id, onclick: () => this.select(s.row, true), text: s.name })),
            h("td", { text: dcs.outcome || "" }), h("td", { text: dcs.rule || "" }),
            h("td", { class: "mono", text: dcs.approver || "" }), h("td", { class: "mono", text: dcs.operationId || "" }));
        }))),
      t.decisions.length > shown.length ? h("p", { class: "muted", text: "Showing the first " + shown.length + "; select rows in the timeline for the rest." }) : null);
  }

  // Renders only the rows in view (and a margin), so 50,000 spans cost what 50 do.
  paint() {
    const top = this.rows.scrollTop, height = this.rows.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - 15);
    const last = Math.min(this.spans.length - 1, Math.ceil((top + height) / ROW) + 15);
    for (const [row, el] of this.rendered) {
      if (row < first || row > last) { el.remove(); this.rendered.delete(row); }
    }
    for (let r = first; r <= last; r++) {
      let el = this.rendered.get(r);
      if (!el) {
        el = this.rowElement(this.spans[r]);
        this.rendered.set(r, el);
        this.spacer.append(el);
      }
      el.classList.toggle("sel", r === this.selected);
      el.classList.toggle("fed", this.fed.has(r) && r !== this.selected);
      el.setAttribute("aria-selected", r === this.selected ? "true" : "false");
    }
  }

  rowElement(s) {
    const name = h("div", { class: "name", title: s.name + " · " + fmtDuration(s.end - s.start) + (s.service ? " · " + s.service : "") },
      h("span", { class: "dot c-" + s.cat }), s.name);
    name.style.paddingLeft = (8 + 12 * Math.min(s.depth, 14)) + "px";
    const track = h("div", { class: "track" });
    const bar = h("div", { class: "bar c-" + s.cat });
    bar.style.left = this.pct(s.start);
    bar.style.width = this.pct(Math.max(0, s.end - s.start));
    track.append(bar);
    for (const [a, b] of this.critical.get(s.row) || []) {
      const c = h("div", { class: "crit", title: "critical path" });
      c.style.left = this.pct(a);
      c.style.width = this.pct(Math.max(0, b - a));
      track.append(c);
    }
    const el = h("div", { class: "row" + (s.status === 2 ? " error" : ""), role: "option", id: "row-" + s.row,
      "data-row": s.row, "data-span": s.id, "data-category": s.cat }, name, track);
    el.style.top = (s.row * ROW) + "px";
    return el;
  }

  key(e) {
    const n = this.spans.length;
    let r = this.selected < 0 ? 0 : this.selected;
    const page = Math.max(1, Math.floor(this.rows.clientHeight / ROW) - 1);
    switch (e.key) {
      case "ArrowDown": r = Math.min(n - 1, this.selected < 0 ? 0 : r + 1); break;
      case "ArrowUp": r = Math.max(0, r - 1); break;
      case "PageDown": r = Math.min(n - 1, r + page); break;
      case "PageUp": r = Math.max(0, r - page); break;
      case "Home": r = 0; break;
      case "End": r = n - 1; break;
      case "Enter": case " ": if (this.selected >= 0) this.select(this.selected, true); e.preventDefault(); return;
      default: return;
    }
    e.preventDefault();
    this.select(r, false);
  }

  selectId(spanId) {
    const s = this.byId.get(spanId);
    if (s) { this.select(s.row, true); this.rows.focus(); }
  }

  select(row, open) {
    if (row < 0 || row >= this.spans.length) return;
    const prev = this.marks && this.marks.get(this.selected);
    if (prev) prev.classList.remove("sel");
    this.selected = row;
    const mark = this.marks && this.marks.get(row);
    if (mark) mark.classList.add("sel");
    const top = row * ROW, view = this.rows.clientHeight;
    if (top < this.rows.scrollTop) this.rows.scrollTop = top;
    else if (top + ROW > this.rows.scrollTop + view) this.rows.scrollTop = top + ROW - view;
    this.paint();
    this.rows.setAttribute("aria-activedescendant", "row-" + row);
    const s = this.spans[row];
    history.replaceState(null, "", runLink(this.runId, s.id));
    clearTimeout(this.pending);
    if (open) this.open(s); else this.pending = setTimeout(() => this.open(s), 250);
  }

  async open(s) {
    const want = s.row;
    this.card.replaceChildren(h("h2", { text: "Incident card" }), h("p", { class: "muted", text: "Loading…" }));
    try {
      const [path, detail] = await Promise.all([
        api("/api/v1/runs/" + encodeURIComponent(this.runId) + "/card?to=" + s.id),
        api("/api/v1/view/spans/" + s.trace + "/" + s.id),
      ]);
      if (this.selected !== want) return;
      this.showCard(s, path.answer);
      this.showSpan(detail);
    } catch (err) {
      if (this.selected !== want) return;
      this.card.replaceChildren(h("h2", { text: "Incident card" }), h("div", { class: "error-box", role: "alert", text: err.message }));
    }
  }

  jump(spanId, label) {
    if (!spanId) return null;
    return h("button", { type: "button", class: "jump", "data-span": spanId, title: "Go to span " + spanId,
      onclick: () => this.selectId(spanId), text: label || spanId });
  }

  showCard(s, a) {
    this.fed = new Set((a.fed_by || []).map((id) => this.byId.get(id)).filter(Boolean).map((x) => x.row));
    for (const [row, m] of this.marks || []) m.classList.toggle("fed", this.fed.has(row));
    this.paint();
    const dl = h("dl", { class: "card" });
    const add = (field, label, value, span) => {
      dl.append(h("dt", { text: label }), h("dd", { "data-field": field }, value === null || value === undefined ? h("span", { class: "muted", text: "none recorded" }) : value, span ? " " : "", span ? this.jump(span) : null));
    };
    const p = a.proposed_by;
    add("proposed_by", "Proposed by", p ? [p.name, p.model && " · model " + p.model, p.prompt_version && " · prompt " + p.prompt_version,
      p.agent_version && " · agent " + p.agent_version].filter(Boolean).join("") : null, p && p.span_id);
    const e = a.entity_resolution;
    add("entity_resolution", "Entity", e ? h("span", {}, e.tool + (e.arguments ? " " + e.arguments : ""),
      e.resolution === "ambiguous" ? h("span", { class: "amb", text: " AMBIGUOUS (" + e.match_count + " matches)" }) :
        e.resolution ? " · " + e.resolution : "", " · shared " + (e.shared_values || []).join(", ")) : null, e && e.span_id);
    add("context", "Context", a.context && a.context.length ? h("span", {}, ...a.context.map((c, i) => h("span", {},
      i ? "; " : "", c.name + (c.source ? " · source " + c.source : "") + (c.age_seconds !== undefined ? " · " + fmtDuration(c.age_seconds * 1e9) + " old" : "") + " ",
      this.jump(c.span_id)))) : null);
    const pol = a.policy;
    add("policy", "Policy", pol ? [pol.outcome, pol.rule && "rule " + pol.rule, pol.tool && "tool " + pol.tool].filter(Boolean).join(" · ") +
      (pol.approval_required_by ? " (approval was required)" : "") : null, pol && pol.span_id);
    const ap = a.approval;
    add("approval", "Approval", ap ? [ap.decision, ap.approver && "by " + ap.approver, ap.ticket && "ticket " + ap.ticket,
      ap.requested_at && "requested " + shortTime(ap.requested_at), ap.decided_at && "decided " + shortTime(ap.decided_at)].filter(Boolean).join(" · ") : null, ap && ap.span_id);
    const x = a.execution;
    add("execution", "Execution", x ? [x.tool, x.status, x.operation_id && "operation " + x.operation_id,
      x.idempotency_key && "key " + x.idempotency_key, "retries " + x.retries].filter(Boolean).join(" · ") : null, x && x.span_id);
    add("findings", "Findings", a.findings && a.findings.length ? h("span", {}, ...a.findings.map((f) => h("div", {},
      h("span", { class: "badge sev-" + f.severity, text: f.kind }), " " + f.message + " ", this.jump(f.spanIds[0])))) : null);
    this.card.replaceChildren(h("h2", {}, "Incident card: ", h("span", { text: s.name })), dl);
    performance.mark("flightrec-card-ready");
  }

  showSpan(detail) {
    const sp = detail.span;
    const marks = new Map();
    for (const r of detail.redactions) {
      if (!marks.has(r.field)) marks.set(r.field, []);
      marks.get(r.field).push(r);
    }
    const attrRows = (prefix, attrs) => Object.entries(attrs || {}).map(([k, v]) => {
      const field = prefix + k;
      const m = marks.get(field) || [];
      const text = typeof v === "string" ? v : JSON.stringify(v);
      return h("tr", { class: m.length ? "redacted" : undefined, "data-field": field },
        h("td", { class: "k", text: k }),
        h("td", {}, text, ...m.map((r) => h("span", { class: "rmark", title: r.action + " by redaction rule " + r.rule,
          text: (r.action === "masked" ? "redacted: " : "pseudonymised: ") + r.rule }))));
    });
    const table = (title, rows) => rows.length ? [h("h2", { text: title }), h("table", { class: "attrs" }, h("tbody", {}, ...rows))] : [];
    const status = sp.status.code + (sp.status.message ? ": " + sp.status.message : "");
    const inRun = (l) => this.byId.has(l.spanId);
    this.spanPanel.replaceChildren(
      h("h2", {}, "Span ", h("span", { class: "mono", text: sp.spanId })),
      h("table", { class: "attrs" }, h("tbody", {},
        h("tr", {}, h("td", { class: "k", text: "name" }), h("td", { text: sp.name }, ...(marks.get("name") || []).map((r) => h("span", { class: "rmark", text: "redacted: " + r.rule })))),
        h("tr", {}, h("td", { class: "k", text: "kind" }), h("td", { text: sp.kind })),
        h("tr", {}, h("td", { class: "k", text: "status" }), h("td", { text: status })),
        h("tr", {}, h("td", { class: "k", text: "start" }), h("td", { class: "mono", text: fmtTime(sp.startTimeUnixNano) })),
        h("tr", {}, h("td", { class: "k", text: "duration" }), h("td", { text: fmtDuration(sp.durationNanos) })),
        h("tr", {}, h("td", { class: "k", text: "trace" }), h("td", { class: "mono", text: sp.traceId })),
        sp.parentSpanId ? h("tr", {}, h("td", { class: "k", text: "parent" }), h("td", {}, this.jump(sp.parentSpanId) || sp.parentSpanId)) : null)),
      ...table("Attributes", attrRows("attributes.", sp.attributes)),
      ...table("Events", sp.events.flatMap((ev, i) => [h("tr", {}, h("td", { class: "k", text: fmtTime(ev.timeUnixNano) }), h("td", { text: ev.name })),
        ...attrRows("events[" + i + "].attributes.", ev.attributes)])),
      ...table("Links", sp.links.map((l) => h("tr", {}, h("td", { class: "k", text: "links to" }),
        h("td", {}, inRun(l) ? this.jump(l.spanId, this.byId.get(l.spanId).name + " (" + l.spanId + ")") : l.traceId + "/" + l.spanId)))),
      ...table("Resource", attrRows("resource.", sp.resource)));
  }
}

async function runPage(runId) {
  setPage("Run " + runId, h("p", { class: "muted", text: "Loading run " + runId + "…" }));
  let data;
  try {
    data = await api("/api/v1/view/runs/" + encodeURIComponent(runId));
  } catch (err) {
    if (err.status === 404) {
      setPage("Run not found", h("h1", { text: "Run not found" }),
        h("p", { class: "error-box", role: "alert", text: "No run " + runId + " is visible to this token: it does not exist, or belongs to another tenant." }));
      return;
    }
    throw err;
  }
  const view = new RunView(runId, data);
  window.flightrecView = view;
  view.build();
  const span = new URLSearchParams(location.search).get("span");
  if (span && view.byId.has(span)) view.select(view.byId.get(span).row, true);
  document.body.dataset.ready = "run";
  performance.mark("flightrec-run-ready");
}

// ---------------------------------------------------------------- lookup and search

function cardSummary(a) {
  if (!a) return null;
  const bits = [];
  if (a.policy) bits.push("policy " + a.policy.outcome + (a.policy.rule ? " (" + a.policy.rule + ")" : ""));
  if (a.approval) bits.push("approval " + a.approval.decision + (a.approval.approver ? " by " + a.approval.approver : ""));
  if (a.execution) bits.push("execution " + a.execution.status + (a.execution.operation_id ? " → " + a.execution.operation_id : ""));
  if (a.proposed_by) bits.push("proposed by " + a.proposed_by.name);
  return h("div", { class: "muted", text: bits.join(" · ") });
}

async function lookupPage() {
  const p = new URLSearchParams(location.search);
  const key = p.get("key") || "operation.id";
  const keySelect = h("select", { name: "key", id: "lookup-key" }, ...LOOKUP_KEYS.map((k) => h("option", { value: k, selected: k === key, text: k })));
  const form = h("form", { class: "filters", method: "get", action: "/ui/lookup", "aria-label": "Look up a side effect" },
    h("label", { for: "lookup-key" }, "Key", keySelect),
    h("label", { class: "wide" }, "Value", h("input", { name: "value", value: p.get("value") || "", spellcheck: "false", required: true })),
    h("button", { type: "submit", text: "Look up" }));
  const results = h("section", { "aria-label": "Results", "aria-live": "polite" });
  setPage("Lookup", h("h1", { text: "From a side effect back to its run" }), form, results);
  if (p.get("q")) {
    const q = p.get("q");
    results.append(h("p", { class: "muted", text: "Searching for " + q + "…" }));
    const body = await api("/api/v1/view/resolve?q=" + encodeURIComponent(q));
    if (body.matches.length === 1) {
      location.replace(runLink(body.matches[0].runId, body.matches[0].spanId));
      return;
    }
    results.replaceChildren(h("h2", { text: body.matches.length ? body.matches.length + " matches for " + q : "Nothing found for " + q }),
      body.note ? h("p", { class: "muted", text: "Note: " + body.note }) : null,
      h("ul", { class: "matches" }, ...body.matches.map((m) => h("li", {},
        h("a", { href: runLink(m.runId, m.spanId), text: "run " + m.runId + (m.spanId ? ", span " + m.spanId : "") }),
        " ", h("span", { class: "muted", text: "(" + m.kind + (m.tenant ? ", tenant " + m.tenant : "") + ")" })))));
    document.body.dataset.ready = "lookup";
    return;
  }
  if (!p.get("value")) { document.body.dataset.ready = "lookup"; return; }
  try {
    const body = await api("/api/v1/lookup?key=" + encodeURIComponent(key) + "&value=" + encodeURIComponent(p.get("value")));
    results.replaceChildren(h("h2", { text: body.matches.length + " spans carry " + key + " = " + p.get("value") }),
      h("ul", { class: "matches" }, ...body.matches.map((m) => h("li", {},
        h("a", { href: runLink(m.runId, m.spanId), text: "run " + m.runId + ", span " + m.spanId }),
        " ", h("span", { class: "muted", text: "(tenant " + m.tenant + ")" }), cardSummary(m.answer)))));
  } catch (err) {
    results.replaceChildren(h("p", { class: "error-box", role: "alert", text: err.message }));
  }
  document.body.dataset.ready = "lookup";
}

// ---------------------------------------------------------------- start

function route() {
  const path = location.pathname.replace(/\/+$/, "");
  const signout = document.getElementById("signout");
  if (token()) {
    signout.hidden = false;
    signout.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.assign("/ui/signin"); });
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && !(e.target instanceof HTMLInputElement) && !(e.target instanceof HTMLSelectElement)) {
      e.preventDefault();
      document.getElementById("search-q").focus();
    }
  });
  if (path === "/ui/signin") return signInPage();
  if (path === "/ui/runs" || path === "/ui") return runsPage().then(() => { document.body.dataset.ready = "runs"; });
  if (path.startsWith("/ui/runs/")) return runPage(decodeURIComponent(path.slice("/ui/runs/".length)));
  if (path === "/ui/lookup") return lookupPage();
  setPage("Not found", h("p", { class: "error-box", text: "No such page." }));
}

Promise.resolve().then(route).catch(fail);
