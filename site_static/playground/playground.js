// The Playground: the book's character GPT running in the reader's browser, offline.
//
// ONNX Runtime Web (vendored from npm into _static/vendor/onnxruntime-web/, the
// single-threaded WebAssembly build: no special server headers) runs the model that
// tools/export_playground.py exported with lmcore.export.to_onnx at build time:
//   idx int64 (1, T) -> logits (1, V) for the next character, attention (L, 1, H, T, T).
// The rules follow lmcore: the character vocabulary refuses unknown characters
// (lmcore.tokenize.CharTokenizer), a text longer than the context is cut to its last
// keep = block_size // 2 characters (lmcore.generate.generate's window rule), and sampling
// applies temperature, then top-k, then top-p (lmcore.sampling.next_token_probs).
//
// Markup: <div class="lmcore-playground"></div> (optional data-compact="true",
// data-text="first text") and <script type="module" async src=".../playground.js">.
// For tests: window.lmcorePlayground = {ready, nextTokenProbs(text), attention(text),
// samplingProbs(text, {temperature, topK, topP}), meta, stats}.

import * as ort from "../vendor/onnxruntime-web/ort.wasm.bundle.min.mjs";

const HERE = new URL(".", import.meta.url);
document.head.append(Object.assign(document.createElement("link"),
  { rel: "stylesheet", href: new URL("playground.css", import.meta.url).href }));
ort.env.wasm.numThreads = 1; // the threaded build, one thread: no COOP/COEP headers needed
ort.env.wasm.wasmPaths = {
  wasm: new URL("../vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm", import.meta.url).href,
};

const MODEL = "shakespeare_char_gpt"; // tools/export_playground.py writes model/MODEL.*
const F32_TINY = 1.1754943508222875e-38; // torch.finfo(torch.float32).tiny

// ------------------------------------------------------------------ the model
class PlaygroundError extends Error {}

async function fetchOk(url, as) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url} (HTTP ${response.status})`);
  return as === "json" ? response.json() : new Uint8Array(await response.arrayBuffer());
}

async function loadModel(name) {
  // The model's bytes, its vocabulary and the runtime's WebAssembly load in parallel.
  const [meta, bytes] = await Promise.all([
    fetchOk(new URL(`model/${name}.json`, HERE), "json"),
    fetchOk(new URL(`model/${name}.onnx`, HERE), "bytes"),
  ]);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  const stoi = new Map(meta.chars.map((c, i) => [c, i]));
  return { meta, session, stoi, queue: Promise.resolve() };
}

function show(c) {
  return c === "\n" ? "⏎" : c === " " ? "␣" : c;
}

// The characters of text (code points, as Python iterates a str) -> ids; the
// window the model sees. Throws a PlaygroundError with the message the page shows.
function encode(model, text, start = null) {
  if (typeof text !== "string" || text.length === 0) {
    throw new PlaygroundError(
      "Type at least one character: the model predicts the character that comes next.");
  }
  const chars = Array.from(text);
  const unknown = [...new Set(chars.filter((c) => !model.stoi.has(c)))];
  if (unknown.length) {
    const shown = unknown.slice(0, 5).map((c) => JSON.stringify(c)).join(", ");
    throw new PlaygroundError(
      `${unknown.length} character(s) not in the model's vocabulary, e.g. ${shown}. ` +
      `It knows the ${model.meta.chars.length} characters of tiny-shakespeare ` +
      "(lmcore's CharTokenizer refuses the others too).");
  }
  const { block_size: block } = model.meta.config;
  const ids = chars.map((c) => model.stoi.get(c));
  if (start === null) start = ids.length > block ? ids.length - model.meta.keep : 0;
  return { chars, ids, start, visible: ids.slice(start) };
}

// One run of the ONNX graph on the visible window. Runs are queued: a session runs one
// call at a time.
function run(model, visible) {
  const job = model.queue.then(async () => {
    const T = visible.length;
    const idx = new ort.Tensor("int64", BigInt64Array.from(visible, (i) => BigInt(i)), [1, T]);
    const out = await model.session.run({ idx });
    return { logits: out.logits.data, attention: out.attention.data, T };
  });
  model.queue = job.catch(() => undefined);
  return job;
}

