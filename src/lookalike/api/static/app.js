// Lookalike web page: plain JavaScript, no build step, no network beyond this server.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);

const state = {
  query: null, // {kind: "file", file} | {kind: "url", url} | {kind: "id", id}
  box: null, // [x1, y1, x2, y2] in the photo's own pixels, or null for the whole photo
  viewing: null, // hit shown in the viewer
  detections: [], // subjects detected in the query photo: [{box, label, score}]
  searchSeq: 0,
};

function fileName(source) {
  if (!source) return "";
  const parts = source.replace(/\/+$/, "").split("/");
  return parts[parts.length - 1] || source;
}

// a second of a video as the CLI prints it (lookalike.moments.clock): 83.4 -> "01:23.4"
function clock(t) {
  const tenths = Math.round(t * 10);
  const hours = Math.floor(tenths / 36000), minutes = Math.floor((tenths % 36000) / 600);
  const seconds = ((tenths % 600) / 10).toFixed(1).padStart(4, "0");
  const text = `${String(minutes).padStart(2, "0")}:${seconds}`;
  return hours ? `${hours}:${text}` : text;
}

// what a hit is called: a video's frame by its video and the moment, a photo by its file name
function hitName(hit) {
  return hit.video ? `${fileName(hit.video_source)} @ ${clock(hit.t)}` : fileName(hit.source);
}

function apiKeyHeaders() {
  const key = localStorage.getItem("lookalike-api-key") || "";
  return key ? { "X-API-Key": key } : {};
}

// The key stays in this browser's localStorage and goes in the X-API-Key header of the page's own requests.
// Thumbnails and videos (<img>, <video>) cannot carry a header, so the service trades the key for an HttpOnly
// cookie holding a read-only token derived from it (never the key: scripts cannot read the cookie, and another
// app on this host that gets it cannot write with it). An emptied key drops the cookie.
async function saveKey(value) {
  localStorage.setItem("lookalike-api-key", value);
  document.cookie = "lookalike_api_key=; path=/; max-age=0; SameSite=Strict";  // the key's own cookie of old versions
  try {
    await fetch(`${API}/session`, value ? { method: "POST", headers: { "X-API-Key": value } } : { method: "DELETE" });
  } catch (e) { /* unreachable, or a key no header can hold: the loads that follow say what is wrong */ }
}

async function problemText(response) {
  try {
    const body = await response.json();
    if (body.title || body.detail) return `${body.title || "Error"}: ${body.detail || ""}`.trim();
  } catch (e) { /* not JSON */ }
  return `The server answered ${response.status} ${response.statusText}.`;
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "muted";
}

// --- library information ---------------------------------------------------------------------
async function loadStats() {
  try {
    const r = await fetch(`${API}/stats`, { headers: apiKeyHeaders() });
    if (r.status === 503) {
      $("stats").textContent = "The library is loading…";
      setTimeout(loadStats, 1000);
      return;
    }
    if (!r.ok) { $("stats").textContent = await problemText(r); return; }
    const s = await r.json();
    const subjects = s.objects ? ` · ${s.objects.toLocaleString()} subjects in ${s.photos_with_objects.toLocaleString()} photos` : "";
    $("stats").textContent = `${s.images.toLocaleString()} photos indexed${subjects} · model ${s.model} (${s.dim}-d) · ${s.index} index`;
    $("text-form").hidden = !s.text_search;  // only a CLIP-style model can read a description
  } catch (e) {
    $("stats").textContent = "Cannot reach the Lookalike server.";
  }
}

// The filter bar: each field of the library with its values (when few) or its range, as buttons that add a
// condition to the Fields box and search again. Values are quoted as the filter language quotes strings.
function quoted(text) { return `"${String(text).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`; }

function addCondition(condition) {
  const box = $("where");
  box.value = box.value.trim() ? `${box.value.trim()} and ${condition}` : condition;
  search();
}

// A string of the bar: a list holds it (contains), a text field is it (=), or, in a field that is a list in some
// photos and text in others, either (the summary's items and texts say which).
function valueCondition(f, value) {
  const inList = (f.items || []).includes(value), inText = (f.texts || []).includes(value);
  const contains = `${f.name} contains ${quoted(value)}`, equals = `${f.name} = ${quoted(value)}`;
  if (inList && inText) return `(${equals} or ${contains})`;
  return inList ? contains : equals;
}

// A number field's range: from/to inputs (the library's min and max as hints) that add name >= x and name <= y.
function rangeInputs(f) {
  const form = document.createElement("form");
  form.className = "range";
  form.title = `numbers from ${f.min} to ${f.max}`;
  const input = (bound, hint) => {
    const box = document.createElement("input");
    box.type = "number";
    box.step = "any";
    box.placeholder = String(hint);
    box.className = `range-${bound}`;
    box.setAttribute("aria-label", `${f.name} ${bound === "min" ? "from" : "to"}`);
    return box;
  };
  const low = input("min", f.min), high = input("max", f.max);
  const apply = document.createElement("button");
  apply.type = "submit";
  apply.className = "chip";
  apply.textContent = "filter";
  form.append(low, "–", high, apply);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const parts = [];
    for (const [box, op] of [[low, ">="], [high, "<="]]) {
      const text = box.value.trim();
      if (text === "") continue;
      const n = Number(text);
      if (!Number.isFinite(n)) { box.setCustomValidity("a number"); box.reportValidity(); return; }
      box.setCustomValidity("");
      parts.push(`${f.name} ${op} ${n}`);
    }
    if (parts.length) addCondition(parts.join(" and "));
  });
  return form;
}

