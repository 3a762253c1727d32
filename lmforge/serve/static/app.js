// lmforge serve web page: plain JS over the server's own OpenAI-compatible API.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { models: [], chat: [], explore: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value || localStorage.getItem("lmforge-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
function status(text) { $("status").textContent = text || ""; }
async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error ? data.error.message : r.statusText);
  return data;
}
// Server-sent events from a POST: calls onData(obj) per chunk until [DONE].
async function stream(path, body, onData) {
  const r = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!r.ok) { const d = await r.json(); throw new Error(d.error ? d.error.message : r.statusText); }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
      if (!line.startsWith("data: ")) continue;
      const payload = line.slice(6);
      if (payload === "[DONE]") return;
      onData(JSON.parse(payload));
    }
  }
}
const model = () => $("model").value;

async function loadModels() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (!r.ok) { status("cannot list models (API key?)"); return; }
  state.models = (await r.json()).data;
  $("model").innerHTML = state.models.map((m) =>
    `<option value="${m.id}">${m.id} (${m.kind})</option>`).join("");
}

// --- chat -------------------------------------------------------------------------
function addMsg(role, text) {
  const d = document.createElement("div");
  d.className = "msg " + role; d.textContent = (role === "user" ? "you: " : "") + text;
  $("chat-log").appendChild(d); return d;
}
$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  state.chat.push({ role: "user", content: text });
  addMsg("user", text);
  const out = addMsg("assistant", ""); out.dataset.done = "0";
  let reply = "";
  try {
    const body = { model: model(), messages: state.chat, stream: true };
    if ($("chat-temp").value !== "") body.temperature = +$("chat-temp").value;
    await stream("/v1/chat/completions", body, (d) => {
      const c = d.choices[0]; if (c && c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; }
    });
    state.chat.push({ role: "assistant", content: reply });
    status("");
  } catch (e) { status(e.message); }
  out.dataset.done = "1";
});
$("chat-reset").addEventListener("click", () => { state.chat = []; $("chat-log").innerHTML = ""; });

// --- completion playground ----------------------------------------------------------
$("complete-run").addEventListener("click", async () => {
  const body = { model: model(), prompt: $("complete-prompt").value, stream: true,
    max_tokens: +$("c-max").value, temperature: +$("c-temp").value, top_p: +$("c-topp").value,
    top_k: +$("c-topk").value };
  if ($("c-seed").value !== "") body.seed = +$("c-seed").value;
  if ($("c-stop").value) body.stop = [$("c-stop").value.replace(/\\n/g, "\n")];
  $("complete-out").textContent = "";
  try { await stream("/v1/completions", body, (d) => { $("complete-out").textContent += d.choices[0] ? d.choices[0].text : ""; }); status(""); }
  catch (e) { status(e.message); }
});

// --- classify / translate -----------------------------------------------------------
const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
$("classify-run").addEventListener("click", async () => {
  try {
    const d = await post("/v1/classify", { model: model(), input: lines("classify-input") });
    $("classify-out").innerHTML = "<tr><th>text</th><th>label</th><th>p</th></tr>" + d.data.map((r, i) =>
      `<tr><td>${esc(lines("classify-input")[i])}</td><td>${esc(r.label)}</td><td>${r.probabilities[r.label].toFixed(3)}</td></tr>`).join("");
    status("");
  } catch (e) { status(e.message); }
});
$("translate-run").addEventListener("click", async () => {
  try {
    const d = await post("/v1/translate", { model: model(), input: lines("translate-input"), beam_size: +$("t-beam").value });
    $("translate-out").textContent = d.data.map((r) => r.translation).join("\n"); status("");
  } catch (e) { status(e.message); }
});
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }

