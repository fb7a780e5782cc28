// found serve page: send one image to POST /v1/segment, show the overlay with its boxes,
// switch between the mask, cut-out and soft mask, and download the cut-out. No external assets.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const VIEWS = ["overlay", "mask", "cutout", "soft"];
let current = null; // {file, answer, images: {kind: object URL}}

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function pick(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name || "that file"} is not an image (${file.type})`);
    return;
  }
  current = { file };
  $("run").disabled = false;
  segment();
}

function toObjectURL(dataURL) {
  // decoded here rather than with fetch(): the page's Content-Security-Policy allows no data: fetches
  const [head, b64] = dataURL.split(",", 2);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: head.slice(5).split(";")[0] }));
}

async function segment() {
  if (!current || !current.file) return;
  showError("");
  const params = new URLSearchParams({ output: "json", include: VIEWS.join(",") });
  if ($("mode").value) params.set("mode", $("mode").value);
  if ($("refine").checked) params.set("refine", "true");
  const body = new FormData();
  body.append("file", current.file, current.file.name || "pasted.png");
  const headers = { Accept: "application/json" };
  const key = $("apikey").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  setStatus(`Segmenting ${current.file.name || "the pasted image"}…`);
  $("run").disabled = true;
  document.body.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(`/v1/segment?${params}`, { method: "POST", body, headers });
    let answer;
    try { answer = await response.json(); } catch { answer = { detail: response.statusText }; }
    if (!response.ok) throw new Error(`${response.status}: ${answer.detail || response.statusText}`);
    const images = {};
    for (const kind of VIEWS) images[kind] = toObjectURL(answer.images[kind]);
    if (current.images) for (const url of Object.values(current.images)) URL.revokeObjectURL(url);
    current.answer = answer;
    current.images = images;
    render();
  } catch (err) {
    showError(`Could not segment the image: ${err.message}`);
    setStatus("");
  } finally {
    $("run").disabled = false;
    document.body.removeAttribute("aria-busy");
  }
}

function boxesOf(answer) {
  const inst = (answer.instances || []).filter((i) => i.box_xyxy);
  if (inst.length) return inst.map((i, n) => ({ xyxy: i.box_xyxy, label: `object ${n + 1}` + (i.score != null ? ` · ${i.score.toFixed(2)}` : "") }));
  return answer.box_xyxy ? [{ xyxy: answer.box_xyxy, label: `object · ${answer.score.toFixed(2)}` }] : [];
}

function drawBoxes(answer, visible) {
  const svg = $("boxes");
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
  const boxes = boxesOf(answer);
  svg.setAttribute("aria-label", `${boxes.length} detected box${boxes.length === 1 ? "" : "es"}`);
  svg.style.display = visible ? "" : "none";
  const size = Math.max(12, Math.round(Math.min(answer.width, answer.height) / 25));
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.xyxy;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("class", "box");
    rect.setAttribute("x", x1); rect.setAttribute("y", y1);
    rect.setAttribute("width", x2 - x1); rect.setAttribute("height", y2 - y1);
    rect.dataset.xyxy = b.xyxy.join(",");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${b.label}: x ${x1}–${x2}, y ${y1}–${y2}`;
    rect.appendChild(title);
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x1 + 4); text.setAttribute("y", Math.max(size, y1 - 4));
    text.style.fontSize = `${size}px`;
    text.textContent = b.label;
    svg.append(rect, text);
  }
  return boxes.length;
}

function fact(dl, name, value) {
  const dt = document.createElement("dt"); dt.textContent = name;
  const dd = document.createElement("dd"); dd.textContent = value;
  dl.append(dt, dd);
}

function render() {
  const { answer, images, file } = current;
  const view = document.querySelector("input[name=view]:checked").value;
  const img = $("result-image");
  img.dataset.view = "";
  img.onload = () => { img.dataset.view = view; };
  img.src = images[view];
  const labels = { overlay: "the image with its mask tinted", mask: "the binary mask", cutout: "the cut-out (object on a transparent background)", soft: "the soft mask (object probability)" };
  img.alt = `${labels[view]}, ${answer.width}×${answer.height} px`;
  const n = drawBoxes(answer, view === "overlay");
  $("caption").textContent = `${labels[view]} — ${n} box${n === 1 ? "" : "es"}`;
  const dl = $("facts");
  dl.replaceChildren();
  fact(dl, "Size", `${answer.width} × ${answer.height} px`);
  fact(dl, "Score", answer.score.toFixed(3));
  fact(dl, "Box (x1, y1, x2, y2)", answer.box_xyxy ? answer.box_xyxy.join(", ") : "none");
  fact(dl, "Mask covers", `${(answer.mask_fraction * 100).toFixed(1)} %`);
  const t = answer.timings;
  fact(dl, "Time (ms)", `model ${t.model.toFixed(0)}, queue ${t.queue.toFixed(0)}, decode ${t.decode.toFixed(0)}, encode ${t.encode.toFixed(0)}`);
  for (const note of answer.notes || []) fact(dl, "Note", note);
  const link = $("download");
  link.href = images.cutout;
  link.download = `${(file.name || "image").replace(/\.[^.]+$/, "")}_cutout.png`;
  link.setAttribute("aria-disabled", "false");
  $("result").hidden = false;
  setStatus(`Done: ${n} box${n === 1 ? "" : "es"}, score ${answer.score.toFixed(3)}.`);
}

let live = null;
let liveTimer = null;

function showLive() {
  if (!live) return;
  const s = live.stats;
  const ms = s.latencies.length ? s.latencies[s.latencies.length - 1].toFixed(0) : "-";
  $("camera-stats").textContent = `frames sent ${s.sent}, answered ${s.answered}, skipped ${s.skipped}, latency ${ms} ms` +
    (s.last && s.last.score != null ? `, score ${s.last.score.toFixed(2)}` : "") + (s.error ? `, error: ${s.error}` : "");
}

async function startCamera() {
  $("camera-start").disabled = true;
  try {
    live = await window.FoundLive.start($("camera-view"), { url: "/v1/live", key: $("apikey").value });
    window.foundLive = live;
    $("camera-stop").disabled = false;
    liveTimer = setInterval(showLive, 250);
  } catch (err) {
    $("camera-stats").textContent = `Camera not available: ${err.message}`;
    $("camera-start").disabled = false;
  }
}

function stopCamera() {
  if (live) live.stop();
  live = null;
  clearInterval(liveTimer);
  $("camera-stop").disabled = true;
  $("camera-start").disabled = false;
}

function init() {
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  const drop = $("drop");
  $("file").addEventListener("change", (e) => pick(e.target.files[0]));
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); pick(e.dataTransfer.files[0]); });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) { e.preventDefault(); pick(item.getAsFile()); }
  });
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); segment(); });
  for (const radio of document.querySelectorAll("input[name=view]")) {
    radio.addEventListener("change", () => { if (current && current.answer) render(); });
  }
}

init();
