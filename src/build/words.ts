// Docker's variable substitution and quoting for the instructions that take words (FROM, COPY,
// ADD, ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL), as BuildKit's shell lexer
// (moby/buildkit frontend/dockerfile/shell/lex.go) does it: $NAME and ${NAME}, ${NAME:-word},
// ${NAME-word}, ${NAME:+word}, ${NAME+word}; nothing inside '...'; \ escapes the next character
// (inside "..." only before $, ", \ and `). RUN, CMD and ENTRYPOINT are not substituted: the
// shell in the container does that, as Docker leaves it.
import { BerthError } from '../errors.js';

export type Lookup = (name: string) => string | undefined;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/** One word (no splitting): quotes removed, variables substituted. */
export function expandWord(raw: string, lookup: Lookup, escape = '\\'): string {
  return expand(raw, lookup, escape, false);
}

/**
 * A COPY heredoc's body with variables substituted and nothing else: its quotes are text, and
 * \ escapes only $, ` and \ (a shell's rule for an unquoted heredoc, which BuildKit follows).
 */
export function expandText(raw: string, lookup: Lookup): string {
  return expand(raw, lookup, '\\', true);
}

/** The one lexer of both: `text`, a heredoc's body (no quotes; escapes as inside "..." but for "). */
function expand(raw: string, lookup: Lookup, escape: string, text: boolean): string {
  let out = '';
  let i = 0;
  let quote: '"' | "'" | undefined;
  while (i < raw.length) {
    const c = raw[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else out += c;
      i++;
    } else if (c === escape && i + 1 < raw.length) {
      const next = raw[i + 1]!;
      // Inside "..." (and in a heredoc), only these are escaped; elsewhere any character is.
      const escaped = text ? ['$', '`', escape] : quote === '"' ? ['$', '"', escape, '`'] : undefined;
      if (escaped && !escaped.includes(next)) out += c;
      out += next;
      i += 2;
    } else if (c === '"' && !text) {
      quote = quote ? undefined : '"';
      i++;
    } else if (c === "'" && !quote && !text) {
      quote = "'";
      i++;
    } else if (c === '$') {
      const [value, used] = variable(raw, i, lookup, escape);
      out += value;
      i += used;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** The value of the variable at raw[at] ('$'), and how many characters it took. */
function variable(raw: string, at: number, lookup: Lookup, escape: string): [string, number] {
  const rest = raw.slice(at + 1);
  const plain = NAME.exec(rest);
  if (plain) return [lookup(plain[0]) ?? '', 1 + plain[0].length];
  if (!rest.startsWith('{')) return ['$', 1];
  const name = NAME.exec(rest.slice(1));
  const close = matchingBrace(rest);
  if (!name || close < 0) throw new BerthError('USAGE', `bad substitution in '${raw}'`, 'write ${NAME}, ${NAME:-default} or ${NAME:+alternative}');
  const body = rest.slice(1 + name[0].length, close);
  const value = lookup(name[0]);
  const used = 1 + close + 1;
  if (body === '') return [value ?? '', used];
  const op = /^(:?[-+])/.exec(body);
  if (!op) throw new BerthError('USAGE', `bad substitution '\${${name[0]}${body}}' in '${raw}'`, 'berth knows ${NAME:-default}, ${NAME-default}, ${NAME:+alternative} and ${NAME+alternative}');
  const word = () => expandWord(body.slice(op[1]!.length), lookup, escape);
  const set = op[1]!.startsWith(':') ? value !== undefined && value !== '' : value !== undefined;
  if (op[1]!.endsWith('-')) return [set ? value! : word(), used];
  return [set ? word() : '', used];
}

/** The index in `s` (which starts with '{') of the brace that closes it, or -1. */
function matchingBrace(s: string): number {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '{') depth++;
    else if (s[i] === '}' && --depth === 0) return i;
  }
  return -1;
}

/** NAME=value pairs from a list of variables (an image's Env). */
export function envLookup(env: string[], more: Record<string, string> = {}): Lookup {
  const map = new Map<string, string>(Object.entries(more));
  for (const e of env) {
    const eq = e.indexOf('=');
    if (eq > 0) map.set(e.slice(0, eq), e.slice(eq + 1));
  }
  return (name) => map.get(name);
}

/** Env with NAME set to value (replacing it where it was, as Docker keeps the order). */
export function setEnv(env: string[], name: string, value: string): string[] {
  const entry = `${name}=${value}`;
  const i = env.findIndex((e) => e.startsWith(`${name}=`));
  return i < 0 ? [...env, entry] : env.map((e, j) => (j === i ? entry : e));
}