function softmax(logits) {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  const e = Array.from(logits, (x) => (x === -Infinity ? 0 : Math.exp(x - max)));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

// Stable descending order (ties: lower id first), as torch.sort(stable=True).
function order(values) {
  return Array.from(values, (v, i) => i).sort((a, b) => values[b] - values[a] || a - b);
}

// lmcore.sampling.next_token_probs: temperature, then top-k, then top-p, then softmax.
function samplingDistribution(logits, { temperature = 1.0, topK = null, topP = null } = {}) {
  if (!(Number.isFinite(temperature) && temperature > 0)) {
    throw new PlaygroundError(`temperature must be a finite number > 0, got ${temperature}`);
  }
  if (topK !== null && !(Number.isInteger(topK) && topK >= 1)) {
    throw new PlaygroundError(`top-k must be an integer >= 1 (or off), got ${topK}`);
  }
  if (topP !== null && !(topP > 0 && topP <= 1)) {
    throw new PlaygroundError(`top-p must be a number in (0, 1] (or off), got ${topP}`);
  }
  const tau = Math.max(temperature, F32_TINY);
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let z = Array.from(logits, (x) => (x - max) / tau);
  if (topK !== null) {
    const keep = new Set(order(z).slice(0, Math.min(topK, z.length)));
    z = z.map((x, i) => (keep.has(i) ? x : -Infinity));
  }
  if (topP !== null) {
    const p = softmax(z);
    const ranked = order(p);
    const keep = new Set();
    let before = 0; // probability of the tokens ranked above
    for (const i of ranked) {
      if (topP < 1 ? before < topP : p[i] > 0) keep.add(i);
      before += p[i];
    }
    z = z.map((x, i) => (keep.has(i) ? x : -Infinity));
  }
  return softmax(z);
}

// weights (L, 1, H, T, T) flat -> nested [layer][head][query][key]
function nest(flat, L, H, T) {
  const out = [];
  for (let l = 0; l < L; l++) {
    const layer = [];
    for (let h = 0; h < H; h++) {
      const rows = [];
      for (let q = 0; q < T; q++) {
        const o = ((l * H + h) * T + q) * T;
        rows.push(Array.from(flat.subarray(o, o + T)));
      }
      layer.push(rows);
    }
    out.push(layer);
  }
  return out;
}

// ------------------------------------------------------------------ the page
function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function mulberry32(seed) { // a small seeded generator: the same seed, the same draws
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PLOT_CONFIG = { displayModeBar: false, responsive: true };

class Playground {
  constructor(root, model) {
    this.root = root;
    this.model = model;
    this.compact = root.dataset.compact === "true";
    this.start = null; // window start; null = the prompt rule
    this.updates = 0;
    this.timings = []; // ms from a change (keystroke, control) to the charts drawn
    this.phases = []; // per update: ms in the model, ms drawing
    this.rng = mulberry32(0);
    this.build();
  }

  build() {
    const { meta } = this.model;
    const { n_layer: L, n_head: H } = meta.config;
    this.text = el("textarea", { class: "lmcore-pg-text", rows: "3", spellcheck: "false",
      "aria-label": "Text for the model" });
    this.text.value = this.root.dataset.text || "ROMEO:\nWhat light";
    this.message = el("div", { class: "lmcore-pg-message", role: "status" });
    this.window = el("div", { class: "lmcore-pg-window" });
    this.bars = el("div", { class: "lmcore-pg-bars" });
    this.layer = el("select", { "aria-label": "layer" },
      Array.from({ length: L }, (_, i) => el("option", { value: i, text: `layer ${i}` })));
    this.head = el("select", { "aria-label": "head" },
      Array.from({ length: H }, (_, i) => el("option", { value: i, text: `head ${i}` })));
    this.heat = el("div", { class: "lmcore-pg-heat" });
    const range = (label, attrs) => {
      const input = el("input", { type: "range", ...attrs });
      const value = el("span", { class: "lmcore-pg-value" });
      return [input, value, el("label", {}, [`${label} `, input, " ", value])];
    };
    [this.tau, this.tauValue, this.tauLabel] = range("temperature",
      { min: "0.1", max: "2", step: "0.05", value: "1" });
    [this.topK, this.topKValue, this.topKLabel] = range("top-k",
      { min: "0", max: String(meta.chars.length), step: "1", value: "0" });
    [this.topP, this.topPValue, this.topPLabel] = range("top-p",
      { min: "0.05", max: "1", step: "0.05", value: "1" });
    this.step = el("button", { type: "button", text: "generate 1 character" });
    this.many = el("button", { type: "button", text: "generate 20" });
    this.reset = el("button", { type: "button", text: "reset" });
    this.log = el("div", { class: "lmcore-pg-log" });
    const controls = el("div", { class: "lmcore-pg-controls" },
      [this.tauLabel, this.topKLabel, this.topPLabel, this.step, this.many, this.reset]);
    this.root.replaceChildren(
      this.text, this.message, this.window, controls, this.log, this.bars,
      el("div", { class: "lmcore-pg-selectors" }, ["attention of ", this.layer, " ", this.head]),
      this.heat);
    this.initialText = this.text.value;
    this.text.addEventListener("input", () => {
      this.start = null;
      this.slideNote = null;
      this.log.textContent = "";
      this.schedule();
    });
    for (const c of [this.layer, this.head, this.tau, this.topK, this.topP]) {
      c.addEventListener("input", () => this.schedule());
    }
    this.step.addEventListener("click", () => this.generate(1));
    this.many.addEventListener("click", () => this.generate(20));
    this.reset.addEventListener("click", () => {
      this.text.value = this.initialText;
      this.start = null;
      this.rng = mulberry32(0);
      this.slideNote = null;
      this.log.textContent = "";
      this.schedule();
    });
  }

  settings() {
    const k = Number(this.topK.value);
    const p = Number(this.topP.value);
    const s = { temperature: Number(this.tau.value), topK: k === 0 ? null : k,
      topP: p >= 1 ? null : p };
    this.tauValue.textContent = s.temperature.toFixed(2);
    this.topKValue.textContent = s.topK === null ? "off" : String(s.topK);
    this.topPValue.textContent = s.topP === null ? "1 (off)" : s.topP.toFixed(2);
    return s;
  }

  // Coalesce: at most one update runs; a change during it triggers one more after it.
  schedule() {
    this.changedAt ??= performance.now();
    if (this.running) { this.pending = true; return this.running; }
    this.running = (async () => {
      do {
        this.pending = false;
        const t0 = this.changedAt;
        this.changedAt = null;
        await this.update();
        this.timings.push(performance.now() - t0);
        this.updates += 1;
        this.changedAt = this.pending ? (this.changedAt ?? performance.now()) : null;
      } while (this.pending);
      this.running = null;
    })();
    return this.running;
  }

  async update() {
    let enc;
    try {
      enc = encode(this.model, this.text.value, this.start);
    } catch (err) {
      if (!(err instanceof PlaygroundError)) throw err;
      this.fail(err.message);
      return;
    }
    const { meta } = this.model;
    const { n_layer: L, n_head: H, block_size: block, n_embd: E } = meta.config;
    const t0 = performance.now();
    const out = await run(this.model, enc.visible);
    const t1 = performance.now();
    const settings = this.settings();
    const probs = softmax(out.logits);
    const sampled = samplingDistribution(out.logits, settings);
    this.last = { enc, out, probs, sampled };
    const n = enc.chars.length;
    const notes = [];
    if (enc.start > 0) {
      notes.push(`Your text has ${n} characters, more than the model's context of ${block}: ` +
        `it sees the last ${enc.visible.length} (lmcore.generate keeps the last ` +
        `block_size // 2 = ${meta.keep} when the window is full, then lets it grow again).`);
    }
    this.setMessage(notes.join(" "), enc.start > 0 ? "note" : "");
    const cacheBytes = 2 * L * enc.visible.length * E * 4;
    this.window.replaceChildren(
      el("span", { class: "lmcore-pg-outside", text: enc.chars.slice(0, enc.start).join("") }),
      el("span", { class: "lmcore-pg-inside", text: enc.chars.slice(enc.start).join("") }),
      el("div", { class: "lmcore-pg-cache", text:
        `window: positions ${enc.start}..${n - 1} (${enc.visible.length} of ${block}) · ` +
        `KV cache: ${enc.visible.length} positions × ${L} layers × K and V × ${E} ` +
        `= ${(cacheBytes / 1024).toFixed(1)} KiB in float32` }));
    this.drawBars(probs, sampled, settings);
    this.drawHeat(out, enc);
    this.phases.push({ model: t1 - t0, draw: performance.now() - t1 });
  }

  fail(message) {
    this.setMessage(message, "error");
    this.last = null;
    const layout = (title) => ({
      title: { text: title }, height: this.compact ? 220 : 300, xaxis: { visible: false },
      yaxis: { visible: false }, margin: { t: 40, b: 20, l: 20, r: 20 },
      annotations: [{ text: "no prediction: see the message above", showarrow: false,
        xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 14 } }],
    });
    Plotly.react(this.bars, [], layout("next character"), PLOT_CONFIG);
    Plotly.react(this.heat, [], layout("attention"), PLOT_CONFIG);
    this.window.textContent = "";
  }

  setMessage(text, kind) {
    this.message.textContent = text;
    this.message.dataset.kind = kind;
    this.message.hidden = !text;
  }

  drawBars(probs, sampled, settings) {
    const { chars } = this.model.meta;
    const top = order(probs).slice(0, this.compact ? 12 : 20);
    const labels = top.map((i) => show(chars[i]));
    const filtered = settings.temperature !== 1 || settings.topK !== null || settings.topP !== null;
    const traces = [{ type: "bar", name: "model (τ = 1)", x: labels, y: top.map((i) => probs[i]),
      hovertemplate: "%{x}: %{y:.3f}<extra>model</extra>" }];
    if (filtered) {
      traces.push({ type: "bar", name: "sampled from", x: labels, y: top.map((i) => sampled[i]),
        hovertemplate: "%{x}: %{y:.3f}<extra>after τ, top-k, top-p</extra>" });
    }
    Plotly.react(this.bars, traces, {
      title: { text: "next character: probability" }, barmode: "group",
      height: this.compact ? 240 : 300, margin: { t: 40, b: 40, l: 50, r: 10 },
      xaxis: { type: "category", tickfont: { size: 14 } }, yaxis: { range: [0, 1] },
      legend: { x: 1, y: 1, xanchor: "right", yanchor: "top" },
    }, PLOT_CONFIG);
  }

  drawHeat(out, enc) {
    const { n_layer: L, n_head: H } = this.model.meta.config;
    const l = Number(this.layer.value);
    const h = Number(this.head.value);
    const T = out.T;
    const z = [];
    for (let q = 0; q < T; q++) {
      const o = ((l * H + h) * T + q) * T;
      z.push(Array.from(out.attention.subarray(o, o + T), (w, k) => (k > q ? null : w)));
    }
    const labels = enc.chars.slice(enc.start).map(show);
    const ticks = Array.from({ length: T }, (_, i) => i);
    // Label at most 16 positions per axis (every character is in the hover text): each
    // tick label is an SVG text node, and 2 x 64 of them took half the drawing time.
    const every = Math.ceil(T / 16);
    const shown = ticks.filter((i) => i % every === 0);
    const shownText = shown.map((i) => labels[i]);
    const side = this.compact ? 360 : 520; // fixed: a new height would relayout the page
    Plotly.react(this.heat, [{
      type: "heatmap", z, x: ticks, y: ticks, zmin: 0, zmax: 1,
      colorscale: [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]], // white = 0
      customdata: z.map((row, q) => row.map((_, k) => [labels[q], labels[k]])),
      hovertemplate: "query %{y} %{customdata[0]} → key %{x} %{customdata[1]}: " +
        "%{z:.3f}<extra></extra>",
    }], {
      title: { text: this.compact ? `attention, layer ${l}, head ${h}`
        : `attention weights, layer ${l} of ${L}, head ${h} of ${H}` },
      height: side, margin: { t: 40, b: 50, l: 50, r: 10 },
      // (no scaleanchor: a square constraint doubles the drawing time per keystroke)
      xaxis: { title: { text: "key (seen)" }, tickvals: shown, ticktext: shownText, tickangle: 0,
        zeroline: false },
      yaxis: { title: { text: "query (reading)" }, tickvals: shown, ticktext: shownText,
        autorange: "reversed", zeroline: false },
    }, PLOT_CONFIG);
  }

  // Append characters drawn from the sampling distribution, one model call each, with the
  // window rule of lmcore.generate: once the context outgrows block_size, keep the last
  // keep characters and let the window grow again (the cache would be re-prefilled).
  async generate(count) {
    await this.schedule();
    const { block_size: block } = this.model.meta.config;
    const { keep } = this.model.meta;
    for (let i = 0; i < count; i++) {
      if (!this.last) return;
      const { enc, sampled } = this.last;
      let u = this.rng();
      let pick = sampled.length - 1;
      for (let j = 0; j < sampled.length; j++) {
        if (sampled[j] > 0 && (u -= sampled[j]) < 0) { pick = j; break; }
      }
      const c = this.model.meta.chars[pick];
      const n = enc.chars.length + 1;
      let start = enc.start;
      let slid = false;
      if (n - start > block) { start = n - keep; slid = true; }
      this.start = start;
      this.text.value += c;
      if (slid) {
        this.slideNote = ` · at ${n} characters the window was full: it now starts at ` +
          `${start} (with a KV cache, a re-prefill of the ${n - start - 1} kept characters)`;
      }
      this.log.textContent = `drew ${JSON.stringify(c)} (p = ${sampled[pick].toFixed(3)})` +
        (this.slideNote ?? "");
      await this.schedule();
    }
  }
}

