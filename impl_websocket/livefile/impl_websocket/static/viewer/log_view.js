// The lines of a text resource as a virtual list: only the rows around the viewport are in the
// DOM (a pool of about one screenful, reused), and only a bounded number of lines is kept in
// memory, loaded page by page as the reader scrolls. A 10-million-line log costs the page what
// a short one does.
//
// Every row has the same height, so a line's place is a multiplication. Browsers cap an
// element's height (Chromium near 33 million pixels, Firefox near 18 million): past
// MAX_HEIGHT the scroll range stands for the lines proportionally instead of one row per
// 18 pixels. `top` (the line at the viewport's top, fractional) is the view's own truth; the
// scroll position is derived from it, and read back only when the reader scrolls.

import { renderLine } from "./ansi.js";

const PAGE = 200; // lines asked for in one request
const KEEP = 5000; // lines kept in memory at most
const MAX_HEIGHT = 15_000_000; // pixels
// A line longer than this is cut in the view (the download has it whole): drawing a
// megabyte-long line cell by cell would stall the page.
const MAX_LINE_CHARS = 10_000;

export class LogView {
  constructor({ scroller, spacer, rows, jump }, fetchLines, onError) {
    this.scroller = scroller;
    this.spacer = spacer;
    this.rows = rows;
    this.jump = jump;
    this.fetchLines = fetchLines;
    this.onError = onError;
    this.total = 0; // published lines
    this.top = 0;
    this.lines = new Map(); // line number (from 0) -> its text, without the line break
    this.loading = new Set(); // pages being fetched
    this.broken = false;
    this.following = true;
    this.totalWhenPaused = 0;
    this.highlighted = null;
    this.target = null; // a line asked for that is not published yet
    this.expectedScrollTop = null;
    this.marked = ""; // text searched for, marked in the rows (lower case)
    this.pool = [];
    this.rowHeight = this.measureRow();
    scroller.addEventListener("scroll", () => this.onScroll());
    document.addEventListener("selectionchange", () => this.onSelection());
    jump.addEventListener("click", () => this.follow());
    new ResizeObserver(() => this.place()).observe(scroller);
  }

  makeRow() {
    const row = document.createElement("div");
    row.className = "row";
    const number = document.createElement("a");
    number.className = "ln";
    const text = document.createElement("span");
    text.className = "tx";
    row.append(number, text);
    return row;
  }

  measureRow() {
    const row = this.makeRow();
    row.lastChild.textContent = "0";
    this.rows.append(row);
    const height = row.getBoundingClientRect().height || 18;
    row.remove();
    return height;
  }

  // Geometry: lines <-> scroll positions.
  visibleRows() {
    return this.scroller.clientHeight / this.rowHeight;
  }
  maxTop() {
    return Math.max(0, this.total - this.visibleRows());
  }
  maxScroll() {
    return Math.max(0, this.spacer.offsetHeight - this.scroller.clientHeight);
  }
  topAt(scrollTop) {
    const range = this.maxScroll();
    return range > 0 ? (Math.min(scrollTop, range) / range) * this.maxTop() : 0;
  }
  scrollFor(top) {
    const lines = this.maxTop();
    return lines > 0 ? (Math.min(Math.max(top, 0), lines) / lines) * this.maxScroll() : 0;
  }
  atEnd() {
    return this.scroller.scrollTop >= this.maxScroll() - 2;
  }

  // Show `top` at the viewport's top (clamped), moving the scroll position to match.
  show(top) {
    this.top = Math.min(Math.max(top, 0), this.maxTop());
    this.scroller.scrollTop = this.scrollFor(this.top);
    this.expectedScrollTop = this.scroller.scrollTop;
    this.render();
  }

  // The place of everything after the number of lines or the viewport's size changed.
  place() {
    this.spacer.style.height = `${Math.min(this.total * this.rowHeight, MAX_HEIGHT)}px`;
    this.show(this.following ? this.maxTop() : this.top);
  }

  setTotal(total) {
    if (total === this.total) return;
    this.total = total;
    this.place();
    if (this.target !== null && this.target < total) {
      this.goTo(this.target);
    } else if (!this.following) {
      this.showJump();
    }
  }

  onScroll() {
    const scrollTop = this.scroller.scrollTop;
    const ours = scrollTop === this.expectedScrollTop;
    this.expectedScrollTop = null;
    if (ours) return; // the view moved itself: `top` already says where
    this.top = this.topAt(scrollTop);
    if (this.following && !this.atEnd()) this.pause();
    else if (!this.following && this.atEnd() && !this.selecting()) this.follow();
    this.render();
  }

  selecting() {
    const selection = document.getSelection();
    return selection !== null && !selection.isCollapsed && this.rows.contains(selection.anchorNode);
  }

  onSelection() {
    if (this.following && this.selecting()) this.pause();
  }

