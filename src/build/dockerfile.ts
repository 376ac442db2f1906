// A Dockerfile as berth builds it: parsed by dockerfile-ast (the parser of the Dockerfile
// language server, maintained and fully typed; README "Dependencies" says why), then turned
// into plain stages of plain instructions whose words are still unexpanded: substitution needs
// the values of the build (src/build/words.ts), which only the builder knows. Heredocs
// (BuildKit's `<<EOF`) are taken at the instruction level here (heredocsOf says why).
import { createRequire } from 'node:module';
import type { Instruction } from 'dockerfile-ast';
import { BerthError } from '../errors.js';

/** A command as RUN, CMD, ENTRYPOINT and SHELL take it: exec form (JSON array) or shell form. */
export type CommandForm = { exec: string[] } | { shell: string };

interface Common {
  /** The line it starts on, from 1. */
  line: number;
  /** As written (continuations joined), for STEP lines and errors. */
  text: string;
}

/** A here-document (BuildKit's `<<NAME`): its body as written, and as the instruction takes it. */
export interface Heredoc {
  name: string;
  /** The body, each line ending in a newline; `<<-` strips its lines' leading tabs. */
  data: string;
  /** The body as written (for the shell to read itself, tabs and all). */
  raw: string;
  /** An unquoted name: COPY substitutes variables in the body (BuildKit's rule). */
  expand: boolean;
}

export type Step = Common & (
  /**
   * `mounts`: the --mount flags as written. `script`: a RUN of one heredoc that starts with #!,
   * which is run as a file (BuildKit's rule); `command` then names where the builder puts it.
   */
  | { kind: 'RUN'; command: CommandForm; mounts: string[]; script?: Heredoc }
  | { kind: 'COPY' | 'ADD'; flags: Record<string, string>; sources: string[]; dest: string; heredocs: Heredoc[] }
  | { kind: 'ENV' | 'LABEL'; pairs: [string, string][] }
  | { kind: 'ARG'; name: string; value?: string }
  | { kind: 'WORKDIR' | 'USER' | 'STOPSIGNAL'; word: string }
  | { kind: 'EXPOSE' | 'VOLUME'; words: string[] }
  | { kind: 'CMD' | 'ENTRYPOINT' | 'SHELL'; command: CommandForm }
);

export interface Stage {
  /** `FROM x AS name`: its name, lower-cased as Docker compares them. */
  name?: string;
  /** The image, unexpanded (global ARGs apply). */
  from: string;
  line: number;
  text: string;
  steps: Step[];
}

export interface Dockerfile {
  /** ARGs before the first FROM: they may be used in FROM lines, and redeclared in stages. */
  globalArgs: { name: string; value?: string }[];
  stages: Stage[];
  /** Instructions berth reads but does not apply, with why (told as warnings). */
  ignored: string[];
}

const COPY_FLAGS: Record<string, readonly string[]> = { COPY: ['from', 'chown', 'chmod', 'link'], ADD: ['chown', 'chmod', 'link', 'checksum'] };

function invalid(file: string, i: Common, why: string, hint: string): BerthError {
  return new BerthError('USAGE', `${file}:${i.line}: ${i.text}: ${why}`, hint);
}

/** Exec form when the arguments are a JSON array of strings (Docker's rule), else shell form. */
function commandForm(content: string): CommandForm {
  const t = content.trim();
  if (t.startsWith('[')) {
    try {
      const v: unknown = JSON.parse(t);
      if (Array.isArray(v) && v.every((s) => typeof s === 'string')) return { exec: v as string[] };
    } catch {
      // Not JSON: shell form, as Docker takes it.
    }
  }
  return { shell: t };
}

/** The words after the flags; a JSON array form (COPY ["a b", "c"]) as its strings. */
function words(i: Instruction, content: string): string[] {
  const form = commandForm(content);
  return "exec" in form ? form.exec : i.getArguments().map((a) => a.getValue());
}

function flagsOf(i: Instruction): { name: string; value: string | null }[] {
  return 'getFlags' in i && typeof i.getFlags === 'function' ? (i.getFlags() as { getName(): string; getValue(): string | null }[]).map((f) => ({ name: f.getName(), value: f.getValue() })) : [];
}

function propertiesOf(i: Instruction): [string, string][] {
  const props = (i as unknown as { getProperties(): { getName(): string; getUnescapedValue(): string | null }[] }).getProperties();
  return props.map((p) => [p.getName(), p.getUnescapedValue() ?? '']);
}

/** Where a RUN's #! heredoc is put for the step: on its private /tmp (--contain's tmpfs), never in the layer. */
export const SCRIPT_DIR = '/tmp/.berth-heredoc';