async function loadFields() {
  try {
    const r = await fetch(`${API}/fields`, { headers: apiKeyHeaders() });
    if (!r.ok) return;
    const fields = await r.json();
    const bar = $("field-bar");
    bar.replaceChildren();
    bar.hidden = fields.length === 0;
    for (const f of fields) {
      const group = document.createElement("span");
      group.className = "field-group";
      const name = document.createElement("span");
      name.className = "field-name";
      name.textContent = f.name;
      group.append(name);
      if (f.values) {
        for (const [value, count] of Object.entries(f.values)) {
          const chip = document.createElement("button");
          chip.type = "button";
          chip.className = "chip";
          chip.textContent = `${value} (${count})`;
          chip.addEventListener("click", () => addCondition(valueCondition(f, value)));
          group.append(chip);
        }
      }
      if (f.min !== null && f.max !== null) group.append(rangeInputs(f));
      bar.append(group);
    }
  } catch (e) { /* the stats line already says the server is unreachable */ }
}

async function loadLabels() {
  loadFields();
  try {
    const r = await fetch(`${API}/labels`, { headers: apiKeyHeaders() });
    if (!r.ok) return;
    const labels = await r.json();
    for (const select of [$("label"), $("lib-label")]) {
      const current = select.value;
      select.innerHTML = '<option value="">any</option>';
      for (const name of Object.keys(labels).sort()) {
        const opt = document.createElement("option");
        opt.value = name;
        opt.textContent = `${name} (${labels[name]})`;
        select.appendChild(opt);
      }
      select.value = current;
    }
  } catch (e) { /* the stats line already says the server is unreachable */ }
}

// --- choosing a query ----------------------------------------------------------------------------
function showQueryImage(src) {
  $("query-view").hidden = false;
  const img = $("query-img");
  img.onload = () => { sizeCanvas(); drawBox(); };
  img.src = src;
}

function setFileQuery(file) {
  if (!file) return;
  state.query = { kind: "file", file };
  state.detections = [];
  state.box = null;
  $("clear-box").hidden = true;
  if (file.type && !file.type.startsWith("image/")) {
    $("query-view").hidden = true;
  } else {
    showQueryImage(URL.createObjectURL(file));
  }
  search();
}

function setUrlQuery(url) {
  state.query = { kind: "url", url };
  state.detections = [];
  state.box = null;
  $("clear-box").hidden = true;
  showQueryImage(url);
  search();
}

function setTextQuery(text) {
  state.query = { kind: "text", text };
  state.detections = [];
  state.box = null;
  $("clear-box").hidden = true;
  $("query-view").hidden = true;
  search();
}

function setIdQuery(hit) {
  state.query = { kind: "id", id: hit.id };
  state.detections = [];
  state.box = null;
  $("clear-box").hidden = true;
  showQueryImage(hit.original_url);
  search();
}

// --- region selection on the query photo ------------------------------------------------------------
let drag = null;

function sizeCanvas() {
  const img = $("query-img"), canvas = $("query-canvas");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
}

// A detected class is the detector's guess (80 COCO classes: a daffodil can come out as a "teddy bear"), never
// shown like a label: always with a question mark and how sure the detector was.
function guess(label, score) {
  return score === undefined || score === null ? `${label}?` : `${label}? ${Math.round(100 * score)}% sure`;
}

function drawDetections(ctx, sx, sy) {
  ctx.save();
  ctx.setLineDash([6, 4]);
  ctx.lineWidth = 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const det of state.detections) {
    const [x1, y1, x2, y2] = det.box;
    ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const text = guess(det.label, det.score);  // the detector's guess, with how sure it is
    ctx.fillStyle = "rgba(0,0,0,0.65)";
    ctx.fillRect(x1 * sx, y1 * sy, ctx.measureText(text).width + 8, 16);
    ctx.fillStyle = "#ffd400";
    ctx.fillText(text, x1 * sx + 4, y1 * sy + 12);
  }
  ctx.restore();
}

function drawBox(live) {
  const img = $("query-img"), canvas = $("query-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (img.naturalWidth && !live && !state.box) drawDetections(ctx, canvas.width / img.naturalWidth, canvas.height / img.naturalHeight);
  let rect = live;
  if (!rect && state.box && img.naturalWidth) {
    const sx = canvas.width / img.naturalWidth, sy = canvas.height / img.naturalHeight;
    rect = [state.box[0] * sx, state.box[1] * sy, state.box[2] * sx, state.box[3] * sy];
  }
  if (!rect) return;
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.clearRect(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]);
  ctx.strokeStyle = "#2656d9";
  ctx.lineWidth = 2;
  ctx.strokeRect(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]);
}

function canvasPoint(event) {
  const r = $("query-canvas").getBoundingClientRect();
  return [Math.min(Math.max(event.clientX - r.left, 0), r.width), Math.min(Math.max(event.clientY - r.top, 0), r.height)];
}