  pause() {
    this.following = false;
    this.totalWhenPaused = this.total;
    this.showJump();
  }

  follow() {
    this.following = true;
    this.target = null;
    this.jump.hidden = true;
    this.show(this.maxTop());
  }

  showJump() {
    const added = this.total - this.totalWhenPaused;
    this.jump.textContent =
      added > 0 ? `Jump to the end (${added} new line${added === 1 ? "" : "s"})` : "Jump to the end";
    this.jump.hidden = false;
  }

  // Stop following and highlight line `line` (from 0), brought a third of the way down the
  // view unless it is on screen already; a line not published yet is shown as soon as it is.
  goTo(line) {
    // New lines are counted from when the line is shown (a linked line may come later).
    if (this.following || this.target !== null) this.pause();
    this.highlighted = line;
    if (line >= this.total) {
      this.target = line;
      this.show(this.maxTop());
      return;
    }
    this.target = null;
    const onScreen = line >= this.top && line + 1 <= this.top + this.visibleRows();
    if (onScreen) this.render(); // a click on a line's number: the view stays
    else this.show(line - Math.floor(this.visibleRows() / 3));
  }

  render() {
    const first = Math.floor(this.top);
    const count = Math.max(0, Math.min(Math.ceil(this.visibleRows()) + 1, this.total - first));
    const offset = this.scroller.scrollTop - (this.top - first) * this.rowHeight;
    this.rows.style.transform = `translateY(${offset}px)`;
    while (this.pool.length < count) {
      const row = this.makeRow();
      this.pool.push(row);
      this.rows.append(row);
    }
    while (this.pool.length > count) this.pool.pop().remove();
    this.pool.forEach((row, i) => this.fill(row, first + i));
    this.load(first, first + count);
  }

  fill(row, line) {
    const text = this.lines.get(line);
    const key = `${line}${text === undefined ? "?" : ""}:${this.marked}`;
    if (row.dataset.key !== key) {
      row.dataset.key = key;
      row.dataset.line = String(line + 1);
      const [number, cell] = row.children;
      number.textContent = String(line + 1);
      number.href = `#L${line + 1}`;
      if (text === undefined) {
        cell.className = "tx loading";
        cell.textContent = "…";
      } else {
        cell.className = "tx";
        renderLine(text.slice(0, MAX_LINE_CHARS), cell);
        if (this.marked) mark(cell, this.marked);
        if (text.length > MAX_LINE_CHARS) {
          const rest = document.createElement("span");
          rest.className = "cut";
          rest.textContent = ` … ${(text.length - MAX_LINE_CHARS).toLocaleString("en")} more characters`;
          cell.append(rest);
        }
      }
    }
    row.classList.toggle("highlight", line === this.highlighted);
  }

  // Mark `text` wherever the rows show it (nothing for "").
  mark(text) {
    this.marked = text.toLowerCase();
    this.render();
  }

  // Fetch what is missing of lines [from, to), a page at a time.
  load(from, to) {
    if (this.broken) return;
    for (let page = Math.floor(from / PAGE) * PAGE; page < to; page += PAGE) {
      if (this.loading.has(page)) continue;
      const end = Math.min(page + PAGE, this.total);
      let missing = page;
      while (missing < end && this.lines.has(missing)) missing++;
      if (missing >= end) continue;
      this.loading.add(page);
      this.fetchLines(missing, end - missing)
        .then((reply) => {
          reply.lines.forEach((line, i) => {
            this.lines.set(reply.start + i, line.endsWith("\n") ? line.slice(0, -1) : line);
          });
          this.forget();
        })
        .catch((error) => {
          this.broken = true;
          this.onError(error);
        })
        .finally(() => {
          this.loading.delete(page);
          this.render();
        });
    }
  }

  // Keep at most KEEP lines: drop those farthest from the view.
  forget() {
    if (this.lines.size <= KEEP) return;
    const near = this.top;
    const far = [...this.lines.keys()].sort((a, b) => Math.abs(b - near) - Math.abs(a - near));
    for (const line of far.slice(0, this.lines.size - Math.floor(KEEP * 0.8))) {
      this.lines.delete(line);
    }
  }
}

// Wrap each occurrence of `text` (lower case) within one run of text of `cell` in <mark>.
function mark(cell, text) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  const runs = [];
  while (walker.nextNode()) runs.push(walker.currentNode);
  for (const run of runs) {
    const lower = run.data.toLowerCase();
    let at = lower.indexOf(text);
    if (at < 0) continue;
    const marked = document.createDocumentFragment();
    let last = 0;
    while (at >= 0) {
      const hit = document.createElement("mark");
      hit.textContent = run.data.slice(at, at + text.length);
      marked.append(run.data.slice(last, at), hit);
      last = at + text.length;
      at = lower.indexOf(text, last);
    }
    marked.append(run.data.slice(last));
    run.replaceWith(marked);
  }
}
