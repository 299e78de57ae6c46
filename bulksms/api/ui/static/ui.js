// The campaign page's behaviour: live job status, confirmations, the message counter and the
// preview. Everything it shows of a job comes from the API's JSON and is set as text, never as
// HTML. Without JavaScript the pages still read and every form still works.
"use strict";

const STATUSES = ["pending", "queued", "sent", "delivered", "undelivered", "failed", "rejected",
  "cancelled", "suppressed"];
const FINISHED = ["completed", "failed", "cancelled"];
const NOT_FINAL = ["pending", "queued", "sent"];

// Only reports can still move a finished job with no batch left: read it less and less often.
function winding(doc) {
  return FINISHED.includes(doc.state) && doc.batches.pending === 0;
}

// Nothing on the page can change any more. A cancelled job's counts still move after its state
// says "cancelled": a batch in flight finishes and is counted, waiting batches are cancelled as
// they are claimed, and reports come in (a cancelled job is never closed, and some reports
// never come).
function settled(doc) {
  return winding(doc) && (doc.closed !== undefined || !NOT_FINAL.some((s) => doc.counts[s]));
}

function csrfToken() {
  const field = document.querySelector("input[name=csrf_token]");
  return field ? field.value : "";
}

function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

// -- the job page ---------------------------------------------------------------------------
function jobPage(root) {
  const samples = [];
  let failuresSeen = -1;  // the errors table is read again only when these change

  function set(selector, text) {
    const node = root.querySelector(selector);
    if (node) node.textContent = text;
  }

  function draw(doc) {
    set("[data-testid=job-state]", doc.state);
    const total = Math.max(1, doc.recipients.accepted);
    const bar = root.querySelector("#status-bar");
    bar.replaceChildren();
    for (const status of STATUSES) {
      const count = doc.counts[status] || 0;
      set(`[data-testid=count-${status}]`, String(count));
      if (!count) continue;
      const piece = document.createElement("span");
      piece.className = `s-${status}`;
      piece.style.width = `${(100 * count) / total}%`;
      piece.title = `${status}: ${count}`;
      bar.append(piece);
    }
    const progress = doc.progress || null;
    set("#rate", progress ? `${progress.rate_per_second}/s` : "—");
    set("#eta", progress ? progress.estimated_completion_at.slice(0, 19).replace("T", " ") : "—");
    set("#billed", `${doc.billed.units} units · ${doc.billed.amount}`);
    set("#batches", `${doc.batches.submitted} of ${doc.batches.total} sent`);
    const allowed = {
      cancel: !FINISHED.includes(doc.state),
      pause: ["queued", "sending", "paused"].includes(doc.state),
      resume: doc.state === "paused",
      retry: ["sent", ...FINISHED].includes(doc.state) && doc.batches.pending === 0,
    };
    for (const button of root.querySelectorAll("button[data-action]")) {
      button.disabled = !allowed[button.dataset.action];
    }
    samples.push([Date.now(), doc.counts.delivered || 0]);
    if (samples.length > 600) samples.shift();
    chart(root.querySelector("#chart polyline"), samples, total);
  }

  async function errors() {
    const answer = await fetch(root.dataset.errorsUrl, { credentials: "same-origin" });
    if (!answer.ok) return;
    const found = (await answer.json()).errors;
    const body = root.querySelector("#errors tbody");
    body.replaceChildren();
    for (const e of found) {
      const row = document.createElement("tr");
      for (const value of [e.code, e.meaning, String(e.count), e.retryable ? "yes" : "no"]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      body.append(row);
    }
    if (!found.length) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 4;
      cell.textContent = "None so far.";
      row.append(cell);
      body.append(row);
    }
  }

  let delay = 1000;

  async function poll() {
    let finished = false;
    try {
      const answer = await fetch(root.dataset.statusUrl, { credentials: "same-origin" });
      if (answer.ok) {
        const doc = await answer.json();
        draw(doc);
        finished = settled(doc);
        delay = winding(doc) ? Math.min(delay + 1000, 60000) : 1000;
        const failures = ["undelivered", "failed", "rejected"].reduce((n, s) => n + doc.counts[s], 0);
        if (failures !== failuresSeen) {  // (reading every batch costs: only when it shows more)
          failuresSeen = failures;
          await errors();
        }
      }
    } catch (problem) {
      // (a network blip: the next poll tries again)
    }
    if (!finished) window.setTimeout(poll, delay);
  }
  poll();
}

function chart(line, samples, total) {
  if (!line || samples.length < 2) return;
  const start = samples[0][0];
  const span = Math.max(1, samples[samples.length - 1][0] - start);
  line.setAttribute("points", samples.map(([at, delivered]) =>
    `${((600 * (at - start)) / span).toFixed(1)},${(118 - (116 * delivered) / total).toFixed(1)}`,
  ).join(" "));
}