function setupRegionSelection() {
  const canvas = $("query-canvas");
  canvas.addEventListener("pointerdown", (e) => {
    drag = { start: canvasPoint(e) };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const p = canvasPoint(e), s = drag.start;
    drawBox([Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])]);
  });
  canvas.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const p = canvasPoint(e), s = drag.start;
    drag = null;
    const img = $("query-img");
    const w = Math.abs(p[0] - s[0]), h = Math.abs(p[1] - s[1]);
    if (w < 8 || h < 8 || !img.naturalWidth) {  // a click, not a drag: pick the detected subject under it
      const x = p[0] * img.naturalWidth / canvas.width, y = p[1] * img.naturalHeight / canvas.height;
      const hit = state.detections
        .filter((d) => d.box[0] <= x && x <= d.box[2] && d.box[1] <= y && y <= d.box[3])
        .sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]))[0];
      if (hit) {
        state.box = hit.box.map((v) => Math.round(v));
        $("clear-box").hidden = false;
        drawBox();
        search();
      } else {
        drawBox();
      }
      return;
    }
    const sx = img.naturalWidth / canvas.width, sy = img.naturalHeight / canvas.height;
    state.box = [Math.min(s[0], p[0]) * sx, Math.min(s[1], p[1]) * sy, Math.max(s[0], p[0]) * sx, Math.max(s[1], p[1]) * sy]
      .map((v, i) => Math.round(Math.min(v, i % 2 ? img.naturalHeight : img.naturalWidth)));
    $("clear-box").hidden = false;
    drawBox();
    search();
  });
  window.addEventListener("resize", () => { sizeCanvas(); drawBox(); });
}

// --- searching ---------------------------------------------------------------------------------------
function searchParams() {
  const params = { k: parseInt($("k").value, 10) || 12 };
  const minScore = parseFloat($("min-score").value);
  if (minScore > 0) params.min_score = minScore;
  if ($("label").value) params.label = $("label").value;
  if ($("where").value.trim()) params.where = $("where").value.trim();
  if (state.box) params.box = state.box;
  if ($("match").value) params.match = $("match").value;
  if ($("hide-copies").checked && state.query?.kind !== "text") params.hide_copies = true;
  if (!state.box) params.detect = true;  // subjects of the whole photo, drawn for clicking
  return params;
}