const HEREDOC = /^(\d*)<<(-?)(["']?)([^<"'\s]+)\3$/;

/**
 * An instruction's heredocs (BuildKit's syntax: `RUN <<EOF`, `COPY <<EOF /path`), and the line
 * that names them. dockerfile-ast finds where such an instruction ends and the heredocs' names,
 * but its argument text treats the bodies as Dockerfile lines (it drops comment lines and joins
 * continuations), which a script must keep as they are: so the bodies are read from the
 * Dockerfile's own lines, after the instruction's first line (and its continuations).
 */
function heredocsOf(file: string, lines: string[], i: Instruction, common: Common): { header: string; docs: Heredoc[] } {
  const header = (i.getArgumentsContent() ?? '').split('\n')[0]!;
  const markers = header.split(/\s+/).map((w) => HEREDOC.exec(w)).filter((m): m is RegExpExecArray => m !== null);
  if (markers.length === 0) return { header, docs: [] };
  const { start, end } = i.getRange();
  let at = start.line;
  while (at < end.line && /\\\r?$/.test(lines[at]!)) at++;
  at++;
  const docs = markers.map(([, , chomp, quote, name]) => {
    const body: string[] = [];
    for (;; at++) {
      if (at > end.line) throw invalid(file, common, `the heredoc ${name} has no line ${name} that ends it`, `end it with a line that holds only ${name}`);
      const line = lines[at]!.replace(/\r$/, '');
      if ((chomp ? line.replace(/^\t+/, '') : line) === name) break;
      body.push(line);
    }
    at++;
    const raw = body.map((l) => `${l}\n`).join('');
    return { name: name!, raw, data: chomp ? body.map((l) => `${l.replace(/^\t+/, '')}\n`).join('') : raw, expand: quote === '' };
  });
  return { header, docs };
}

/**
 * A RUN with heredocs, as BuildKit runs it: one heredoc alone is the script (run by the shell,
 * or as a file when it starts with #!); otherwise the line and the bodies go to the shell
 * together, which reads the heredocs itself (`RUN python3 <<EOF`, several of them).
 */
function heredocRun(header: string, docs: Heredoc[]): { command: CommandForm; script?: Heredoc } {
  const only = docs.length === 1 && HEREDOC.test(header.trim()) ? docs[0]! : undefined;
  if (only?.data.startsWith('#!')) return { command: { exec: [`${SCRIPT_DIR}/${only.name}`] }, script: only };
  if (only) return { command: { shell: only.data } };
  return { command: { shell: header.trim() + docs.map((d) => `\n${d.raw}${d.name}`).join('') } };
}

function step(file: string, lines: string[], i: Instruction, ignored: string[]): Step | undefined {
  const flagText = flagsOf(i).map((f) => ` --${f.name}${f.value === null ? '' : `=${f.value}`}`).join('');
  const common: Common = { line: i.getRange().start.line + 1, text: `${i.getKeyword()}${flagText} ${(i.getArgumentsContent() ?? '').replace(/\s+/g, ' ').trim()}`.trim() };
  const kind = i.getKeyword();
  const content = i.getArgumentsContent() ?? '';
  const noFlags = () => {
    const f = flagsOf(i)[0];
    if (f && kind !== 'COPY' && kind !== 'ADD') throw invalid(file, common, `--${f.name} is not supported`, `berth build takes ${kind} without flags`);
  };
  switch (kind) {
    case 'RUN': {
      const mounts: string[] = [];
      for (const f of flagsOf(i)) {
        if (f.name !== 'mount') {
          throw invalid(file, common, `--${f.name} is not supported`, f.name === 'network' ? 'a RUN has the network berth exec has: leave --network out' : 'berth build\'s RUN takes --mount=type=cache|bind,...');
        }
        mounts.push(f.value ?? '');
      }
      const { header, docs } = heredocsOf(file, lines, i, common);
      if (docs.length > 0) return { ...common, text: `RUN${flagText} ${header.trim()}`, kind, mounts, ...heredocRun(header, docs) };
      return { ...common, kind, command: commandForm(content), mounts };
    }
    case 'CMD':
    case 'ENTRYPOINT':
    case 'SHELL': {
      noFlags();
      const command = commandForm(content);
      if ('shell' in command && /^<<-?["']?[A-Za-z_]/.test(command.shell)) throw invalid(file, common, `${kind} takes no heredoc (BuildKit's neither: RUN, COPY and ADD do)`, `write the script with RUN <<EOF or COPY <<EOF /path, and name it in ${kind}`);
      if (kind === 'SHELL' && !('exec' in command)) throw invalid(file, common, 'SHELL takes the JSON form', 'e.g. SHELL ["/bin/bash", "-c"]');
      return { ...common, kind, command };
    }
    case 'COPY':
    case 'ADD': {
      const flags: Record<string, string> = {};
      for (const f of flagsOf(i)) {
        if (!COPY_FLAGS[kind]!.includes(f.name)) throw invalid(file, common, `--${f.name} is not supported`, `berth build's ${kind} takes ${COPY_FLAGS[kind]!.map((n) => `--${n}`).join(', ')}`);
        flags[f.name] = f.value ?? 'true';
      }
      const { header, docs } = heredocsOf(file, lines, i, common);
      const w = docs.length > 0 ? header.replace(/^(\s*--\S+\s+)*/, '').trim().split(/\s+/).filter((x) => !HEREDOC.test(x)) : words(i, content.replace(/^(\s*--\S+\s+)*/, ''));
      if (w.length < 1 || w.length + docs.length < 2) throw invalid(file, common, 'needs a source and a destination', `write ${kind} SRC... DEST`);
      for (const d of docs) {
        if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(d.name)) throw invalid(file, common, `the heredoc name ${d.name} is not a file name berth takes`, 'name it with letters, digits, _, . and -');
      }
      if (docs.length > 0 && flags.from !== undefined) throw invalid(file, common, 'a heredoc is not in another stage', 'COPY the heredoc without --from');
      return { ...common, ...(docs.length > 0 ? { text: `${kind}${flagText} ${header.trim()}` } : {}), kind, flags, sources: w.slice(0, -1), dest: w[w.length - 1]!, heredocs: docs };
    }
    case 'ENV':
    case 'LABEL': {
      const pairs = propertiesOf(i);
      if (pairs.length === 0) throw invalid(file, common, 'names nothing', `write ${kind} NAME=value`);
      return { ...common, kind, pairs };
    }
    case 'ARG': {
      const [p, extra] = propertiesOf(i);
      if (!p || extra) throw invalid(file, common, 'takes one NAME[=default]', 'write one ARG line per argument');
      const hasValue = content.includes('=');
      return { ...common, kind, name: p[0], ...(hasValue ? { value: p[1] } : {}) };
    }
    case 'WORKDIR':
    case 'USER':
    case 'STOPSIGNAL': {
      noFlags();
      const w = i.getArguments().map((a) => a.getValue());
      if (w.length !== 1) throw invalid(file, common, `takes one argument`, `write ${kind} VALUE`);
      return { ...common, kind, word: w[0]! };
    }
    case 'EXPOSE':
    case 'VOLUME':
      noFlags();
      return { ...common, kind, words: words(i, content) };
    case 'MAINTAINER':
    case 'HEALTHCHECK':
    case 'ONBUILD':
      ignored.push(`${file}:${common.line}: ${kind} is not applied (the OCI image config has no place for it${kind === 'MAINTAINER' ? '; use LABEL org.opencontainers.image.authors=...' : ''})`);
      return undefined;
    default:
      throw invalid(file, common, `berth build does not know ${kind}`, 'see the README, "berth build", for the instructions it takes');
  }
}

/** Parses Dockerfile `text` (read from `file`, named in errors). */
export function parseDockerfile(text: string, file: string): Dockerfile {
  // Loaded by berth build alone: every other command (and container start) would pay for it.
  const { DockerfileParser } = createRequire(import.meta.url)('dockerfile-ast') as typeof import('dockerfile-ast');
  const parsed = DockerfileParser.parse(text);
  const lines = text.split('\n');
  const globalArgs: Dockerfile['globalArgs'] = [];
  const stages: Stage[] = [];
  const ignored: string[] = [];
  for (const i of parsed.getInstructions()) {
    const kind = i.getKeyword();
    if (kind === 'FROM') {
      const line = i.getRange().start.line + 1;
      const text = `FROM ${(i.getArgumentsContent() ?? '').trim()}`;
      const args = i.getArguments().map((a) => a.getValue());
      if (flagsOf(i).length > 0) throw invalid(file, { line, text }, 'FROM --platform is not supported', 'berth builds for this node\'s platform');
      if (!(args.length === 1 || (args.length === 3 && args[1]!.toLowerCase() === 'as'))) {
        throw invalid(file, { line, text }, 'expected FROM IMAGE [AS NAME]', 'e.g. FROM docker://debian:12 AS build');
      }
      stages.push({ from: args[0]!, ...(args[2] ? { name: args[2].toLowerCase() } : {}), line, text, steps: [] });
      continue;
    }
    const s = step(file, lines, i, ignored);
    if (!s) continue;
    const stage = stages[stages.length - 1];
    if (stage) stage.steps.push(s);
    else if (s.kind === 'ARG') globalArgs.push({ name: s.name, ...(s.value !== undefined ? { value: s.value } : {}) });
    else throw invalid(file, s, 'comes before the first FROM', 'only ARG may come before FROM');
  }
  if (stages.length === 0) throw new BerthError('USAGE', `${file} has no FROM`, 'a Dockerfile starts with FROM IMAGE (after any ARG lines)');
  const names = new Set<string>();
  for (const s of stages) {
    if (s.name === undefined) continue;
    if (names.has(s.name)) throw invalid(file, s, `a second stage named ${s.name}`, 'give each stage its own name');
    names.add(s.name);
  }
  return { globalArgs, stages, ignored };
}
