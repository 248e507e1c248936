// sFOX onboarding page: polls api/summary and renders it, with a user lookup (api/user) and a
// run view (api/run) refreshed on the same beat. Plain DOM, no framework, no CDN.
// Every value from the server is written with textContent, never parsed as HTML.
// Opened as a DAG's tab (#dag_id=...) it shows that DAG's figures; as a DAG run's tab
// (#dag_id=...&run_id=...) it opens that run's view too. The ledger's vocabulary (channels,
// states and their labels) comes from the server with the figures.
"use strict";

(function () {
  const SUMMARY_URL = "api/summary";
  const USER_URL = "api/user";
  const RUN_URL = "api/run";
  const SVG_NS = "http://www.w3.org/2000/svg";
  let refreshMs = 10000;
  let timer = null;
  // The user and the run on display (null: none), as typed: ids are exact text, never trimmed.
  const shown = { user: null, run: null };
  // The DAG the figures are narrowed to (null: every DAG), and the DAG of the run on display.
  let dagFilter = null;
  let runDag = null;
  // Ledger states by value: { label, tone }, from the last summary.
  let states = {};

  const fmt = new Intl.NumberFormat("en-US");
  const num = (n) => (n === null || n === undefined ? "–" : fmt.format(n));
  const pct = (part, whole) => (whole > 0 && part !== null ? `${Math.round((100 * part) / whole)}%` : "");

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  function when(iso) {
    if (!iso) return "–";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, "");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  // A tiny inline SVG bar: the share of `value` in `max`.
  function bar(value, max, final) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 100 10");
    svg.setAttribute("preserveAspectRatio", "none");
    const rect = document.createElementNS(SVG_NS, "rect");
    const width = max > 0 && value ? Math.max(0.5, (100 * value) / max) : 0;
    rect.setAttribute("width", String(width));
    rect.setAttribute("height", "10");
    rect.setAttribute("fill", final ? "var(--bar-done)" : "var(--bar)");
    svg.appendChild(rect);
    return el("div", { class: "track" }, [svg]);
  }

  // Rejected rows whose account type was not valid either (others count in their type's funnel).
  function rejectedCard(row) {
    return el("div", { class: "card compact", "data-account-type": "none" }, [
      el("h3", { class: "plain", text: "Rejected source rows" }),
      el("div", { class: "big bad", "data-metric": "none.rejected", text: num(row.rejected) }),
      el("p", { class: "muted small", text: "rejected rows without a valid account type; never sent (see the reasons below)" }),
    ]);
  }

  // Steps of a funnel: seen, registered, then each channel requested and verified (the last channel's
  // "verified" is the user's VERIFIED), over every channel the server names.
  function funnelSteps(row, channels) {
    const steps = [["seen", "In ledger (seen)", row.seen]];
    // Only for DAGs that register users (the server sends null otherwise).
    if (row.registered !== null && row.registered !== undefined) steps.push(["registered", "registered", row.registered]);
    channels.forEach((channel, i) => {
      steps.push([`${channel}_requested`, `${channel} requested`, row[`${channel}_requested`]]);
      if (i < channels.length - 1) steps.push([`${channel}_verified`, `${channel} verified`, row[`${channel}_verified`]]);
    });
    steps.push(["verified", "VERIFIED", row.verified]);
    return steps;
  }

  function funnelCard(row, channels, sideStates) {
    if (row.account_type === null) return rejectedCard(row);
    const kind = row.account_type;
    const title = row.account_type;
    const steps = funnelSteps(row, channels);
    const stepNodes = steps.map(([key, label, value]) => {
      const final = key === "verified";
      const na = value === null;
      return el("div", { class: `step${final ? " final" : ""}${na ? " na" : ""}` }, [
        el("span", { class: "label", text: label }),
        bar(value, row.seen, final),
        el("span", { class: "value" }, [
          el("b", { "data-metric": `${kind}.${key}`, text: na ? "n/a" : num(value) }),
          document.createTextNode(na || key === "seen" ? "" : ` ${pct(value, row.seen)}`),
        ]),
      ]);
    });
    const side = sideStates.map((key) =>
      el("div", { class: row[key] && states[key] ? states[key].tone : "" }, [
        el("span", { text: label(key) }),
        el("span", { class: "n", "data-metric": `${kind}.${key}`, text: num(row[key]) }),
      ]),
    );
    return el("div", { class: "card", "data-account-type": kind }, [
      el("h3", { text: title }),
      el("p", { class: "muted small", "data-field": "channels", text: `verifies ${row.channels.join(", then ")}` }),
      el("div", { class: "card-body" }, [
        el("div", { class: "steps" }, stepNodes),
        el("div", { class: "side" }, side),
      ]),
    ]);
  }

  function fillTable(id, rows, columns, emptyText) {
    const body = document.querySelector(`#${id} tbody`);
    body.replaceChildren();
    if (!rows.length) {
      body.appendChild(el("tr", {}, [el("td", { class: "empty", colspan: String(columns), text: emptyText })]));
      return;
    }
    for (const cells of rows) body.appendChild(el("tr", {}, cells));
  }

  // A ledger state by the server's label; anything else (an attempt outcome, a run status the
  // page has no word for) as the server wrote it.
  const label = (key) => (states[key] ? states[key].label : String(key).replaceAll("_", " "));

  function pill(state, empty) {
    return el("span", { class: `pill ${state || "none"}`, text: state ? label(state) : empty || "–" });
  }

  const status = (code) => (code === null || code === undefined ? "–" : String(code));
  const yes = (flag) => (flag ? "yes" : "");

  // The ids in the URL's fragment, `#dag_id=...&run_id=...`: Airflow puts a DAG's or a DAG run's
  // ids there (some versions percent-encode them, others not; a run_id never holds "&" or "%").
  function fragment() {
    const ids = {};
    for (const part of window.location.hash.replace(/^#/, "").split("&")) {
      const at = part.indexOf("=");
      if (at > 0) ids[part.slice(0, at)] = decodeURIComponent(part.slice(at + 1));
    }
    return ids;
  }

  // A run_id or user_id that opens its view below when clicked (a run: of its DAG, when known).
  function link(kind, id, dag) {
    if (id === null || id === undefined) return document.createTextNode("–");
    const button = el("button", { type: "button", class: "link mono", [`data-${kind}-id`]: id, text: id });
    button.addEventListener("click", () => (kind === "run" ? showRun(id, dag || null) : showUser(id)));
    return button;
  }

  // The DAG filter: every DAG the run table has runs of, and the one asked for.
  function renderDags(data) {
    const select = document.getElementById("dag-filter");
    const dags = data.dags.includes(dagFilter) || dagFilter === null ? data.dags : data.dags.concat([dagFilter]);
    const wanted = ["", ...dags].join("\n");
    if (select.dataset.options !== wanted) {
      select.replaceChildren(
        el("option", { value: "", text: "All DAGs" }),
        ...dags.map((dag) => el("option", { value: dag, text: dag })),
      );
      select.dataset.options = wanted;
    }
    select.value = dagFilter || "";
  }

  // The operator's hold on the senders' budget scope (python -m airflow_sfox hold): no code goes
  // out until it ends or is released; held users stay queued, their failures unchanged.
  function renderHold(hold) {
    const banner = document.getElementById("hold");
    banner.hidden = !hold;
    if (!hold) return;
    const until = hold.until ? `until ${when(hold.until)}` : "until released";
    banner.textContent =
      `Sending is held on budget scope ${hold.scope} ${until} (${hold.reason}, since ${when(hold.since)}): ` +
      "no code goes out; users stay queued. Release: python -m airflow_sfox release --conn-id <connection>.";
  }

  function render(data) {
    refreshMs = Math.max(2000, (data.refresh_seconds || 10) * 1000);
    document.getElementById("source").textContent =
      `Ledger ${data.ledger_table} and runs ${data.runs_table} on connection ${data.conn_id}` +
      ` · refreshes every ${refreshMs / 1000} s`;
    document.getElementById("empty").hidden = !data.ledger_missing;
    renderHold(data.hold);

    states = Object.fromEntries(data.states.map((s) => [s.state, s]));
    renderDags(data);
    document.body.dataset.dag = data.dag_id || "";
    const funnels = document.getElementById("funnels");
    funnels.classList.toggle("with-rejected", data.funnel.some((row) => row.account_type === null));
    funnels.replaceChildren(...data.funnel.map((row) => funnelCard(row, data.channels, data.side_states)));
    if (!data.funnel.length) funnels.appendChild(el("p", { class: "muted", text: "No users in the ledger yet." }));

    fillTable(
      "runs",
      data.runs.map((run) => [
        el("td", { class: "nowrap", text: when(run.started_at) }),
        el("td", { class: "mono", "data-field": "dag_id", text: run.dag_id || "–" }),
        el("td", { class: "mono" }, [link("run", run.run_id, run.dag_id)].concat(
          run.dry_run ? [document.createTextNode(" (dry run)")] : [],
        )),
        el("td", {}, [pill(run.status)].concat(
          run.reason ? [el("div", { class: "reason", "data-field": "reason", text: run.reason })] : [],
        )),
        el("td", { class: "num", text: duration(run.duration_seconds) }),
        el("td", { class: "num", "data-field": "requests", text: num(run.requests) }),
        el("td", {
          class: "num",
          text: run.requests_per_second === null ? "–" : run.requests_per_second.toFixed(1),
        }),
        el("td", { class: "num", text: num(run.sent) }),
        el("td", { class: "num", "data-field": "failed", text: num(run.failed) }),
        el("td", { class: "num", text: num(run.rejected) }),
        el("td", { class: "num", text: num(run.not_registered) }),
        el("td", { class: "num", "data-field": "rate_limited", text: num(run.rate_limited) }),
      ]),
      12,
      dagFilter ? `No runs of ${dagFilter} recorded.` : "No runs recorded yet.",
    );

    const top = data.reasons.length ? data.reasons[0].count : 0;
    fillTable(
      "reasons",
      data.reasons.map((r) => {
        const line = el("span", { class: "reason-bar" });
        line.style.width = `${top ? Math.max(2, (100 * r.count) / top) : 0}%`;
        return [
          el("td", {}, [el("span", { text: r.reason }), line]),
          el("td", {}, [pill(r.state)]),
          el("td", { class: "num", "data-field": "count", text: num(r.count) }),
        ];
      }),
      3,
      "No rejected or failed rows.",
    );

    fillTable(
      "failures",
      data.recent_failures.map((f) => [
        el("td", { class: "mono nowrap", "data-field": "user_id" }, [link("user", f.user_id)]),
        el("td", { text: f.channel }),
        el("td", {}, [pill(f.state)]),
        el("td", { class: "num", text: f.last_status === null ? "–" : String(f.last_status) }),
        el("td", { text: f.reason || "" }),
        el("td", { class: "nowrap", text: when(f.updated_at) }),
      ]),
      6,
      "No failures.",
    );
  }

  // Why a channel due for the user's account type has no ledger row yet.
  const dueNote = (row) =>
    row.waits_for ? `waits for ${row.waits_for} verification` : "due: the next run plans it";

  function renderUser(data) {
    document.getElementById("user-title").textContent = data.user_id;
    fillTable(
      "user-ledger",
      data.ledger.map((row) => [
        el("td", { text: row.channel }),
        el("td", { "data-field": "state" }, [pill(row.state, "not planned")]),
        el("td", { class: "num", text: num(row.sends) }),
        el("td", { class: "num", text: num(row.attempts) }),
        el("td", { class: row.uncertain ? "bad-text" : "", text: yes(row.uncertain) }),
        el("td", { class: "num", text: num(row.failures) }),
        el("td", { class: "num", text: status(row.last_status) }),
        el("td", { "data-field": "note", text: row.state ? row.last_error || "" : dueNote(row) }),
        el("td", { class: "nowrap", text: when(row.first_request_at) }),
        el("td", { class: "nowrap", text: when(row.last_request_at) }),
        el("td", { class: "mono" }, [link("run", row.run_id, row.dag_id)]),
      ]),
      11,
      "No ledger row: only attempts name this user.",
    );
    const total = data.attempts_total;
    document.getElementById("user-capped").textContent =
      total > data.attempts.length
        ? `Showing the newest ${num(data.attempts.length)} of ${num(total)} attempts ` +
          `(at most ${num(data.attempts_limit)}).`
        : `${num(total)} attempt${total === 1 ? "" : "s"}.`;
    fillTable(
      "user-attempts",
      data.attempts.map((a) => [
        el("td", { class: "nowrap", "data-field": "attempted_at", text: when(a.attempted_at) }),
        el("td", { "data-field": "channel", text: a.channel }),
        el("td", { class: "mono" }, [link("run", a.run_id, a.dag_id)]),
        el("td", { class: "num", text: num(a.attempt) }),
        el("td", { class: "num", "data-field": "status", text: status(a.status) }),
        el("td", { "data-field": "outcome" }, [pill(a.outcome)]),
        el("td", { text: yes(a.uncertain) }),
        el("td", { text: a.error || "" }),
      ]),
      8,
      "No attempts recorded (or all pruned by the retention).",
    );
  }

  function renderRun(data) {
    const run = data.run;
    document.getElementById("run-title").textContent = data.run_id;
    const figures = run
      ? [
          ["dag", run.dag_id],
          ["status", run.status],
          ["started", when(run.started_at)],
          ["duration", duration(run.duration_seconds)],
          ["requests", num(run.requests)],
          ...["sent", "already_verified", "failed", "not_registered", "rejected"].map((key) => [
            label(key),
            num(run[key]),
          ]),
          ["uncertain", num(run.uncertain)],
          ["429s", num(run.rate_limited)],
        ]
      : [["run table", "no row for this run"]];
    if (run && run.dry_run) figures.push(["dry run", "yes"]);
    if (run && run.reason) figures.push(["reason", run.reason]);
    document.getElementById("run-figures").replaceChildren(
      ...figures.map(([name, value]) =>
        el("span", { "data-figure": name }, [
          document.createTextNode(`${name} `),
          el("b", { text: value || "–" }),
        ]),
      ),
    );
    fillTable(
      "run-outcomes",
      data.outcomes.map((o) => [
        el("td", { text: o.channel }),
        el("td", {}, [pill(o.outcome)]),
        el("td", { class: "num", "data-field": "count", text: num(o.count) }),
        el("td", { class: "num", text: num(o.uncertain) }),
      ]),
      4,
      "No requests recorded for this run.",
    );
    fillTable(
      "run-ledger",
      data.ledger.map((r) => [
        el("td", { text: r.channel }),
        el("td", {}, [pill(r.state)]),
        el("td", { class: "num", "data-field": "count", text: num(r.count) }),
      ]),
      3,
      "No ledger row was last touched by this run.",
    );
    fillTable(
      "run-held",
      data.held.map((h) => [
        el("td", { class: "mono nowrap", "data-field": "user_id" }, [link("user", h.user_id)]),
        el("td", { text: h.channel }),
        el("td", { text: h.reason || "" }),
        el("td", { class: "nowrap", text: when(h.updated_at) }),
      ]),
      4,
      "No row of this run is held for review.",
    );
    const reasonRows = (rows, kind) =>
      rows.map((r) => [
        el("td", { text: r.reason }),
        el("td", {}, [pill(r[kind])]),
        el("td", { class: "num", "data-field": "count", text: num(r.count) }),
      ]);
    fillTable("run-attempt-reasons", reasonRows(data.attempt_reasons, "outcome"), 3, "No failed request.");
    fillTable("run-ledger-reasons", reasonRows(data.ledger_reasons, "state"), 3, "No rejected or failed rows.");
  }

  // What a refused lookup says: the server's detail (a text, or FastAPI's list of errors).
  function detailOf(data, code) {
    const detail = data && data.detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
    return detail || `HTTP ${code}`;
  }

  // Fetch one user or run (kind "user" or "run") and show it, or why not; quiet: a poll.
  async function load(kind, quiet) {
    const id = shown[kind];
    if (id === null) return;
    const [url, param, render] =
      kind === "user" ? [USER_URL, "user_id", renderUser] : [RUN_URL, "run_id", renderRun];
    const query = { [param]: id };
    if (kind === "run" && runDag) query.dag_id = runDag;
    const view = document.getElementById(`${kind}-view`);
    const error = document.getElementById(`${kind}-error`);
    try {
      const response = await fetch(`${url}?${new URLSearchParams(query)}`, {
        credentials: "same-origin",
        cache: "no-store",
      });
      const data = await response.json().catch(() => null);
      if (shown[kind] !== id) return; // another lookup started meanwhile
      if (response.status === 401 || response.status === 403) return signedOut();
      if (!response.ok) throw new Error(detailOf(data, response.status));
      render(data);
      view.hidden = false;
      error.hidden = true;
      document.body.dataset[kind] = id;
    } catch (err) {
      if (quiet && !view.hidden) return; // keep what is shown; the next poll tries again
      error.textContent = err.message;
      error.hidden = false;
      view.hidden = true;
      delete document.body.dataset[kind];
    }
  }

  async function show(kind, id, dag, scroll = true) {
    if (kind === "run") runDag = dag === undefined ? dagFilter : dag;
    shown[kind] = id;
    document.getElementById(`${kind}-id`).value = id;
    await load(kind, false);
    if (!scroll) return;
    document.getElementById(document.getElementById(`${kind}-view`).hidden ? `${kind}-error` : `${kind}-view`)
      .scrollIntoView({ block: "start" });
  }
  const showUser = (id) => show("user", id);
  const showRun = (id, dag) => show("run", id, dag);

  for (const kind of ["user", "run"]) {
    document.getElementById(`${kind}-form`).addEventListener("submit", (event) => {
      event.preventDefault();
      show(kind, document.getElementById(`${kind}-id`).value);
    });
  }

  function signedOut() {
    const error = document.getElementById("error");
    error.textContent = "Your Airflow session has ended: reload the page to log in again.";
    error.hidden = false;
    setStatus(false, "signed out");
    clearTimeout(timer);
  }

  function setStatus(ok, text) {
    document.getElementById("status-dot").className = `dot ${ok ? "ok" : "bad"}`;
    document.getElementById("status-text").textContent = text;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const url = dagFilter ? `${SUMMARY_URL}?${new URLSearchParams({ dag_id: dagFilter })}` : SUMMARY_URL;
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      const error = document.getElementById("error");
      if (response.status === 401 || response.status === 403) {
        signedOut();
        return; // no more polling until the user logs in again
      }
      const data = await response.json();
      if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
      render(data);
      load("user", true);
      load("run", true);
      error.hidden = true;
      document.body.dataset.loaded = data.generated_at;
      setStatus(true, `updated ${new Date().toLocaleTimeString()} · ${data.query_ms} ms`);
    } catch (err) {
      const error = document.getElementById("error");
      error.textContent = `Cannot load the onboarding figures: ${err.message}`;
      error.hidden = false;
      setStatus(false, "error");
    }
    timer = setTimeout(refresh, refreshMs);
  }

  document.getElementById("dag-filter").addEventListener("change", (event) => {
    dagFilter = event.target.value || null;
    refresh();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });

  // Opened on a DAG's or a DAG run's tab: that DAG's figures, and that run's view. Another DAG
  // or run of the same tab changes only the fragment: the page follows it without a reload.
  function openFragment() {
    const ids = fragment();
    dagFilter = ids.dag_id || null;
    document.body.classList.toggle("run-first", Boolean(ids.run_id)); // a run's tab: its view first
    if (ids.run_id) show("run", ids.run_id, dagFilter, false);
  }

  window.addEventListener("hashchange", () => {
    openFragment();
    refresh();
  });
  openFragment();
  refresh();
})();
