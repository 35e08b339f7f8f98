/**
 * A small SVG writer for the guide's diagrams and the benchmarks' plots. Numbers are printed with
 * at most one decimal, so a picture drawn twice from the same data is the same bytes.
 */

export type Attrs = Record<string, string | number | undefined>;

const num = (v: number): string => {
  const r = Math.round(v * 10) / 10;
  return Object.is(r, -0) ? "0" : String(r);
};

function escape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

function attrs(a: Attrs): string {
  return Object.entries(a)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${typeof v === "number" ? num(v) : escape(v!)}"`)
    .join("");
}

export class Svg {
  private readonly parts: string[] = [];

  constructor(
    readonly width: number,
    readonly height: number,
  ) {}

  rect(x: number, y: number, w: number, h: number, a: Attrs = {}): this {
    return this.add(`<rect${attrs({ x, y, width: w, height: h, ...a })}/>`);
  }

  line(x1: number, y1: number, x2: number, y2: number, a: Attrs = {}): this {
    return this.add(`<line${attrs({ x1, y1, x2, y2, stroke: "black", ...a })}/>`);
  }

  /** An arrow from (x1, y1) to (x2, y2), its head drawn as a small triangle. */
  arrow(x1: number, y1: number, x2: number, y2: number, a: Attrs = {}): this {
    const angle = Math.atan2(y2 - y1, x2 - x1);
    const head = (turn: number): string => `${num(x2 - 7 * Math.cos(angle + turn))},${num(y2 - 7 * Math.sin(angle + turn))}`;
    this.line(x1, y1, x2, y2, a);
    return this.add(`<polygon${attrs({ points: `${num(x2)},${num(y2)} ${head(0.4)} ${head(-0.4)}`, fill: a.stroke ?? "black" })}/>`);
  }

  circle(cx: number, cy: number, r: number, a: Attrs = {}): this {
    return this.add(`<circle${attrs({ cx, cy, r, ...a })}/>`);
  }

  polyline(points: readonly (readonly [number, number])[], a: Attrs = {}): this {
    return this.add(`<polyline${attrs({ fill: "none", points: points.map(([x, y]) => `${num(x)},${num(y)}`).join(" "), ...a })}/>`);
  }

  text(x: number, y: number, content: string, a: Attrs = {}): this {
    return this.add(`<text${attrs({ x, y, ...a })}>${escape(content)}</text>`);
  }

  toString(): string {
    return [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${this.width}" height="${this.height}" viewBox="0 0 ${this.width} ${this.height}" font-family="sans-serif" font-size="12">`,
      `<rect width="${this.width}" height="${this.height}" fill="white"/>`,
      ...this.parts,
      "</svg>",
      "",
    ].join("\n");
  }

  private add(part: string): this {
    this.parts.push(part);
    return this;
  }
}
