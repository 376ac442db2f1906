// Text that someone else wrote (an image's labels, Env, WorkingDir, its source's name, a cache
// path) reaches the user's terminal only through printable(): printed raw, an escape sequence
// could move the cursor and rewrite what was printed before, set the window title, or, with a
// newline or carriage return inside a value, forge a line that berth did not print (a label
// "x\nUser:           (root)"). JSON output needs none of this: JSON.stringify escapes C0
// controls and the parser on the other end reads what was there.
//
// Escaped: C0 controls (U+0000-U+001F, newline and tab included), DEL, C1 controls
// (U+0080-U+009F: U+009B is a one-character CSI on many terminals), the Unicode line and
// paragraph separators, and the bidirectional overrides and isolates, which can make text
// display in another order than it reads ("Trojan Source", CVE-2021-42574).
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u001b': '\\e' };

/** `text` with every unsafe character written as an escape; a non-string (forged metadata) as its String(). */
export function printable(text: string): string {
  return String(text).replace(UNSAFE, (c) => NAMED[c] ?? escapeCode(c.charCodeAt(0)));
}

/** A message of several lines: each line printable, the line breaks kept. */
export function printableLines(text: string): string {
  return String(text).split('\n').map(printable).join('\n');
}

function escapeCode(code: number): string {
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}