async function search() {
  if (!state.query) return;
  const seq = ++state.searchSeq;
  const params = searchParams();
  let init;
  if (state.query.kind === "file") {
    const form = new FormData();
    form.append("image", state.query.file, state.query.file.name || "pasted.png");
    for (const [key, value] of Object.entries(params)) form.append(key, Array.isArray(value) ? value.join(",") : value);
    init = { method: "POST", body: form, headers: apiKeyHeaders() };
  } else if (state.query.kind === "text") {
    const body = { text: state.query.text, k: params.k };
    if (params.min_score !== undefined) body.min_score = params.min_score;
    if (params.label) body.label = params.label;
    if (params.where) body.where = params.where;
    init = { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json", ...apiKeyHeaders() } };
  } else {
    const body = state.query.kind === "url" ? { url: state.query.url, ...params } : { image_id: state.query.id, ...params };
    init = { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json", ...apiKeyHeaders() } };
  }
  setStatus(state.box ? "Searching by the selected region…" : state.query.kind === "text" ? "Searching by the description…" : "Searching…", "loading");
  $("results").setAttribute("aria-busy", "true");
  try {
    const r = await fetch(`${API}/search`, init);
    if (seq !== state.searchSeq) return;  // a newer search has started
    if (!r.ok) {
      clearResults();  // an error replaces the previous search's results, never sits above them
      setStatus(`Search failed. ${await problemText(r)}`, "error");
      return;
    }
    const result = await r.json();
    if (result.query.objects) { state.detections = result.query.objects; drawBox(); }
    renderResults(result);
  } catch (e) {
    if (seq === state.searchSeq) {
      clearResults();
      console.error(e);  // the page's own error, if it was not the network: in the browser's console
      setStatus(e instanceof TypeError && /fetch|network/i.test(e.message) ? "Search failed: the server could not be reached."
        : `Search failed: ${e.message}`, "error");
    }
  } finally {
    $("results").removeAttribute("aria-busy");
  }
}

function clearResults() {
  state.result = null;
  $("results-tools").hidden = true;
  $("results").innerHTML = "";
  $("copies").innerHTML = "";
  $("copies-section").hidden = true;
  $("similar-heading").hidden = true;
}

// The order a person picks: the ranking's (best match), by file name, or the newest added first (ids grow as
// photos are added). Copies of the query stay in their strip, first.
function ordered(hits) {
  const how = $("result-order").value;
  if (how === "name") return [...hits].sort((a, b) => fileName(a.source).localeCompare(fileName(b.source)));
  if (how === "newest") return [...hits].sort((a, b) => b.id - a.id);
  return hits;
}

function exportResults(kind) {
  const hits = state.result ? ordered(state.result.hits) : [];
  const columns = ["rank", "id", "similarity", "copy", "copy_confidence", "same_object", "object_confidence", "label",
                   "source", "width", "height", "original_url"];
  // a cell that begins like a formula (a file name "=HYPERLINK(...)") is text, not a formula, in a spreadsheet
  const cell = (v) => {
    if (v === null || v === undefined) return "";
    const text = /^[=+\-@\t\r]/.test(String(v)) ? `'${v}` : String(v);
    return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const text = kind === "json" ? JSON.stringify({ query: state.result?.query, hits }, null, 2)
    : [columns.join(","), ...hits.map((h, i) => columns.map((c) => cell(c === "rank" ? i + 1 : c === "original_url"
      ? new URL(h.original_url, location.href).href : h[c])).join(","))].join("\n") + "\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: kind === "json" ? "application/json" : "text/csv" }));
  link.download = `lookalike-results.${kind}`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function renderResults(result) {
  const grid = $("results"), strip = $("copies");
  clearResults();
  state.result = result;
  $("results-tools").hidden = !result.hits.length;
  $("hide-copies").parentElement.hidden = state.query?.kind === "text";  // a text search judges no copies
  const copies = result.hits.filter((h) => h.copy), similar = ordered(result.hits.filter((h) => !h.copy));
  $("copies-section").hidden = !copies.length;
  $("similar-heading").hidden = !copies.length || !similar.length;
  if (!result.hits.length) {
    const why = $("label").value || $("where").value.trim() || parseFloat($("min-score").value) > 0 ? " Try lowering the minimum similarity or clearing the label and fields filters." : " The library may be empty: add photos below.";
    setStatus(`No similar photos found.${why}`, "muted");
    return;
  }
  const region = state.box ? " for the selected region" : "";
  const what = state.query && state.query.kind === "text" ? `photos matching “${state.query.text}”` : `similar photos${region}`;
  const same = copies.length ? `${copies.length} ${copies.length === 1 ? "copy" : "copies"} of your photo and ` : "";
  const objects = similar.filter((h) => h.same_object).length;
  const object = objects ? ` (${objects} showing the same object)` : "";
  setStatus(`${same}${similar.length} ${what}${object} in ${Math.round(result.took_ms)} ms.`, "muted");
  for (const hit of copies) strip.appendChild(hitCard(hit));
  for (const hit of similar) grid.appendChild(hitCard(hit));
  // on a phone the results begin below the query panel: bring them into view
  if (window.matchMedia("(max-width: 600px)").matches) $("results-panel").scrollIntoView({ block: "start" });
}

function regionBox(box, hit, className) {
  const el = document.createElement("div");
  el.className = className;
  const [x1, y1, x2, y2] = box;
  Object.assign(el.style, {
    left: `${(100 * x1) / hit.width}%`, top: `${(100 * y1) / hit.height}%`,
    width: `${(100 * (x2 - x1)) / hit.width}%`, height: `${(100 * (y2 - y1)) / hit.height}%`,
  });
  return el;
}

// One rule for the number on every card, in the viewer and in the CLI: the similarity (the cosine of the two
// photos' vectors, 0 to 1), which is what "Min similarity" filters on. The order is the ranking's: the same photo
// first, then the same object, then the rest, re-ranked by the library's neighbours (so it can differ a little from
// the similarity). A verdict is a word with how sure it is, never a second number in the same place.
const SIMILARITY = "similarity to your photo (0 to 1): what Min similarity filters on";

function verdictText(hit) {
  if (hit.copy) return `same photo · ${Math.round(100 * hit.copy_confidence)}% sure`;
  if (hit.same_object) return `same object · ${Math.round(100 * hit.object_confidence)}% sure`;
  return "";
}

// A photo's record on its card and in the viewer: its title (else nothing: the file name shows below), linked to
// its url field when that is an http(s) address, and its price. Built from text nodes only: a record is the user's
// data, never markup, and a link never runs script (javascript: and data: addresses are not links).
function safeLink(url) {
  if (typeof url !== "string") return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch { return null; }
}

function recordLine(fields, className) {
  fields = fields || {};
  const line = document.createElement("span");
  line.className = className;
  const title = typeof fields.title === "string" ? fields.title : typeof fields.name === "string" ? fields.name : "";
  const href = safeLink(fields.url) || safeLink(fields.link);
  if (title || href) {
    const el = document.createElement(href ? "a" : "span");
    el.className = "title";
    el.textContent = title || "link";
    el.title = href ? `${title} (${href})` : title;
    if (href) { el.href = href; el.target = "_blank"; el.rel = "noopener noreferrer"; el.addEventListener("click", (e) => e.stopPropagation()); }
    line.append(el);
  }
  if (typeof fields.price === "number" || (typeof fields.price === "string" && fields.price)) {
    const price = document.createElement("span");
    price.className = "price";
    price.textContent = typeof fields.price === "number" ? fields.price.toFixed(2) : fields.price;
    line.append(price);
  }
  return line;
}

function hitCard(hit) {
  const fig = document.createElement("figure");
  fig.className = hit.copy ? "hit copy" : hit.same_object ? "hit same-object" : "hit";
  fig.tabIndex = 0;
  fig.dataset.id = hit.id;
  fig.dataset.label = hit.label || "";
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  const frame = document.createElement("div");
  frame.className = "frame";
  frame.style.aspectRatio = `${hit.width} / ${hit.height}`;
  frame.style[hit.width >= hit.height ? "width" : "height"] = "100%";
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.label ? `photo labelled ${hit.label}` : "similar photo";
  img.src = hit.thumbnail_url;
  frame.appendChild(img);
  // what matched (a copy decided by its descriptor alone has no region: only the surest is checked by geometry)
  if (hit.copy && hit.copy_region?.match) frame.appendChild(regionBox(hit.copy_region.match, hit, "box region"));
  else if (hit.same_object && hit.object_region?.match) frame.appendChild(regionBox(hit.object_region.match, hit, "box region"));
  else if (hit.box) frame.appendChild(regionBox(hit.box, hit, "box"));  // the subject that matched best
  thumb.appendChild(frame);
  const cap = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.similarity.toFixed(2);
  score.title = SIMILARITY;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = hit.label || "";
  const source = document.createElement("span");
  source.className = "source";
  source.textContent = hitName(hit); // the file name always shows; the whole path on hover
  source.title = hit.video ? `${hit.video_source} at ${clock(hit.t)}` : hit.source || "";
  cap.append(score, label);
  if (hit.fields && Object.keys(hit.fields).length) cap.append(recordLine(hit.fields, "record"));
  const verdict = verdictText(hit);
  if (verdict) {
    const badge = document.createElement("span");
    badge.className = "verdict";
    badge.textContent = verdict;
    badge.title = "how sure the check of the two pictures is that they show the same photo (or the same object)";
    cap.append(badge);
  }
  if (hit.copy && hit.copy_region && hit.copy_region.mirrored) {
    const note = document.createElement("span");
    note.className = "matched";
    note.textContent = "mirrored";
    cap.append(note);
  }
  if (hit.detected_label) {
    const matched = document.createElement("span");
    matched.className = "matched";
    matched.textContent = `matched a subject: ${guess(hit.detected_label, hit.detected_score)}`;
    matched.title = "the subject of this photo that matched best; its class is the detector's guess (COCO classes), not the photo's label";
    cap.append(matched);
  }
  cap.append(source);
  fig.append(thumb, cap);
  fig.addEventListener("click", () => openViewer(hit));
  onActivate(fig, () => openViewer(hit));
  return fig;
}

// --- viewer -----------------------------------------------------------------------------------------
// Enter or Space on a focused card opens it. The key's default action is cancelled: the viewer takes the focus at
// once, and an Enter left to run would press the viewer's first button (Close) and shut it again.
function onActivate(el, open) {
  el.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    e.preventDefault();
    open();
  });
}

function openViewer(hit) {
  state.viewing = hit;
  state.opener = document.activeElement;  // focus goes back there when the viewer closes
  $("viewer-img").src = hit.original_url;
  showVideo(hit);
  $("viewer-open").href = hit.original_url;
  $("viewer-download").href = hit.original_url;
  $("viewer-download").download = fileName(hit.source) || `photo-${hit.id}`;
  const verdict = verdictText(hit);
  const scores = hit.similarity === undefined ? "" : ` · similarity ${hit.similarity.toFixed(2)}${verdict ? " · " + verdict : ""}`;
  $("viewer-meta").textContent = `#${hit.id}${scores}${hit.label ? " · " + hit.label : ""} · ${hit.width}×${hit.height} · ${hit.source || ""}`;
  $("viewer-result").textContent = "";
  $("viewer-result").className = "";
  showRecord(hit.fields || {});
  $("viewer").showModal();
  if (!hit.fields) loadRecord(hit.id);  // a duplicates pair or an older answer: ask for it
}

// a video's frame: its video plays from that second (a media fragment; the server answers the player's Range requests)
function showVideo(hit) {
  const video = $("viewer-video");
  const playable = Boolean(hit.video && hit.video_url);
  video.hidden = !playable;
  $("viewer-img").hidden = playable;
  if (!playable) {
    video.removeAttribute("src");
    video.load();
    return;
  }
  video.poster = hit.original_url;
  video.src = `${hit.video_url}#t=${hit.t}`;
}

function showRecord(fields) {
  $("viewer-record").replaceChildren(recordLine(fields, "record"));
  $("fields-text").value = JSON.stringify(fields, null, 2);
}

async function loadRecord(id) {
  const r = await fetch(`${API}/images/${id}`, { headers: apiKeyHeaders() });
  if (r.ok && state.viewing && state.viewing.id === id) showRecord((await r.json()).fields || {});
}

// Saving sends only what changed: new and changed names with their values, removed names as null (PATCH merges).
async function saveFields() {
  const hit = state.viewing;
  if (!hit) return;
  let wanted;
  try {
    wanted = JSON.parse($("fields-text").value || "{}");
    if (wanted === null || typeof wanted !== "object" || Array.isArray(wanted)) throw new Error("not an object");
  } catch (e) {
    $("viewer-result").className = "error";
    $("viewer-result").textContent = `The fields are not a JSON object (${e.message}).`;
    return;
  }
  const before = hit.fields || {};
  const changes = Object.create(null);  // a field named __proto__ is a field here, not the prototype
  for (const [k, v] of Object.entries(wanted)) if (JSON.stringify(before[k]) !== JSON.stringify(v)) changes[k] = v;
  for (const k of Object.keys(before)) if (!Object.hasOwn(wanted, k)) changes[k] = null;
  const r = await fetch(`${API}/images/${hit.id}`, {
    method: "PATCH", headers: { ...apiKeyHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify({ fields: changes }),
  });
  if (!r.ok) {
    $("viewer-result").className = "error";
    $("viewer-result").textContent = await problemText(r);
    return;
  }
  hit.fields = (await r.json()).fields;
  showRecord(hit.fields);
  $("viewer-result").className = "";
  $("viewer-result").textContent = "Fields saved.";
}

async function deleteViewed() {
  const hit = state.viewing;
  if (!hit || !confirm(`Delete photo #${hit.id} (${fileName(hit.source)}) from the library? Its file stays where it is, and later index runs leave it out.`)) return;
  const r = await fetch(`${API}/images/${hit.id}`, { method: "DELETE", headers: apiKeyHeaders() });
  if (r.status !== 204) {
    $("viewer-result").className = "error";
    $("viewer-result").textContent = await problemText(r);
    return;
  }
  $("viewer").close();
  document.querySelectorAll(`[data-id="${hit.id}"]`).forEach((el) => el.remove());
  loadStats();
  loadLabels();
  if (!$("library-panel").hidden) loadGallery();
}

// --- the library: every photo, a page at a time ----------------------------------------------------------
const PAGE = 48;
state.page = 0;

async function loadGallery() {
  const params = new URLSearchParams({ sort: $("lib-sort").value, limit: PAGE, offset: state.page * PAGE });
  if ($("lib-label").value) params.set("label", $("lib-label").value);
  if ($("lib-name").value.trim()) params.set("name", $("lib-name").value.trim());
  const status = $("lib-status");
  status.className = "muted loading";
  status.textContent = "Loading…";
  let body;
  try {
    const r = await fetch(`${API}/images?${params}`, { headers: apiKeyHeaders() });
    if (!r.ok) { status.className = "error"; status.textContent = await problemText(r); return; }
    body = await r.json();
  } catch (e) { status.className = "error"; status.textContent = "Cannot reach the Lookalike server."; return; }
  const pages = Math.max(1, Math.ceil(body.total / PAGE));
  $("lib-page").textContent = `page ${state.page + 1} of ${pages}`;
  $("lib-prev").disabled = state.page === 0;
  $("lib-next").disabled = state.page + 1 >= pages;
  status.className = "muted";
  status.textContent = body.total ? `${body.total.toLocaleString()} photos` :
    ($("lib-name").value.trim() ? "No photo's file name contains this." : $("lib-label").value ? "No photo has this label."
      : "The library is empty: add photos below, or run `lookalike index FOLDER`.");
  const grid = $("gallery");
  grid.innerHTML = "";
  for (const photo of body.images) {
    const fig = document.createElement("figure");
    fig.className = "hit";
    fig.tabIndex = 0;
    fig.dataset.id = photo.id;
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const img = document.createElement("img");
    img.loading = "lazy";
    img.src = photo.thumbnail_url;
    img.alt = photo.label ? `photo labelled ${photo.label}` : "a photo of the library";
    img.style.maxWidth = "100%";
    img.style.maxHeight = "100%";
    thumb.appendChild(img);
    const cap = document.createElement("figcaption");
    const name = document.createElement("span");
    name.className = "source";
    name.textContent = fileName(photo.source);
    name.title = photo.source || "";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = photo.label || "";
    cap.append(label, name);
    if (photo.fields && Object.keys(photo.fields).length) cap.append(recordLine(photo.fields, "record"));
    fig.append(thumb, cap);
    fig.addEventListener("click", () => openViewer(photo));
    onActivate(fig, () => openViewer(photo));
    grid.appendChild(fig);
  }
}

function showView(name) {
  const library = name === "library", dups = name === "duplicates", search = !library && !dups;
  $("library-panel").hidden = !library;
  $("duplicates-panel").hidden = !dups;
  $("query-panel").hidden = !search;
  $("results-panel").hidden = !search;
  $("tab-search").setAttribute("aria-pressed", String(search));
  $("tab-library").setAttribute("aria-pressed", String(library));
  $("tab-duplicates").setAttribute("aria-pressed", String(dups));
  if (library) loadGallery();
  if (dups) loadDuplicates();
}

// --- duplicates: the same picture more than once, side by side ------------------------------------------------
async function loadDuplicates() {
  const box = $("dup-groups");
  box.innerHTML = "";
  $("dup-status").textContent = "Comparing every photo with its nearest ones…";
  try {
    const r = await fetch(`${API}/duplicates`, { headers: apiKeyHeaders() });
    if (!r.ok) { $("dup-status").textContent = await problemText(r); return; }
    const { groups, exact } = await r.json();
    const extra = groups.reduce((n, g) => n + g.remove.length, 0);
    const paths = exact.length ? ` ${exact.length} ${exact.length === 1 ? "file is" : "files are"} found under several paths (stored once, listed below).` : "";
    $("dup-status").textContent = (groups.length
      ? `${groups.length} ${groups.length === 1 ? "picture" : "pictures"} held more than once (${extra} ${extra === 1 ? "photo" : "photos"} to remove). The photo holding the others is marked “keep”; a photo is marked “remove” only when it lies whole in it.`
      : "No duplicates: every picture is in the library once.") + paths;
    for (const g of groups) box.appendChild(duplicateGroup(g));
    if (exact.length) box.appendChild(exactList(exact));
  } catch (e) {
    $("dup-status").textContent = "Cannot reach the Lookalike server.";
  }
}

// A group of copies of one picture: each photo kept or to remove, with how sure the check is that it is a copy,
// and one button that removes those marked "remove" (after asking; later index runs leave their files out).
function duplicateGroup(g) {
  const row = document.createElement("div");
  row.className = "dup-group";
  for (const p of g.photos) {
    const fig = document.createElement("figure");
    fig.className = p.keep ? "hit keep" : "hit";
    fig.dataset.id = p.id;
    fig.tabIndex = 0;
    const img = document.createElement("img");
    img.src = p.thumbnail_url;
    img.alt = fileName(p.source) || `photo ${p.id}`;
    const cap = document.createElement("figcaption");
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = `${p.keep ? "keep" : "remove"} · ${Math.round(100 * p.confidence)}% sure`;
    verdict.title = "how sure the check of the two pictures is that this photo is a copy of another in its group";
    const about = document.createElement("span");
    about.className = "source";
    about.textContent = `${p.width}×${p.height} · ${fileName(p.source)}`;
    about.title = p.source || "";
    cap.append(verdict, about);
    fig.append(img, cap);
    fig.addEventListener("click", () => openViewer({ ...p, label: null }));
    onActivate(fig, () => openViewer({ ...p, label: null }));
    row.appendChild(fig);
  }
  if (g.changed && g.changed.length) {
    const note = document.createElement("p");
    note.className = "dup-changed";
    note.textContent = "Nothing to remove here: a file of this group changed or vanished since it was indexed. Index it again first.";
    row.appendChild(note);
  }
  if (g.remove.length) {
    const act = document.createElement("button");
    act.type = "button";
    act.className = "danger";
    act.textContent = `Remove the ${g.remove.length === 1 ? "copy" : g.remove.length + " copies"} marked “remove”…`;
    act.addEventListener("click", () => removeCopies(g, act));
    row.appendChild(act);
  }
  return row;
}

async function removeCopies(g, button) {
  const names = g.photos.filter((p) => !p.keep).map((p) => fileName(p.source) || `#${p.id}`).join(", ");
  if (!confirm(`Remove ${names} from the library? The files stay where they are, and later index runs leave them out.`)) return;
  button.disabled = true;
  const failed = [];
  for (const id of g.remove) {
    try {
      // only while the photo kept in its place is still there (the list may be older than the last index run)
      const r = await fetch(`${API}/images/${id}?kept=${g.keep}`, { method: "DELETE", headers: apiKeyHeaders() });
      if (r.status !== 204 && r.status !== 404) failed.push(`#${id}: ${await problemText(r)}`);
    } catch (e) {
      failed.push(`#${id}: the server could not be reached`);
    }
  }
  if (failed.length) {
    $("dup-status").textContent = `Could not remove ${failed.join("; ")}`;
    button.disabled = false;
    return;
  }
  loadStats();
  loadDuplicates();
}

function exactList(exact) {
  const section = document.createElement("section");
  section.className = "dup-exact";
  const heading = document.createElement("h2");
  heading.textContent = "The same file under several paths (stored once)";
  const list = document.createElement("ul");
  for (const e of exact) {
    const item = document.createElement("li");
    item.textContent = `#${e.id}: ${e.sources.join("  ·  ")}`;
    list.appendChild(item);
  }
  section.append(heading, list);
  return section;
}

// --- adding photos ------------------------------------------------------------------------------------
function upload(event) {
  event.preventDefault();
  uploadFiles([...$("add-files").files]);
}

// Photos dropped on the page, many at once or whole folders, are added to the library (one photo is searched with)
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.some((e) => e.isDirectory)) return [...dataTransfer.files];
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) { files.push(await new Promise((ok, fail) => entry.file(ok, fail))); return; }
    const reader = entry.createReader();
    for (;;) {  // readEntries hands a folder over in batches
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child);
    }
  };
  for (const entry of entries) await walk(entry);
  return files.filter((f) => !f.name.startsWith("."));
}

