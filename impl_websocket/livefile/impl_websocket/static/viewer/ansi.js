// One line of terminal output as the terminal shows it: SGR colours and attributes become
// styled spans, a carriage return moves back to the start so that what follows overwrites the
// line (a progress bar shows its last state), a backspace moves back one cell, and every other
// escape sequence or control character is dropped. Styles start afresh on every line, so that
// any line can be shown alone, whatever came before it.

// CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST), other two-byte escapes,
// carriage return, backspace, and the other C0 controls but tab.
const TOKEN =
  /\x1b\[([0-9;:?<=>]*)[ -\/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -\/]*[0-~]?|(\r)|(\x08)|[\x00-\x07\x0b-\x1f\x7f]/g;

const PLAIN = Object.freeze({});

function cube(n) {
  // The 256-colour palette beyond the first 16: a 6x6x6 cube, then 24 greys.
  if (n >= 232) {
    const grey = 8 + (n - 232) * 10;
    return `rgb(${grey}, ${grey}, ${grey})`;
  }
  const levels = [0, 95, 135, 175, 215, 255];
  const i = n - 16;
  return `rgb(${levels[Math.floor(i / 36)]}, ${levels[Math.floor(i / 6) % 6]}, ${levels[i % 6]})`;
}

// The colour after 38 or 48: `5;n` or `2;r;g;b`. Returns [colour, parameters used].
function extended(params, at) {
  if (params[at] === 5 && params[at + 1] !== undefined) {
    const n = params[at + 1];
    return [n < 16 ? n : cube(Math.min(n, 255)), 2];
  }
  if (params[at] === 2 && params[at + 3] !== undefined) {
    const [r, g, b] = params.slice(at + 1, at + 4).map((v) => Math.min(v, 255));
    return [`rgb(${r}, ${g}, ${b})`, 4];
  }
  return [undefined, 1];
}

function applySgr(style, text) {
  const params = text === "" ? [0] : text.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  const next = { ...style };
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) {
      for (const key of Object.keys(next)) delete next[key];
    } else if (p === 1) next.bold = true;
    else if (p === 2) next.dim = true;
    else if (p === 3) next.italic = true;
    else if (p === 4) next.underline = true;
    else if (p === 7) next.inverse = true;
    else if (p === 9) next.strike = true;
    else if (p === 22) {
      delete next.bold;
      delete next.dim;
    } else if (p === 23) delete next.italic;
    else if (p === 24) delete next.underline;
    else if (p === 27) delete next.inverse;
    else if (p === 29) delete next.strike;
    else if (p >= 30 && p <= 37) next.fg = p - 30;
    else if (p >= 90 && p <= 97) next.fg = p - 90 + 8;
    else if (p === 39) delete next.fg;
    else if (p >= 40 && p <= 47) next.bg = p - 40;
    else if (p >= 100 && p <= 107) next.bg = p - 100 + 8;
    else if (p === 49) delete next.bg;
    else if (p === 38 || p === 48) {
      const [colour, used] = extended(params, i + 1);
      if (colour !== undefined) next[p === 38 ? "fg" : "bg"] = colour;
      i += used;
    }
  }
  return Object.keys(next).length ? next : PLAIN;
}

// The cells of the line: a character and its style each.
export function cells(line) {
  const chars = [];
  const styles = [];
  let style = PLAIN;
  let column = 0;
  const write = (text) => {
    for (const ch of text) {
      chars[column] = ch;
      styles[column] = style;
      column++;
    }
  };
  let last = 0;
  for (const match of line.matchAll(TOKEN)) {
    write(line.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] === "m") style = applySgr(style, match[1]);
    else if (match[3]) column = 0;
    else if (match[4]) column = Math.max(0, column - 1);
  }
  write(line.slice(last));
  return { chars, styles };
}

// The visible text of a line (what a search sees on the screen).
export function plainText(line) {
  return cells(line).chars.join("");
}

function decorate(span, style) {
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg ?? "var(--bg)", fg ?? "var(--fg)"];
  const classes = [];
  if (typeof fg === "number") classes.push(`f${fg}`);
  else if (fg) span.style.color = fg;
  if (typeof bg === "number") classes.push(`b${bg}`);
  else if (bg) span.style.background = bg;
  for (const flag of ["bold", "dim", "italic", "underline", "strike"]) {
    if (style[flag]) classes.push(flag);
  }
  span.className = classes.join(" ");
}

// Fill `target` with the line, styled (its previous content is replaced).
export function renderLine(line, target) {
  const { chars, styles } = cells(line);
  target.textContent = "";
  let start = 0;
  for (let i = 1; i <= chars.length; i++) {
    if (i < chars.length && styles[i] === styles[start]) continue;
    const text = chars.slice(start, i).join("");
    if (styles[start] === PLAIN) {
      target.append(text);
    } else {
      const span = document.createElement("span");
      decorate(span, styles[start]);
      span.textContent = text;
      target.append(span);
    }
    start = i;
  }
}