// --- embeddings: PCA to 2-D (power iteration) and a scatter plot ----------------------
function pca2(X) {
  const n = X.length, d = X[0].length, mean = new Array(d).fill(0);
  X.forEach((r) => r.forEach((v, j) => { mean[j] += v / n; }));
  const C = X.map((r) => r.map((v, j) => v - mean[j]));
  const comps = [];
  for (let k = 0; k < 2; k++) {
    let v = Array.from({ length: d }, (_, j) => Math.sin(j + 1 + k));
    for (let it = 0; it < 100; it++) {
      const s = C.map((r) => r.reduce((a, x, j) => a + x * v[j], 0));
      let w = new Array(d).fill(0);
      C.forEach((r, i) => r.forEach((x, j) => { w[j] += x * s[i]; }));
      comps.forEach((u) => { const p = w.reduce((a, x, j) => a + x * u[j], 0); w = w.map((x, j) => x - p * u[j]); });
      const norm = Math.hypot(...w) || 1; v = w.map((x) => x / norm);
    }
    comps.push(v);
  }
  return C.map((r) => comps.map((u) => r.reduce((a, x, j) => a + x * u[j], 0)));
}
$("embed-run").addEventListener("click", async () => {
  try {
    const texts = lines("embed-input");
    const d = await post("/v1/embeddings", { model: model(), input: texts });
    const P = pca2(d.data.map((r) => r.embedding));
    const xs = P.map((p) => p[0]), ys = P.map((p) => p[1]);
    const sx = (x) => 40 + 440 * (x - Math.min(...xs)) / ((Math.max(...xs) - Math.min(...xs)) || 1);
    const sy = (y) => 320 - 280 * (y - Math.min(...ys)) / ((Math.max(...ys) - Math.min(...ys)) || 1);
    $("embed-plot").innerHTML = P.map((p, i) => `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="5" fill="#36c"/>` +
      `<text x="${sx(p[0]) + 7}" y="${sy(p[1]) + 4}" font-size="12">${esc(texts[i])}</text>`).join("");
    status("");
  } catch (e) { status(e.message); }
});

// --- attention explorer and logit lens ------------------------------------------------
function fillSelect(id, n) { $(id).innerHTML = Array.from({ length: n }, (_, i) => `<option>${i}</option>`).join(""); }
$("explore-run").addEventListener("click", async () => {
  try {
    const d = await post("/v1/explore", { model: model(), input: $("explore-input").value,
                                           ablation: $("x-ablation").checked });
    state.explore = d;
    fillSelect("x-layer", d.attention.length); fillSelect("x-head", d.attention[0].length);
    $("explore-tokens").innerHTML = d.tokens.map((t, i) => `<span class="tok" data-i="${i}">${esc(t)}</span>`).join("");
    document.querySelectorAll(".tok").forEach((el) => el.addEventListener("mouseenter", () => highlight(+el.dataset.i)));
    lensTable(d); ablationTable(d); status("");
  } catch (e) { status(e.message); }
});
function highlight(q) {
  const d = state.explore; if (!d) return;
  const w = d.attention[+$("x-layer").value][+$("x-head").value][q];
  document.querySelectorAll(".tok").forEach((el, k) => {
    const a = k < w.length ? w[k] : 0;
    el.style.background = `rgba(220, 60, 60, ${a.toFixed(3)})`;
    el.classList.toggle("focus", k === q);
    el.title = `attention ${a.toFixed(3)}`;
  });
}
function lensTable(d) {
  const L = d.logit_lens || [];
  $("explore-lens").innerHTML = "<tr><th>layer</th>" + d.tokens.map((t) => `<th>${esc(t)}</th>`).join("") + "</tr>" +
    L.map((row, l) => `<tr><td>${l}</td>` + row.map((cands) => {
      const c = cands[0] || { token: "", prob: 0 };
      return `<td title="${esc(cands.map((x) => x.token + " " + x.prob.toFixed(3)).join(", "))}">${esc(c.token)} <small>${c.prob.toFixed(2)}</small></td>`;
    }).join("") + "</tr>").join("");
}

function ablationTable(d) {
  const a = d.ablation;
  if (!a) { $("explore-ablation").innerHTML = ""; return; }
  const top = Math.max(1e-9, ...a.delta_loss.flat().map(Math.abs));
  $("explore-ablation").innerHTML = `<caption>loss change with one head off (loss ${a.loss.toFixed(3)})</caption>` +
    "<tr><th>layer</th>" + a.delta_loss[0].map((_, h) => `<th>head ${h}</th>`).join("") + "</tr>" +
    a.delta_loss.map((row, l) => `<tr><td>${l}</td>` + row.map((v) =>
      `<td class="abl" style="background: rgba(${v > 0 ? "220,60,60" : "60,90,220"}, ${(Math.abs(v) / top).toFixed(3)})">${v.toFixed(3)}</td>`
    ).join("") + "</tr>").join("");
}

// --- tabs -----------------------------------------------------------------------------
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button, .tab").forEach((x) => x.classList.remove("active"));
  b.classList.add("active"); $("tab-" + b.dataset.tab).classList.add("active");
}));
$("apikey").value = localStorage.getItem("lmforge-key") || "";
$("apikey").addEventListener("change", () => { localStorage.setItem("lmforge-key", $("apikey").value); loadModels(); });
loadModels();
