// The page of fer_jax.serve: send the chosen photo to /api/predict, draw what comes back.
// Text from the server is set with textContent only (a file's name is never markup).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let info = null;        // /api/info: class names, CAM menu, limits
let current = null;     // the photo (File) on show: the menu re-explains it
let photoUrl = null;    // its object URL

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children || []) node.append(child);
  return node;
}

async function loadInfo() {
  const response = await fetch("/api/info");
  info = await response.json();
  $("model").textContent = `Model: ${info.model} (classes: ${info.class_names.join(", ")}). ` +
    `Uploads up to ${(info.max_upload_bytes / 2 ** 20).toFixed(0)} MB and ${info.max_side} px ` +
    `on a side; at most ${info.max_faces} faces a photo.`;
  for (const method of info.methods) {
    $("cam").append(el("option", { value: method, textContent: method,
                                   selected: method === info.default_method }));
  }
}

function showPhoto(file) {
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  $("photo").src = photoUrl;
  $("boxes").replaceChildren();
  $("faces").replaceChildren();
  $("result").hidden = false;
}

async function explain(file) {
  current = file;
  if (info && file.size > info.max_upload_bytes) {
    $("result").hidden = true;
    status(`${file.name} is too large (${(file.size / 2 ** 20).toFixed(1)} MB); ` +
           `the limit is ${(info.max_upload_bytes / 2 ** 20).toFixed(0)} MB.`, true);
    return;
  }
  if (file.size === 0) {
    $("result").hidden = true;
    status(`${file.name} is empty (0 bytes).`, true);
    return;
  }
  status(`Explaining ${file.name} with ${$("cam").value}...`, false);
  const form = new FormData();
  form.append("file", file, file.name);
  const query = new URLSearchParams({ cam: $("cam").value, maps: "true" });
  let response, body;
  try {
    response = await fetch(`/api/predict?${query}`, { method: "POST", body: form });
    body = await response.json().catch(() => ({ detail: response.statusText }));
  } catch (error) {
    status(`The server did not answer (${error}).`, true);
    return;
  }
  if (file !== current) return;   // another photo was chosen meanwhile
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    if (response.status === 422 && body.rows) showPhoto(file); else $("result").hidden = true;
    status(`Could not explain ${file.name}: ${detail}`, true);
    return;
  }
  showPhoto(file);
  render(body);
  const n = body.rows.length;
  status(`${n} face${n === 1 ? "" : "s"} found in ${body.file}.`, false);
}

function render(answer) {
  const boxes = $("boxes");
  boxes.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
  const fontSize = Math.max(12, answer.width / 40);
  for (const row of answer.rows) {
    const [x0, y0, x1, y1] = row.box;
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 })
      .forEach(([k, v]) => rect.setAttribute(k, v));
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", x0);
    label.setAttribute("y", Math.max(fontSize, y0 - 4));
    label.setAttribute("font-size", fontSize);
    label.textContent = `${row.face}: ${row.label} ${row.confidence.toFixed(2)}`;
    boxes.append(rect, label);
  }
  const pictures = Object.fromEntries((answer.maps || []).map((m) => [m.face, m]));
  for (const row of answer.rows) $("faces").append(faceCard(row, pictures[row.face] || {}));
}

function tile(title, src, className, note) {
  const picture = src ? el("img", { src, className, alt: title })
                      : el("div", { className: `none ${className}`, textContent: note });
  return el("figure", { className: "tile" }, [picture, el("figcaption", { textContent: title })]);
}

function faceCard(row, pictures) {
  const bars = el("div", { className: "bars" });
  for (const [name, p] of Object.entries(row.probabilities)) {
    const fill = el("div", { className: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bars.append(el("div", { className: name === row.label ? "bar top" : "bar" }, [
      el("span", { textContent: name }), el("div", {}, [fill]),
      el("span", { textContent: p.toFixed(3) })]));
  }
  const score = (v) => (v === null ? "n/a" : v.toFixed(3));
  const agreement = row.cam_cos === null
    ? `No agreement score: ${row.agreement_note}.`
    : `Agreement with the AU map of ${row.label}: CAM-COS ${score(row.cam_cos)}, ` +
      `ATT-COS ${score(row.att_cos)} (1 = the model looked exactly at its action units).`;
  return el("article", { className: "face" }, [
    el("h2", { textContent: `Face ${row.face}: ${row.label} (${row.confidence.toFixed(3)})` }),
    tile("face", pictures.crop, "crop"),
    tile(`AU map: ${row.label}`, pictures.au_map, "au", row.agreement_note || "no AU map"),
    tile(`CAM: ${row.cam_method}`, pictures.cam, "cam"),
    tile("layer attention", pictures.attention, "attention",
         "not in an exported model (its artifact returns the CAMs only)"),
    bars,
    el("p", { className: "agreement", textContent: agreement })]);
}

$("file").addEventListener("change", () => {
  if ($("file").files.length) explain($("file").files[0]);
});
$("cam").addEventListener("change", () => { if (current) explain(current); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) explain(e.dataTransfer.files[0]);
});
loadInfo().catch((error) => status(`Could not reach the server (${error}).`, true));
