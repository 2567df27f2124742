// The page of alexnet serve: images in (drop, paste, choose), top-5 classes out, and the model card.
// Plain JavaScript, no build step and nothing from outside this server.
"use strict";

const state = { models: [], model: null };
const $ = (selector) => document.querySelector(selector);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // text, never HTML: class names come from weights files
  return node;
}

const percent = (value, digits = 1) => `${(100 * value).toFixed(digits)}%`;

async function errorOf(response) {
  try { return (await response.json()).error || response.statusText; } catch { return response.statusText; }
}

async function loadModels() {
  const response = await fetch("/models");
  if (!response.ok) {
    $("#status").textContent = response.status === 401
      ? "This server needs its token: open the address alexnet serve printed (it ends in ?token=...)."
      : `The models could not be listed: ${await errorOf(response)}`;
    return;
  }
  state.models = await response.json();
  const select = $("#model");
  for (const model of state.models) select.append(new Option(model.name, model.name));
  $("#model-choice").hidden = state.models.length < 2;
  select.addEventListener("change", () => chooseModel(select.value));
  chooseModel(state.models[0].name);
}

function chooseModel(name) {
  state.model = state.models.find((model) => model.name === name);
  showCard(state.model);
}

function row(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(element("dt", "", term), element("dd", "", value));
}

function showCard(card) {
  const aside = $("#card");
  aside.replaceChildren(element("h2", "", card.name));
  const facts = element("dl");
  row(facts, "architecture", card.model);
  row(facts, "parameters", card.parameters.toLocaleString("en"));
  row(facts, "input", card.input_size.join(" x "));
  row(facts, "classes", `${card.class_names.length}: ${card.class_names.slice(0, 12).join(", ")}${card.class_names.length > 12 ? ", ..." : ""}`);
  row(facts, "trained on", card.dataset && `${card.dataset}${card.epochs ? `, ${card.epochs} epoch${card.epochs === 1 ? "" : "s"}` : ""}`);
  const test = card.test || {};
  if (test.top1 !== null && test.top1 !== undefined) {
    const parts = [`top-1 ${percent(test.top1, 2)}`];
    if (test.top5 !== null && test.top5 !== undefined) parts.push(`top-5 ${percent(test.top5, 2)}`);
    if (test.macro_f1 !== null && test.macro_f1 !== undefined) parts.push(`macro F1 ${test.macro_f1.toFixed(3)}`);
    row(facts, "test", parts.join(", ") + (test.count ? ` (${test.count.toLocaleString("en")} images)` : ""));
  }
  const prep = card.preprocessing;
  row(facts, "preprocessing", `shorter side to ${prep.resize_shorter_side}, centre ${prep.crop.join("x")}, ` +
      `${prep.views}, ${prep.colour}, mean ${prep.mean.map((v) => v.toFixed(3)).join("/")}, ` +
      `std ${prep.std.map((v) => v.toFixed(3)).join("/")}`);
  row(facts, "runs on", `${card.device}, ${card.precision}, batches of up to ${card.max_batch}`);
  row(facts, "weights", card.source || card.weights);
  aside.append(facts);

  const architecture = element("details");
  architecture.open = true;
  architecture.append(element("summary", "", "architecture"));
  const picture = element("img");
  picture.alt = `the layers of ${card.model}`;
  picture.loading = "lazy";
  picture.src = `/models/${encodeURIComponent(card.name)}/architecture.png`;
  const full = element("a");
  full.href = picture.src;  // the picture at full size
  full.append(picture);
  architecture.append(full);
  aside.append(architecture);

  if (card.confusion_matrix) aside.append(confusionMatrix(card.confusion_matrix, card.class_names));
}