// ------------------------------------------------------------------ start
// The page loads this module with `async`: the runtime and the model start loading at
// once, while the rest of the page is still parsed; the widgets are built once it is.
const domReady = new Promise((resolve) => {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", resolve, { once: true });
  } else resolve();
});
let pages = [];
let roots = [];
const timing = {}; // ms since navigation: module started, model ready, first prediction drawn
const ready = (async () => {
  timing.start = performance.now();
  const loading = domReady.then(() => {
    roots = [...document.querySelectorAll(".lmcore-playground")];
    for (const root of roots) root.textContent = "Loading the model (ONNX Runtime Web)…";
  });
  const model = await loadModel(MODEL);
  await loading;
  timing.session = performance.now(); // the runtime compiled, the model loaded
  pages = roots.map((root) => new Playground(root, model));
  await Promise.all(pages.map((p) => p.schedule()));
  timing.first = performance.now();
  return model;
})();
ready.catch(async (err) => {
  await domReady;
  for (const root of document.querySelectorAll(".lmcore-playground")) {
    root.replaceChildren(el("div", { class: "lmcore-pg-message", "data-kind": "error",
      text: `The playground could not start: ${err.message}. It needs the site served over ` +
        "HTTP (make serve), not opened from disk." }));
  }
});

async function predict(text) {
  const model = await ready;
  const enc = encode(model, text);
  return { enc, out: await run(model, enc.visible), model };
}

const api = {
  ready,
  timing,
  get firstPredictionMs() { return timing.first; },
  async nextTokenProbs(text) {
    const { out, model } = await predict(text);
    return { tokens: [...model.meta.chars], probs: softmax(out.logits) };
  },
  async attention(text) {
    const { out, model } = await predict(text);
    const { n_layer: L, n_head: H } = model.meta.config;
    return nest(out.attention, L, H, out.T);
  },
  async samplingProbs(text, settings = {}) {
    const { out, model } = await predict(text);
    return { tokens: [...model.meta.chars], probs: samplingDistribution(out.logits, settings) };
  },
  async window(text) {
    const { enc } = await predict(text);
    return { start: enc.start, length: enc.visible.length };
  },
  get meta() { return ready.then((m) => m.meta); },
  get stats() {
    return pages.map((p) => ({ updates: p.updates, timings: [...p.timings],
      phases: [...p.phases] }));
  },
};
window.lmcorePlayground = api;
