// The qface page: send a photo to POST /v1/analyze (with attention maps), draw what comes back.
// Plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const AXIS_COLOURS = ["rgb(230,60,60)", "rgb(60,200,60)", "rgb(70,120,255)"]; // as qface/viz/draw.py
const AU_NAMES = {
  AU01: "inner brow raiser", AU02: "outer brow raiser", AU04: "brow lowerer", AU05: "upper lid raiser",
  AU06: "cheek raiser", AU07: "lid tightener", AU09: "nose wrinkler", AU10: "upper lip raiser",
  AU12: "lip corner puller", AU14: "dimpler", AU15: "lip corner depressor", AU16: "lower lip depressor",
  AU17: "chin raiser", AU20: "lip stretcher", AU23: "lip tightener", AU24: "lip pressor", AU25: "lips part",
  AU26: "jaw drop", AU27: "mouth stretch",
};
const REFUSALS = {
  too_large: "The photo is too large",
  not_an_image: "This file is not an image the server can read",
  unsupported_media_type: "This file is not an image the server can read",
  bad_image: "The image is damaged or incomplete",
  bad_field: "The request was refused",
  busy: "The server is busy",
  timeout: "The analysis took too long",
  unauthorized: "This server needs an API key",
};

let limits = null;

function apiHeaders() {
  const key = sessionStorage.getItem("qface-key");
  return key ? { "X-API-Key": key } : {};
}