function confusionMatrix(matrix, names) {
  const details = element("details");
  details.open = true;
  details.append(element("summary", "", "confusion matrix (test set; rows: true class, columns: predicted)"));
  const table = element("table", "confusion");
  const head = table.createTHead().insertRow();
  head.append(element("th", "", ""));
  names.forEach((name, index) => { const cell = element("th", "", String(index)); cell.title = name; head.append(cell); });
  const body = table.createTBody();
  matrix.forEach((counts, truth) => {
    const line = body.insertRow();
    line.append(element("th", "", `${truth} ${names[truth]}`));
    const total = counts.reduce((sum, count) => sum + count, 0) || 1;
    counts.forEach((count, predicted) => {
      const share = count / total;
      const cell = element("td", "", count ? String(count) : "");
      cell.title = `${names[truth]} seen as ${names[predicted]}: ${count} (${percent(share)})`;
      cell.style.background = `rgba(47, 109, 181, ${share.toFixed(3)})`;
      if (share > 0.5) cell.style.color = "#fff";
      line.append(cell);
    });
  });
  const scroll = element("div", "scroll");
  scroll.append(table);
  details.append(scroll);
  return details;
}

function newResult(file) {
  const result = $("#result-template").content.firstElementChild.cloneNode(true);
  const photo = result.querySelector(".photo");
  photo.src = URL.createObjectURL(file);
  photo.alt = file.name || "pasted image";
  result.querySelector(".source").textContent = file.name || "pasted image";
  $("#results").append(result);
  return result;
}

function showPrediction(result, prediction) {
  const list = result.querySelector(".classes");
  list.replaceChildren();
  for (const item of prediction.predictions) {
    const line = element("li");
    const bar = element("span", "bar");
    const fill = element("span");
    fill.style.width = percent(item.probability, 2);
    bar.append(fill);
    line.append(element("span", "label", item.class), bar, element("span", "probability", percent(item.probability)));
    line.title = `${item.class}: ${percent(item.probability, 2)}`;
    list.append(line);
  }
  result.dataset.top = prediction.predictions[0].class;
}

function showError(result, message) {
  const error = result.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

async function classify(file) {
  const result = newResult(file);
  const form = new FormData();
  form.append("files", file, file.name || "pasted.png");
  const query = new URLSearchParams({ model: state.model.name, top_k: "5" });
  try {
    const response = await fetch(`/predict?${query}`, { method: "POST", body: form });
    if (!response.ok) return showError(result, await errorOf(response));
    showPrediction(result, (await response.json())[0]);
  } catch (error) {
    return showError(result, `the server did not answer (${error.message})`);
  }
  explainImage(result, file);  // after the bars: the map takes longer than the classes
}

async function explainImage(result, file) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  const query = new URLSearchParams({ model: state.model.name, method: "gradcam" });
  try {
    const response = await fetch(`/explain?${query}`, { method: "POST", body: form });
    if (!response.ok) return showError(result, `no Grad-CAM map: ${await errorOf(response)}`);
    const explained = await response.json();
    const picture = element("img", "overlay");
    picture.src = explained.overlay;  // a data: URL of a PNG the server drew
    picture.alt = `Grad-CAM at ${explained.layer}: where the network saw ${explained.class}`;
    picture.title = `${picture.alt} (${percent(explained.probability)})${explained.note ? `; ${explained.note}` : ""}`;
    result.querySelector(".views").append(picture);
  } catch (error) {
    showError(result, `no Grad-CAM map: the server did not answer (${error.message})`);
  }
}

function classifyAll(files) {
  const images = [...files].filter((file) => !file.type || file.type.startsWith("image/"));
  if (!state.model) return;
  $("#status").textContent = images.length ? "" : "Those were not images.";
  images.forEach(classify);  // one request each: the server batches them together
}

function wire() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (event) => { classifyAll(event.target.files); event.target.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); classifyAll(event.dataTransfer.files); });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("#files").click(); });
  document.addEventListener("paste", (event) => {
    const files = [...event.clipboardData.items].filter((item) => item.kind === "file").map((item) => item.getAsFile());
    if (files.length) classifyAll(files);
  });
}

wire();
loadModels();