// -- the send form --------------------------------------------------------------------------
function encode(text, basic, extension) {
  // As bulksms.message.encode: GSM-7 when every character is in its tables (an extension
  // character costs two septets), else UCS-2 in UTF-16 units; parts never split a pair.
  const chars = Array.from(text);
  const gsm = chars.every((c) => basic.has(c) || extension.has(c));
  const costs = chars.map((c) => (gsm ? (extension.has(c) ? 2 : 1) : (c.codePointAt(0) > 0xffff ? 2 : 1)));
  const length = costs.reduce((a, b) => a + b, 0);
  const [single, part] = gsm ? [160, 153] : [70, 67];
  if (length <= single) return { encoding: gsm ? "GSM-7" : "UCS-2", length, segments: length ? 1 : 0 };
  let segments = 1;
  let used = 0;
  for (const cost of costs) {
    if (used + cost > part) { segments += 1; used = 0; }
    used += cost;
  }
  return { encoding: gsm ? "GSM-7" : "UCS-2", length, segments };
}

function counterText(message, basic, extension) {
  const personal = /\{\{[ \t]*\w+[ \t]*\}\}/u.test(message);
  const literal = message.replace(/\{\{\{\{/g, "{{").replace(/\{\{[ \t]*\w+[ \t]*\}\}/gu, "");
  const e = encode(personal ? literal : message.replace(/\{\{\{\{/g, "{{"), basic, extension);
  const plural = e.segments === 1 ? "segment" : "segments";
  const counted = `${e.encoding} · ${e.length} characters · ${e.segments} ${plural}`;
  return personal ? `${counted} without its placeholders: Preview counts each recipient's text` : counted;
}

function sendForm(form) {
  const basic = new Set(Array.from(form.dataset.gsmBasic));
  const extension = new Set(Array.from(form.dataset.gsmExtension));
  const message = form.querySelector("#message");
  const counter = form.querySelector("#counter");
  const offset = form.querySelector("input[name=utc_offset_minutes]");
  offset.value = String(-new Date().getTimezoneOffset());
  const update = () => { counter.textContent = counterText(message.value, basic, extension); };
  message.addEventListener("input", update);
  update();
  form.addEventListener("submit", async (event) => {
    if (!event.submitter || event.submitter.value !== "preview") return;
    event.preventDefault();
    await preview(form);
  });
}

function requestBody(form) {
  const file = form.querySelector("#contacts").files[0];
  const fields = { message: form.querySelector("#message").value };
  const region = form.querySelector("#default_region").value.trim();
  if (region) fields.default_region = region;
  fields.priority = form.querySelector("#priority").value;
  const when = form.querySelector("#send_at").value;
  if (when) {
    const minutes = Number(form.querySelector("input[name=utc_offset_minutes]").value);
    const sign = minutes >= 0 ? "+" : "-";
    const hours = String(Math.floor(Math.abs(minutes) / 60)).padStart(2, "0");
    fields.send_at = `${when.length === 16 ? `${when}:00` : when}${sign}${hours}:${String(Math.abs(minutes) % 60).padStart(2, "0")}`;
  }
  if (file) {
    const data = new FormData();
    for (const [name, value] of Object.entries(fields)) data.append(name, value);
    data.append("recipients", file);
    return { body: data, headers: {} };
  }
  const lines = form.querySelector("#recipients").value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  return { body: JSON.stringify({ ...fields, recipients: lines }), headers: { "Content-Type": "application/json" } };
}

async function preview(form) {
  const section = document.querySelector("#preview");
  const { body, headers } = requestBody(form);
  const answer = await fetch(form.dataset.previewUrl, {
    method: "POST", body, credentials: "same-origin", headers: { ...headers, "X-CSRF-Token": csrfToken() },
  });
  const doc = await answer.json();
  section.replaceChildren();
  const title = document.createElement("h2");
  title.textContent = "Preview";
  section.append(title);
  const summary = document.createElement("p");
  if (!answer.ok) {
    summary.className = "error";
    summary.textContent = doc.message;
    section.append(summary);
  } else {
    const r = doc.recipients;
    summary.textContent = `${r.accepted} to send · ${r.invalid} invalid · ${r.duplicates} duplicates · ` +
      `${r.suppressed} opted out · ${doc.estimated_segments} segments (${doc.encoding})` +
      (doc.estimated_cost !== undefined ? ` · about ${doc.estimated_cost}` : "");
    section.append(summary);
    const table = document.createElement("table");
    for (const m of doc.messages) {
      const row = table.insertRow();
      row.insertCell().textContent = m.to;
      const text = document.createElement("pre");
      text.className = "message";
      text.textContent = m.text;
      row.insertCell().append(text);
      row.insertCell().textContent = `${m.segments} (${m.encoding})`;
    }
    section.append(table);
    for (const bad of (doc.invalid || []).slice(0, 20)) {
      const line = document.createElement("p");
      line.textContent = `row ${bad.row}: ${bad.input} (${bad.reason}${bad.field ? `: ${bad.field}` : ""})`;
      section.append(line);
    }
  }
  section.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  confirmations();
  const job = document.querySelector("#job");
  if (job) jobPage(job);
  const form = document.querySelector("#send-form");
  if (form) sendForm(form);
});
