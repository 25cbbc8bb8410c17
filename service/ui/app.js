// The page at /ui: plain JavaScript over the service's public API, no build step, no CDN.
// Every URL is relative to the page (/ui), so the page works behind a path prefix too.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { textItems: false, modalities: [], placing: null };

function headers(json) {
  const result = { accept: "application/json" };
  const key = $("api-key").value.trim();
  if (key) result["X-API-Key"] = key;
  if (json) result["content-type"] = "application/json";
  return result;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const error = new Error(describe(response.status, data));
    error.status = response.status;
    throw error;
  }
  return data;
}

function describe(status, data) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) {
    return `${status}: ` + detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `${status}: ${typeof detail === "string" ? detail : JSON.stringify(data)}`;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function badge(text, kind) { return el("span", text, `badge ${kind || text}`); }

function when(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function say(id, text, bad) {
  $(id).textContent = text;
  $(id).classList.toggle("error", Boolean(bad));
}

// ---- the model: version, index size, last retrain ------------------------------------------

async function loadModel() {
  const ready = await fetch("readyz").then((r) => r.json()).catch(() => null);
  if (ready) {
    $("model-version").textContent = ready.model_version || "none loaded";
    $("index-items").textContent = ready.index_items;
    state.modalities = ready.modalities || [];
  }
  const info = await api("GET", "ui/model").catch(() => null);
  if (info) {
    state.textItems = info.text_items;
    const users = $("users");
    users.replaceChildren(...info.sample_users.map((u) => { const o = el("option"); o.value = u; return o; }));
    showRetrain(info.last_retrain);
    showOnline(info.online || []);
  }
  prepareAddForm();
  document.body.dataset.loaded = "1";
}

function showRetrain(decision) {
  const node = $("retrain");
  node.replaceChildren();
  if (!decision) { node.textContent = "none recorded"; return; }
  node.append(badge(decision.accepted ? "accepted" : "rejected"));
  const what = decision.accepted
    ? ` published ${decision.published || "?"}`
    : ` ${decision.reasons.join("; ") || "no reason given"}`;
  node.append(el("span", `${what} (${when(decision.finished_at)})`));
  const valid = decision.valid || {};
  if (decision.metric && valid.candidate !== undefined) {
    node.title = `${decision.metric}: candidate ${valid.candidate}, live ${valid.live}`;
  }
}

function showOnline(rows) {
  const node = $("online");
  const measured = rows.filter((r) => r.interactions > 0);
  if (!measured.length) { node.textContent = "no interactions after a served list yet"; return; }
  const pct = (x) => `${(100 * x).toFixed(1)}%`;
  node.replaceChildren(...measured.map((r) => el("div",
    `${r.model_version}: ${pct(r.hit_rate)} of ${r.interactions} interactions hit a served list ` +
    `(warm ${pct(r.warm_hit_rate)}, new ${pct(r.new_hit_rate)})`)));
}

// ---- a user: history and recommendations ---------------------------------------------------

async function showUser(user) {
  const k = Math.max(1, Math.min(200, Number($("k").value) || 20));
  history.replaceState(null, "", `#user=${encodeURIComponent(user)}`);
  say("user-status", `loading ${user}…`);
  const path = encodeURIComponent(user);
  const [past, recs] = await Promise.allSettled([
    api("GET", `users/${path}/history?limit=20`), api("GET", `recommend/${path}?k=${k}`),
  ]);
  renderHistory(past);
  if (recs.status === "rejected") {
    $("recs").tBodies[0].replaceChildren();
    $("list-source").textContent = "";
    say("user-status", recs.reason.message, true);
    return;
  }
  const list = recs.value;
  const details = await Promise.all(list.items.map((item) =>
    api("GET", `items/${encodeURIComponent(item.item_id)}`).catch(() => ({}))));
  renderRecommendations(list, details);
  let text = `${list.items.length} items for ${user} from model ${list.model_version}`;
  if (state.placing) {
    const at = list.items.findIndex((item) => item.item_id === state.placing);
    text = at >= 0 ? `${state.placing} lands at #${at + 1} of ${list.items.length} for ${user}`
      : `${state.placing} is not in ${user}'s top ${list.items.length}`;
    if (at < 0 && list.cached) text += " (this list came from the cache: a new item shows when it expires)";
    say("add-status", text);
  }
  say("user-status", `${list.items.length} items for ${user} · model ${list.model_version}`);
}

function renderHistory(result) {
  const list = $("history");
  list.replaceChildren();
  if (result.status === "rejected") {
    list.append(el("li", `no history: ${result.reason.message}`, "muted"));
    return;
  }
  const items = result.value.items || [];
  if (!items.length) list.append(el("li", "no interactions yet", "muted"));
  for (const item of items) {
    const row = el("li");
    row.append(el("span", item.title || item.item_id, "name"));
    if (item.title) row.append(el("span", ` ${item.item_id}`, "muted"));
    if (item.ts) row.append(el("span", ` · ${when(item.ts)}`, "muted"));
    list.append(row);
  }
}

function renderRecommendations(list, details) {
  $("list-source").textContent = list.source + (list.cached ? " · cached" : "");
  const rows = list.items.map((item, i) => {
    const detail = details[i] || {};
    const title = item.title || detail.title;
    const row = el("tr");
    row.dataset.item = item.item_id;
    if (item.item_id === state.placing) row.className = "placed";
    row.append(el("td", i + 1, "rank"));
    const name = el("td");
    name.append(el("span", title || item.item_id, "name"));
    if (title) name.append(el("span", ` ${item.item_id}`, "muted"));
    row.append(name, el("td", item.score.toFixed(4), "score"));
    const badges = el("td", null, "badges");
    if (detail.source) badges.append(badge(detail.source));
    if (item.new) badges.append(badge("new"));
    if (item.reserved) badges.append(badge("reserved"));
    row.append(badges);
    return row;
  });
  $("recs").tBodies[0].replaceChildren(...rows);
}

// ---- items: search, add --------------------------------------------------------------------

async function search(q) {
  say("search-status", "searching…");
  let items, total;
  try {
    const page = await api("GET", `items?limit=20&q=${encodeURIComponent(q)}`);
    items = page.items; total = page.total;
  } catch (error) {
    if (error.status !== 405 || !q) { say("search-status", error.message, true); return; }
    // a service without the listing: an exact id lookup
    const one = await api("GET", `items/${encodeURIComponent(q)}`).catch(() => null);
    items = one ? [one] : []; total = items.length;
  }
  const rows = items.map((item) => {
    const row = el("tr");
    const name = el("td");
    name.append(el("span", item.title || item.item_id, "name"));
    if (item.title) name.append(el("span", ` ${item.item_id}`, "muted"));
    const badges = el("td", null, "badges");
    if (item.source) badges.append(badge(item.source));
    if (item.new) badges.append(badge("new"));
    row.append(name, badges);
    return row;
  });
  $("results").tBodies[0].replaceChildren(...rows);
  say("search-status", `${total} match${total === 1 ? "" : "es"}`);
}

function prepareAddForm() {
  const body = $("new-body");
  if (state.textItems) {
    $("new-label").textContent = "Text (title #tags)";
    body.placeholder = "A new video about cooking pasta #food #recipe";
    return;
  }
  $("new-label").textContent = "Features (JSON, one vector a modality)";
  const random = () => Math.round((Math.random() * 2 - 1) * 1000) / 1000;
  const features = Object.fromEntries(state.modalities.map((m) =>
    [m.name, Array.from({ length: m.dim }, random)]));
  body.value = JSON.stringify(features);
}

async function addItem(itemId, raw) {
  let item;
  try {
    item = state.textItems ? { item_id: itemId, text: raw }
      : { item_id: itemId, features: JSON.parse(raw) };
  } catch (error) { say("add-status", `not JSON: ${error.message}`, true); return; }
  say("add-status", `adding ${itemId}…`);
  try {
    const done = await api("POST", "items", { items: [item] });
    say("add-status", `added ${itemId} (model ${done.model_version})`);
  } catch (error) { say("add-status", error.message, true); return; }
  state.placing = itemId;
  const user = $("user").value.trim();
  if (user) await showUser(user);
}

// ---- wiring --------------------------------------------------------------------------------

$("api-key").value = sessionStorage.getItem("recsys-api-key") || "";
$("api-key").addEventListener("input", () => sessionStorage.setItem("recsys-api-key", $("api-key").value));
$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.placing = null;
  say("add-status", "");
  showUser($("user").value.trim());
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search($("q").value.trim());
});
$("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  addItem($("new-id").value.trim(), $("new-body").value);
});

loadModel().then(() => {
  const match = location.hash.match(/^#user=(.+)$/);
  if (match) {
    $("user").value = decodeURIComponent(match[1]);
    showUser($("user").value);
  }
});
