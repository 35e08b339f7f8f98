import assert from "node:assert/strict";
import { test } from "node:test";
import { Random } from "../src/generation/random.js";
import { StopStringMatcher } from "../src/generation/stop-strings.js";

/** Pushes the pieces in order; returns what each push released and whether it stopped. */
function run(stops: string[], pieces: string[]): { released: string[]; stoppedAt: number; flushed: string } {
  const m = new StopStringMatcher(stops);
  const released: string[] = [];
  let stoppedAt = -1;
  pieces.forEach((piece, i) => {
    const out = m.push(piece);
    released.push(out.text);
    if (out.stopped && stoppedAt < 0) stoppedAt = i;
  });
  return { released, stoppedAt, flushed: m.flush() };
}

test("no stop strings: text passes through unchanged", () => {
  const r = run([], ["Hello", ", ", "world"]);
  assert.deepEqual(r.released, ["Hello", ", ", "world"]);
  assert.equal(r.stoppedAt, -1);
  assert.equal(r.flushed, "");
});

test("a stop string inside one push: text before it, the stop string left out", () => {
  const m = new StopStringMatcher(["END"]);
  assert.deepEqual(m.push("abcENDdef"), { text: "abc", stopped: true });
  assert.equal(m.matched, "END");
  assert.deepEqual(m.push("more"), { text: "", stopped: true });
  assert.equal(m.flush(), "");
});

test("a stop string split over 2 and 3 pushes is held back, then dropped", () => {
  const two = run(["END"], ["abcE", "NDxyz"]);
  assert.deepEqual(two.released, ["abc", ""]);
  assert.equal(two.stoppedAt, 1);

  const three = run(["END"], ["abE", "N", "D"]);
  assert.deepEqual(three.released, ["ab", "", ""]);
  assert.equal(three.stoppedAt, 2);
  assert.equal(three.flushed, "");
});

test("a prefix that turns out not to match is released, with nothing lost", () => {
  const r = run(["END"], ["abE", "N", "x"]);
  assert.deepEqual(r.released, ["ab", "", "ENx"]);
  assert.equal(r.stoppedAt, -1);

  // The held prefix fails, but its tail starts the stop string again.
  const again = run(["ENEX"], ["ENE", "N", "EX"]);
  assert.deepEqual(again.released, ["", "EN", ""]);
  assert.equal(again.stoppedAt, 2);
});

test("text held at the end is returned by flush", () => {
  const r = run(["</s>"], ["hello <", "/"]);
  assert.deepEqual(r.released, ["hello ", ""]);
  assert.equal(r.flushed, "</");
});

test("a stop string at the very start stops with no text", () => {
  assert.deepEqual(run(["Once"], ["Once upon"]).released, [""]);
  const split = run(["Once"], ["On", "ce upon"]);
  assert.deepEqual(split.released, ["", ""]);
  assert.equal(split.stoppedAt, 1);
});

test("empty pushes change nothing", () => {
  const r = run(["stop"], ["", "st", "", "", "op", ""]);
  assert.deepEqual(r.released, ["", "", "", "", "", ""]);
  assert.equal(r.stoppedAt, 4);
  const none = run(["stop"], ["", "", "x", ""]);
  assert.deepEqual(none.released, ["", "", "x", ""]);
});

test("overlapping candidates: the earliest stop string in the text wins", () => {
  // "bcd" completes first but "abcx" could still match from an earlier start: "a" was held too.
  const r = run(["abcx", "bcd"], ["ab", "c", "d"]);
  assert.deepEqual(r.released, ["", "", "a"]);
  assert.equal(r.stoppedAt, 2);

  // Both complete in the same push: the one that starts earlier cuts.
  const m = new StopStringMatcher(["cd", "abcdef"]);
  assert.deepEqual(m.push("xxabcdef"), { text: "xx", stopped: true });
  assert.equal(m.matched, "abcdef");
  // Pushed a character at a time, "cd" completes first and stops the text there.
  assert.deepEqual(run(["cd", "abcdef"], [..."xxabcdef"]).released.join(""), "xxab");

  // One stop string a prefix of another: the shorter one completes first.
  const nested = new StopStringMatcher(["\n\n\n", "\n\n"]);
  assert.deepEqual(nested.push("a\n"), { text: "a", stopped: false });
  assert.deepEqual(nested.push("\n"), { text: "", stopped: true });
  assert.equal(nested.matched, "\n\n");
});

test("the longest partial match is held, not just the first", () => {
  const m = new StopStringMatcher(["aab"]);
  assert.deepEqual(m.push("xaa"), { text: "x", stopped: false });
  assert.deepEqual(m.push("a"), { text: "a", stopped: false });
  assert.deepEqual(m.push("b"), { text: "", stopped: true });
});

test("non-ASCII stop strings and text", () => {
  const r = run(["🙂 done"], ["héllo 🙂", " do", "ne!"]);
  assert.deepEqual(r.released, ["héllo ", "", ""]);
  assert.equal(r.stoppedAt, 2);
});

test("empty stop strings are ignored and more than 4 are refused", () => {
  assert.deepEqual(run([""], ["abc"]).released, ["abc"]);
  assert.throws(() => new StopStringMatcher(["a", "b", "c", "d", "e"]), /at most 4/);
});

/** What may be shown of `text` (no stop string in it): everything before the first place a stop string could still start. */
function safeLength(text: string, stops: string[]): number {
  for (let i = 0; i < text.length; i++) {
    const tail = text.slice(i);
    if (stops.some((s) => s.length > tail.length && s.startsWith(tail))) return i;
  }
  return text.length;
}

/**
 * The text stops at the first push after which what was received holds a stop string, cut where
 * the earliest one starts.
 */
test("random texts cut at random places agree with matching each received prefix whole", () => {
  const random = new Random(7);
  const pick = (n: number) => Math.floor(random.next() * n);
  const alphabet = "ab\n ";
  const word = (n: number) => Array.from({ length: n }, () => alphabet[pick(alphabet.length)]).join("");
  for (let trial = 0; trial < 2000; trial++) {
    const stops = Array.from({ length: 1 + pick(4) }, () => word(1 + pick(4)));
    const text = word(pick(24));
    const m = new StopStringMatcher(stops);
    let shown = "";
    let stopped = false;
    let received = "";
    let cut = -1;
    for (let i = 0; i < text.length && !stopped;) {
      const piece = text.slice(i, i + pick(5));
      i += piece.length;
      received += piece;
      for (const s of stops) {
        const at = received.indexOf(s);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      const out = m.push(piece);
      shown += out.text;
      stopped = out.stopped;
      const where = JSON.stringify({ stops, text, received });
      assert.equal(stopped, cut >= 0, where);
      assert.equal(shown, stopped ? received.slice(0, cut) : received.slice(0, safeLength(received, stops)), where);
    }
    if (!stopped) {
      shown += m.flush();
      assert.equal(shown, text);
    }
  }
});
