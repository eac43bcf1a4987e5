// The page of an upload context (/view/contexts/{id}): its resources as they are created, each
// with its live status and a link to its own page.

import { api, events, humanSize, showBadge, showProblem, withToken } from "./common.js";

const $ = (id) => document.getElementById(id);
const contextId = decodeURIComponent(location.pathname.split("/").pop());
const base = `/contexts/${encodeURIComponent(contextId)}`;
const rows = new Map(); // resource id -> its table row

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function added({ resourceId, metadata }) {
  const row = document.createElement("tr");
  row.dataset.resource = resourceId;
  const link = document.createElement("a");
  link.href = withToken(`/view/${encodeURIComponent(resourceId)}`);
  link.textContent = metadata.filename || resourceId;
  cell(row, "").append(link);
  cell(row, metadata.mimeType || "");
  const badge = document.createElement("span");
  badge.className = "badge";
  cell(row, "").append(badge);
  cell(row, "");
  cell(row, "");
  $("resources").tBodies[0].append(row);
  rows.set(resourceId, row);
}

function changed({ resourceId, resourceStatus }) {
  const row = rows.get(resourceId);
  if (!row) return; // created before this page opened
  showBadge(row.querySelector(".badge"), resourceStatus);
  row.cells[3].textContent = humanSize(resourceStatus.currentSize);
  row.cells[4].textContent = resourceStatus.numberOfLines ?? "";
}

function refusedUpload({ reason, metadata }) {
  const row = document.createElement("tr");
  cell(row, metadata?.filename || "(refused upload)");
  cell(row, metadata?.mimeType || "");
  cell(row, `refused: ${reason}`).className = "facts";
  $("resources").tBodies[0].append(row);
}

function stop(source, badge, text) {
  source.close();
  $("badge").textContent = badge;
  $("badge").className = "badge";
  $("facts").textContent = text;
}

async function main() {
  $("name").textContent = `Upload context ${contextId}`;
  try {
    await api(base);
  } catch (error) {
    $("badge").textContent = "UNAVAILABLE";
    $("badge").className = "badge FAILED";
    showProblem($("problem"), error.message);
    return;
  }
  $("badge").textContent = "OPEN";
  $("badge").className = "badge IN_PROGRESS";
  const source = events(`${base}/events`, {
    resourceCreated: added,
    statusChanged: changed,
    creationRefused: refusedUpload,
    contextClosed: () => stop(source, "CLOSED", "The context is closed: no new resources."),
    overflow: () => stop(source, "BEHIND", "This page fell behind the events: reload it."),
  });
}

main();
