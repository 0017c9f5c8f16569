// flagsync dashboard: live updates over Server-Sent Events and write confirmations.
// Plain JS of our own; every page works without it (reading and form posts).
"use strict";

(function () {
  const body = document.body;
  const live = document.getElementById("live");
  const connection = document.getElementById("connection");
  const convergence = document.getElementById("convergence");
  let shownRevision = body.dataset.revision;
  let shownEpoch = body.dataset.epoch;
  let shownWorkers = null;
  let pending = false;
  let refreshing = false;
  let since = null;  // the revision the live region shows, while a refresh is due

  function editing() {
    // Never swap the live region under an operator who is typing in one of its forms:
    // their next write is then checked against the version they saw (409 if it moved).
    const active = document.activeElement;
    if (live && active && live.contains(active) && active.closest("form")) return true;
    return live ? Array.from(live.querySelectorAll("input:not([type=hidden])")).some(
      (input) => input.value !== input.defaultValue) : false;
  }

  function replaceRows(table, html) {
    const holder = document.createElement("tbody");
    holder.innerHTML = html;
    const rows = Array.from(holder.querySelectorAll("tr[id]"));
    if (rows.some((row) => !document.getElementById(row.id))) return false;  // a new flag
    for (const row of rows) document.getElementById(row.id).replaceWith(row);
    const meta = live.querySelector("p.meta");
    if (meta) meta.textContent = meta.textContent.replace(/revision r\d+/, "revision r" + shownRevision);
    return true;
  }

  async function refresh() {
    if (!live || !live.dataset.fragment) return;
    if (editing()) {
      pending = true;
      connection.textContent += " · this page changed since you loaded it (not refreshed while you edit)";
      return;
    }
    if (refreshing) { pending = true; return; }
    refreshing = true;
    try {
      let url = live.dataset.fragment;
      const table = live.querySelector("table.flags");
      const from = since;
      since = null;
      if (table && from !== null) {
        // The flags page asks for the changed rows of its page only.
        url = url.replace("fragment=1", "fragment=rows") + "&since=" + from +
          "&epoch=" + encodeURIComponent(shownEpoch);
      }
      const answer = await fetch(url, { credentials: "same-origin" });
      if (answer.ok) {
        const html = await answer.text();
        if (answer.headers.get("X-Flagsync-Fragment") !== "rows" || !replaceRows(table, html)) {
          live.innerHTML = html;
        }
        live.dataset.refreshedAt = String(Date.now());
      }
    } finally {
      refreshing = false;
    }
    if (pending) { pending = false; refresh(); }
  }

  function show(state) {
    if (state.ok) {
      connection.className = "connection ok";
      connection.textContent = "live · store at r" + state.revision;
    } else {
      connection.className = "connection stale";
      connection.textContent = "STALE: " + (state.error || "waiting for the store") +
        " (showing the last known state)";
    }
    const conv = state.convergence;
    if (conv && convergence) {
      convergence.textContent = conv.text;
      convergence.classList.toggle("late", conv.late.length > 0);
    }
    const workers = JSON.stringify((state.workers || []).map((w) => [w.id, w.revision, w.state]));
    const moved = String(state.revision) !== shownRevision || (state.epoch || "") !== shownEpoch;
    // The first event of a freshly loaded page usually repeats what it shows (the same
    // feed sequence): nothing to fetch again.
    const fresh = shownWorkers === null && String(state.sequence) === body.dataset.sequence;
    const fleetMoved = body.dataset.page === "workers" && !fresh && workers !== shownWorkers;
    shownWorkers = workers;
    if (state.ok && (moved || fleetMoved)) {
      if (since === null && (state.epoch || "") === shownEpoch) since = shownRevision;
      if ((state.epoch || "") !== shownEpoch) since = null;
      shownRevision = String(state.revision);
      shownEpoch = state.epoch || "";
      body.dataset.revision = shownRevision;
      refresh();
    }
  }

  function connect() {
    const events = new EventSource("/api/events");
    events.addEventListener("state", (event) => show(JSON.parse(event.data)));
    events.onopen = () => { body.dataset.stream = "open"; };
    events.onerror = () => {
      body.dataset.stream = "reconnecting";
      connection.className = "connection stale";
      connection.textContent = "STALE: lost the dashboard's event stream, reconnecting" +
        " (showing the last known state)";
      // EventSource retries by itself (the server asks for 1 s); if it gave up, start again.
      if (events.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
    };
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    const trigger = event.submitter;
    const confirmText = (trigger && trigger.dataset.confirm) || form.dataset.confirm;
    if (!confirmText) return;
    const reason = form.querySelector("[name=reason]");
    let question = confirmText + "?";
    if (reason && reason.type === "hidden") {
      const given = window.prompt(question + "\nReason (goes into the change log):", "");
      if (given === null) { event.preventDefault(); return; }
      reason.value = given;
      return;
    }
    if (reason && reason.value) question += "\nReason: " + reason.value;
    if (!window.confirm(question)) event.preventDefault();
  });

  if (window.EventSource) connect();
})();