function megabytes(bytes) {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

function showError(code, message) {
  $("error-title").textContent = REFUSALS[code] || "Something went wrong";
  $("error-message").textContent = message;
  $("error").hidden = false;
  $("error").dataset.code = code;
  $("result").hidden = true; // what is shown must be what was sent last: an older result would mislead
  $("error").scrollIntoView({ block: "nearest" });
  if (code === "unauthorized") $("key-row").hidden = false;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function start() {
  try {
    const health = await (await fetch("/v1/health")).json();
    limits = health.limits;
    $("limits").textContent =
      `JPEG, PNG, WebP, … up to ${megabytes(limits.max_file_bytes)} and ` +
      `${Math.round(limits.max_pixels / 1e6)} megapixels. Nothing is stored.`;
    const response = await fetch("/v1/model", { headers: apiHeaders() });
    if (response.status === 401) {
      $("model").textContent = "this server needs an API key";
      $("key-row").hidden = false;
      return;
    }
    const model = await response.json();
    $("model").textContent = `model ${model.id}`;
  } catch (error) {
    showError("offline", `The server does not answer (${error.message}).`);
  }
}

async function analyze(file) {
  $("error").hidden = true;
  if (limits && file.size > limits.max_file_bytes) {
    showError("too_large", `${file.name} is ${megabytes(file.size)}; the limit is ${megabytes(limits.max_file_bytes)}.`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name || "snapshot.jpg");
  form.append("attention", "true");
  setStatus(`Analysing ${file.name || "the snapshot"}…`);
  const started = performance.now();
  let response, body;
  try {
    response = await fetch("/v1/analyze", { method: "POST", body: form, headers: apiHeaders() });
    body = await response.json();
  } catch (error) {
    setStatus("");
    showError("offline", `The upload failed (${error.message}).`);
    return;
  }
  if (!response.ok) {
    setStatus("");
    const wait = response.headers.get("Retry-After");
    showError(body.code, body.message + (wait ? ` Try again in ${wait} s.` : ""));
    return;
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const count = body.faces.length;
  setStatus(count ? `${count} face${count > 1 ? "s" : ""} found in ${seconds} s.` : `No face found (${seconds} s).`);
  await showResult(file, body);
}

async function showResult(file, body) {
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  await image.decode();
  const canvas = $("picture");
  canvas.width = body.width;
  canvas.height = body.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, body.width, body.height);
  URL.revokeObjectURL(url);
  const faces = [...body.faces].sort((a, b) => b.score - a.score); // the surest face first
  faces.forEach((face, index) => drawFace(context, face, index + 1, Math.max(body.width, body.height) / 640));
  $("cards").replaceChildren(...faces.map((face, index) => card(face, index + 1)));
  $("result").hidden = false;
}

function poseAxes(pitch, yaw, roll) {
  // The face's x, y, z axes as image-plane directions; the same rotation as qface/viz/draw.py's pose_axes.
  const [p, y, r] = [pitch, yaw, roll].map((degrees) => (degrees * Math.PI) / 180);
  const rx = [[1, 0, 0], [0, Math.cos(p), Math.sin(p)], [0, -Math.sin(p), Math.cos(p)]];
  const ry = [[Math.cos(y), 0, -Math.sin(y)], [0, 1, 0], [Math.sin(y), 0, Math.cos(y)]];
  const rz = [[Math.cos(r), -Math.sin(r), 0], [Math.sin(r), Math.cos(r), 0], [0, 0, 1]];
  const times = (a, b) => a.map((row) => b[0].map((_, j) => row.reduce((sum, v, k) => sum + v * b[k][j], 0)));
  const rotation = times(rz, times(ry, rx));
  return [[1, 0, 0], [0, -1, 0], [0, 0, -1]].map((v) => [0, 1].map((i) => rotation[i].reduce((s, c, k) => s + c * v[k], 0)));
}

function drawFace(context, face, number, scale) {
  const [x1, y1, x2, y2] = face.box;
  const width = Math.max(1.5, 2 * scale);
  context.lineWidth = width;
  context.strokeStyle = "rgb(255,210,0)";
  context.strokeRect(x1, y1, x2 - x1, y2 - y1);
  context.fillStyle = "rgb(0,255,255)";
  for (const [x, y] of face.landmarks || face.points) {
    context.beginPath();
    context.arc(x, y, width, 0, 2 * Math.PI);
    context.fill();
  }
  if (face.pose) {
    const [nx, ny] = face.landmarks ? face.landmarks[30] : face.points[2];
    const length = 0.5 * (x2 - x1);
    poseAxes(face.pose.pitch, face.pose.yaw, face.pose.roll).forEach(([dx, dy], axis) => {
      context.strokeStyle = AXIS_COLOURS[axis];
      context.lineWidth = width + 1;
      context.beginPath();
      context.moveTo(nx, ny);
      context.lineTo(nx + length * dx, ny + length * dy);
      context.stroke();
    });
  }
  const tag = String(number);
  context.font = `600 ${Math.round(14 * Math.max(1, scale))}px system-ui, sans-serif`;
  const size = context.measureText(tag).width + 10;
  const height = Math.round(18 * Math.max(1, scale));
  context.fillStyle = "rgb(255,210,0)";
  context.fillRect(x1, y1 - height, size, height);
  context.fillStyle = "#000";
  context.fillText(tag, x1 + 5, y1 - height * 0.25);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function labelButton(task, label, children) {
  const button = element("button", "label");
  button.type = "button";
  button.dataset.task = task;
  button.dataset.label = label;
  button.setAttribute("aria-pressed", "false");
  button.append(...children);
  return button;
}

function percent(p) {
  return `${Math.round(p * 100)} %`;
}

function card(face, number) {
  const article = element("article", "card");
  article.dataset.face = String(number);
  const head = element("div", "card-head");
  head.append(element("h2", "", `Face ${number}`), element("span", "muted small", `detector ${face.score.toFixed(2)}`));
  const chip = element("canvas", "chip");
  chip.width = chip.height = 150;
  chip.dataset.map = "";
  const caption = element("p", "map-caption muted small", "Click a label to see where it looked.");
  const summary = element("div");
  if (face.top_expression) {
    summary.append(element("p", "headline", `${face.top_expression} ${percent(face.expression[face.top_expression])}`));
  }
  if (face.age !== undefined) summary.append(element("p", "", `about ${Math.round(face.age)} years old`));
  summary.append(caption);
  const view = element("div", "face-view");
  view.append(chip, summary);
  article.append(head, view);

  if (face.expression) {
    article.append(element("h3", "", "Expression"));
    const list = element("ul", "bars");
    for (const [name, p] of Object.entries(face.expression).sort((a, b) => b[1] - a[1])) {
      const bar = element("span", "bar");
      const fill = element("span");
      fill.style.width = percent(p).replace(" ", "");
      bar.append(fill);
      const item = element("li", name === face.top_expression ? "top" : "");
      item.append(labelButton("expression", name, [element("span", "", name), bar, element("span", "pct", percent(p))]));
      list.append(item);
    }
    article.append(list);
  }
  const facts = element("dl", "facts");
  if (face.age !== undefined) {
    const dd = element("dd");
    dd.append(labelButton("age", "age", [`${face.age.toFixed(1)} years`]));
    facts.append(element("dt", "", "Age"), dd);
  }
  if (face.pose) {
    const dd = element("dd");
    for (const angle of ["pitch", "yaw", "roll"]) {
      dd.append(labelButton("pose", angle, [`${angle} ${Math.round(face.pose[angle])}°`]));
    }
    facts.append(element("dt", "", "Pose"), dd);
  }
  article.append(facts);
  if (face.attributes) {
    article.append(element("h3", "", "Strongest attributes"));
    const strongest = Object.entries(face.attributes).sort((a, b) => b[1] - a[1]).slice(0, 6);
    article.append(chips("attributes", strongest, (name) => name.replaceAll("_", " ")));
  }
  if (face.action_units) {
    article.append(element("h3", "", "Active action units (p ≥ 50 %)"));
    const active = Object.entries(face.action_units).filter(([, p]) => p >= 0.5).sort((a, b) => b[1] - a[1]);
    article.append(active.length ? chips("action_units", active, (au) => `${au} ${AU_NAMES[au] || ""}`.trim())
                                 : element("p", "muted small", "none"));
  }
  const chipImage = new Image();
  chipImage.src = face.chip || "";
  chipImage.decode().then(() => chip.getContext("2d").drawImage(chipImage, 0, 0, 150, 150)).catch(() => {});
  article.addEventListener("click", (event) => {
    const button = event.target.closest("button.label");
    if (!button) return;
    article.querySelectorAll("button.label").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    showMap(chip, chipImage, face, button.dataset.task, button.dataset.label, caption);
  });
  return article;
}

function chips(task, entries, name) {
  const box = element("div", "chips");
  for (const [label, p] of entries) box.append(labelButton(task, label, [`${name(label)} ${percent(p)}`]));
  return box;
}

function showMap(canvas, chipImage, face, task, label, caption) {
  const values = face.attention && face.attention.maps[task] && face.attention.maps[task][label];
  if (!values) {
    caption.textContent = `No attention map for ${label}.`;
    return;
  }
  const grid = face.attention.grid;
  const cells = document.createElement("canvas");
  cells.width = cells.height = grid;
  const pixels = cells.getContext("2d").createImageData(grid, grid);
  values.forEach((v, i) => {
    pixels.data.set([255, Math.round(60 + 160 * v), 0, Math.round(230 * v)], 4 * i); // warm where it looked
  });
  cells.getContext("2d").putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.drawImage(chipImage, 0, 0, canvas.width, canvas.height);
  context.fillStyle = "rgba(0,0,0,0.45)";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingEnabled = true;
  context.drawImage(cells, 0, 0, canvas.width, canvas.height);
  canvas.dataset.map = `${task}:${label}`;
  caption.textContent = `Where “${label.replaceAll("_", " ")}” looked (last decoder layer).`;
}

// ---- input: drop, choose, webcam ------------------------------------------------------------------------------

let stream = null;

function closeWebcam() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("webcam").hidden = true;
}

async function openWebcam() {
  $("error").hidden = true;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("webcam", "This browser offers no webcam here (it needs https or localhost).");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
  } catch (error) {
    showError("webcam", `The webcam could not be opened (${error.message}).`);
    return;
  }
  $("video").srcObject = stream;
  $("webcam").hidden = false;
}

function snapshot() {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    closeWebcam();
    analyze(new File([blob], "snapshot.jpg", { type: "image/jpeg" }));
  }, "image/jpeg", 0.92);
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) analyze(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) analyze(event.target.files[0]);
    event.target.value = "";
  });
  $("webcam-open").addEventListener("click", openWebcam);
  $("webcam-close").addEventListener("click", closeWebcam);
  $("snap").addEventListener("click", snapshot);
  $("key-row").addEventListener("submit", (event) => event.preventDefault());
  $("key").addEventListener("change", (event) => {
    sessionStorage.setItem("qface-key", event.target.value);
    $("error").hidden = true;
    start();
  });
  start();
}

wire();