function uploadFiles(files) {
  $("add-panel").open = true;
  const result = $("add-result");
  result.className = "";
  if (!files.length) { result.textContent = "Choose one or more photos first."; return; }
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  if ($("add-label").value.trim()) form.append("label", $("add-label").value.trim());
  if ($("add-objects").checked) form.append("objects", "true");
  saveKey($("api-key").value);
  const xhr = new XMLHttpRequest();
  const bar = $("add-progress");
  bar.hidden = false;
  bar.value = 0;
  result.textContent = `Uploading ${files.length} photo(s)…`;
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
  xhr.upload.onload = () => { result.textContent = "Indexing…"; };
  xhr.onerror = () => { result.className = "error"; result.textContent = "Upload failed: the server could not be reached."; };
  xhr.onload = () => {
    bar.hidden = true;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* handled below */ }
    if (xhr.status >= 400) {
      result.className = "error";
      result.textContent = `Upload failed. ${body.title || xhr.status}: ${body.detail || xhr.statusText}`;
      return;
    }
    if (xhr.status === 202 && body.job) { followJob(body.job.id, result); return; }
    const parts = [`${body.added.length} added`, `${body.duplicates.length} already in the library`];
    if (body.rejected.length) parts.push(`${body.rejected.length} rejected (${body.rejected.map((r) => `${r.name}: ${r.reason}`).join("; ")})`);
    result.textContent = parts.join(", ") + ".";
    if (body.rejected.length) result.className = "error";
    loadStats();
    loadLabels();
  };
  xhr.open("POST", `${API}/images`);
  for (const [k, v] of Object.entries(apiKeyHeaders())) xhr.setRequestHeader(k, v);
  xhr.send(form);
}

