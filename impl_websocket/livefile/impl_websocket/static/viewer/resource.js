// The page of one resource (/view/{id}): a text resource's lines followed live, searchable and
// linkable (#L123); a binary resource's size, status and progress, an image shown inline.

import {
  api,
  events,
  failureText,
  humanSize,
  isTerminal,
  showBadge,
  showProblem,
  withToken,
} from "./common.js";
import { LogView } from "./log_view.js";

const $ = (id) => document.getElementById(id);
const resourceId = decodeURIComponent(location.pathname.split("/").pop());
const base = `/resources/${encodeURIComponent(resourceId)}`;
const SEARCH_REQUESTS_PER_STEP = 64; // at ~16 MiB each: a 1 GiB log per click at most

function refused(error) {
  $("badge").textContent = "UNAVAILABLE";
  $("badge").className = "badge FAILED";
  showProblem($("problem"), error.message);
}

function describe(info, status) {
  const facts = [humanSize(status.currentSize)];
  if (status.numberOfLines !== null && status.numberOfLines !== undefined) {
    facts.push(`${status.numberOfLines.toLocaleString("en")} lines`);
  }
  if (info.metadata.mimeType) facts.push(info.metadata.mimeType);
  if (info.kind && info.kind !== "upload") facts.push(`${info.kind} of ${info.sources.join(", ")}`);
  $("facts").textContent = facts.join(" · ");
}

function showStatus(info, status) {
  showBadge($("badge"), status);
  describe(info, status);
  const download = $("download");
  download.hidden = false;
  if (status.transferStatus === "FAILED") {
    download.href = withToken(`${base}/content`, { partial: "true" });
    download.textContent = "Download what was received";
    showProblem($("problem"), failureText(status));
  } else {
    download.href = withToken(`${base}/content`);
    download.textContent = isTerminal(status) ? "Download" : "Download (follows until it ends)";
  }
}

// Statuses as they happen, from the current one on; the stream is closed at the end.
function follow(info, update) {
  update(info.status);
  if (isTerminal(info.status)) return;
  const source = events(`${base}/events`, {
    status: (status) => {
      update(status);
      if (isTerminal(status)) source.close();
    },
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      refused(new Error("The status stream was refused: reload the page to try again."));
    }
  };
}

function lineOfHash() {
  const match = /^#L(\d+)$/.exec(location.hash);
  return match && Number(match[1]) > 0 ? Number(match[1]) - 1 : null;
}

// Search through the whole resource on the server, a bounded scan per request.
class Search {
  constructor(view) {
    this.view = view;
    this.generation = 0;
    this.reset("");
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const query = $("query").value;
      if (query === this.query && this.matches.length) this.step(1);
      else this.start(query);
    });
    $("next").addEventListener("click", () => this.step(1));
    $("previous").addEventListener("click", () => this.step(-1));
  }

  reset(query) {
    this.generation++;
    this.query = query;
    this.matches = [];
    this.nextStart = 0;
    this.scannedAll = false;
    this.index = -1;
  }

  say(text) {
    $("search-result").textContent = text;
    $("previous").disabled = this.index <= 0;
    $("next").disabled = this.matches.length === 0;
  }

  start(query) {
    this.reset(query);
    this.view.mark(query);
    if (query) this.step(1);
    else this.say("");
  }

  async step(direction) {
    if (direction > 0 && this.index + 1 >= this.matches.length) await this.scan();
    const index = this.index + direction;
    if (index < 0 || index >= this.matches.length) {
      this.say(this.matches.length ? "No more matches" : "No matches");
      return;
    }
    this.index = index;
    const line = this.matches[index];
    this.view.goTo(line);
    history.replaceState(null, "", `${location.pathname}${location.search}#L${line + 1}`);
    this.say(`Match ${index + 1} of ${this.matches.length}${this.scannedAll ? "" : "+"}`);
  }

  // Scan on from where the last request stopped until a match or the last published line.
  async scan() {
    const generation = this.generation;
    for (let request = 0; request < SEARCH_REQUESTS_PER_STEP; request++) {
      const query = new URLSearchParams({ q: this.query, start: this.nextStart, limit: 100 });
      let reply;
      try {
        reply = await api(`${base}/search?${query}`);
      } catch (error) {
        this.say(error.message);
        return;
      }
      if (generation !== this.generation) return; // a newer search started
      this.matches.push(...reply.matches);
      this.nextStart = reply.nextStart;
      this.scannedAll = reply.scannedAll;
      if (reply.matches.length || reply.scannedAll) return;
      this.say(`Searching… line ${reply.nextStart.toLocaleString("en")}`);
    }
  }
}

function showText(info) {
  $("text-view").hidden = false;
  $("search").hidden = false;
  const view = new LogView(
    { scroller: $("scroller"), spacer: $("spacer"), rows: $("rows"), jump: $("jump") },
    (start, count) => api(`${base}/lines?start=${start}&count=${count}`),
    refused,
  );
  const wanted = lineOfHash();
  if (wanted !== null) view.goTo(wanted);
  window.addEventListener("hashchange", () => {
    const line = lineOfHash();
    if (line !== null) view.goTo(line);
  });
  new Search(view);
  follow(info, (status) => {
    showStatus(info, status);
    view.setTotal(status.numberOfLines ?? 0);
    if (isTerminal(status) && view.target !== null) view.goTo(Math.max(0, view.total - 1));
  });
  $("scroller").focus();
}

function showBinary(info) {
  $("binary-view").hidden = false;
  const isImage = (info.metadata.mimeType || "").startsWith("image/");
  follow(info, (status) => {
    showStatus(info, status);
    const progress = $("progress");
    if (status.percent !== undefined && status.percent !== null) {
      progress.max = 100;
      progress.value = status.percent;
    } else if (isTerminal(status)) {
      progress.max = 1;
      progress.value = 1;
    } else {
      progress.removeAttribute("value"); // indeterminate: the final size is not known
    }
    const stage = status.stage ? `${status.stage}, ` : "";
    $("progress-text").textContent = `${stage}${humanSize(status.currentSize)} so far`;
    if (isImage) {
      const complete = status.transferStatus === "COMPLETED";
      $("image-note").hidden = complete || status.transferStatus === "FAILED";
      if (complete) {
        $("image").src = withToken(`${base}/content`);
        $("image").alt = info.metadata.filename || "";
        $("image").hidden = false;
      }
    }
  });
}

async function main() {
  let info;
  try {
    info = await api(base);
  } catch (error) {
    refused(error);
    return;
  }
  const name = info.metadata.filename || resourceId;
  $("name").textContent = name;
  document.title = `${name} · livefile`;
  if (info.metadata.supportsLineAccess) showText(info);
  else showBinary(info);
}

main();