// a long upload is indexed by a queued job: follow its progress until it ends
async function followJob(id, result) {
  for (;;) {
    const r = await fetch(`${API}/jobs/${id}`, { headers: apiKeyHeaders() });
    const job = await r.json();
    if (!r.ok) { result.className = "error"; result.textContent = `Job ${id}: ${job.detail || r.status}`; return; }
    const progress = `${job.done} of ${job.total ?? "?"}`;
    if (["done", "failed", "cancelled"].includes(job.state)) {
      result.className = job.state === "done" ? "" : "error";
      result.textContent = `Job ${id} ${job.state}: ${job.added} added, ${job.duplicates} already in the library, ` +
        `${job.rejected} rejected${job.error ? ` (${job.error})` : ""}.`;
      loadStats();
      loadLabels();
      return;
    }
    result.textContent = `Queued as job ${id}: ${job.state}, ${progress} photos…`;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// --- wiring ---------------------------------------------------------------------------------------------
async function setup() {
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (e.target === drop || e.target.tagName === "P") $("file-input").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file-input").click(); });
  $("file-input").addEventListener("change", (e) => setFileQuery(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const folder = [...e.dataTransfer.items].some((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()?.isDirectory);
    if (folder || e.dataTransfer.files.length > 1) {
      droppedFiles(e.dataTransfer).then(uploadFiles).catch((err) => {
        $("add-panel").open = true;
        $("add-result").className = "error";
        $("add-result").textContent = `Could not read the dropped files: ${err.message || err}`;
      });
    }
    else if (e.dataTransfer.files.length) setFileQuery(e.dataTransfer.files[0]);
    else {
      const url = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
      if (url && /^https?:\/\//.test(url)) setUrlQuery(url.trim());
    }
  });
  document.addEventListener("paste", (e) => {
    if (e.target.tagName === "INPUT") return;  // pasting text into a field
    const file = [...(e.clipboardData?.files || [])][0];
    if (file) { e.preventDefault(); setFileQuery(file); return; }
    const text = e.clipboardData?.getData("text/plain") || "";
    if (/^https?:\/\//.test(text.trim())) { e.preventDefault(); setUrlQuery(text.trim()); }
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("url-input").value.trim();
    if (url) setUrlQuery(url);
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text-input").value.trim();
    if (text) setTextQuery(text);
  });
  $("min-score").addEventListener("input", () => { $("min-score-value").textContent = parseFloat($("min-score").value).toFixed(2); });
  $("min-score").addEventListener("change", search);
  $("k").addEventListener("change", search);
  $("label").addEventListener("change", search);
  $("where").addEventListener("change", search);  // Enter or leaving the box: one search, not one per key
  $("match").addEventListener("change", search);
  $("clear-box").addEventListener("click", () => { state.box = null; $("clear-box").hidden = true; drawBox(); search(); });
  $("viewer").addEventListener("close", () => {
    $("viewer-video").pause();
    if (state.opener && state.opener.isConnected) state.opener.focus();
    state.opener = null;
  });
  $("save-fields").addEventListener("click", saveFields);
  $("more-like-this").addEventListener("click", () => { $("viewer").close(); if (state.viewing) { showView("search"); setIdQuery(state.viewing); } });
  $("delete-photo").addEventListener("click", deleteViewed);
  $("tab-search").addEventListener("click", () => showView("search"));
  $("tab-library").addEventListener("click", () => showView("library"));
  $("tab-duplicates").addEventListener("click", () => showView("duplicates"));
  $("lib-sort").addEventListener("change", () => { state.page = 0; loadGallery(); });
  $("lib-label").addEventListener("change", () => { state.page = 0; loadGallery(); });
  let typing;
  $("lib-name").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { state.page = 0; loadGallery(); }, 250); });
  $("result-order").addEventListener("change", () => { if (state.result) renderResults(state.result); });
  $("hide-copies").addEventListener("change", search);
  $("export-csv").addEventListener("click", () => exportResults("csv"));
  $("export-json").addEventListener("click", () => exportResults("json"));
  $("lib-prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadGallery(); });
  $("lib-next").addEventListener("click", () => { state.page += 1; loadGallery(); });
  $("add-form").addEventListener("submit", upload);
  $("api-key").value = localStorage.getItem("lookalike-api-key") || "";
  $("api-key").addEventListener("change", async () => { await saveKey($("api-key").value); loadStats(); loadLabels(); });
  setupRegionSelection();
  await saveKey($("api-key").value);  // the read cookie first: thumbnails need it when reads need the key
  loadStats();
  loadLabels();
}

document.addEventListener("DOMContentLoaded", setup);
