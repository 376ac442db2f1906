// berth inspect IMAGE [--json]: any image berth runs (a berth image, a SIF, a squashfs, a root
// directory). Every value below but the file's size comes from the image, someone else's
// text: the human form escapes control characters in each (terminal.ts), and --json is exact
// JSON, whose escaping is JSON's own.
import { imageSource, vouchedFor } from '../runtime/acquire.js';
import { describeImage, type ImageFormat } from '../runtime/image.js';
import { formatBytes } from './progress.js';
import { pullDisplay } from './pull-progress.js';
import { printable } from './terminal.js';
import { readProvenance, verdictDoubt, type Provenance } from '../signature/provenance.js';

/** The recorded verdict: who signed, with which key, when it was verified. */
function provenanceWords(p: Provenance): string {
  const who = p.signers.length > 0 ? `signed by ${p.signers.map((s) => `${s.key} (${s.fingerprint}, ${s.found})`).join(', ')}` : 'allowed unsigned';
  return `${who}; docker://${p.name}@${p.manifestDigest}; verified ${p.verifiedAt} by ${p.rules.join('; ')}`;
}

const INDENT = ' '.repeat(17);

const FORMATS: Record<ImageFormat, string> = { berth: 'berth image', sif: 'SIF (Apptainer/Singularity)', squashfs: 'squashfs (not made by berth)', directory: 'root directory' };
const STARTUP = { apptainer: "Apptainer's (/.singularity.d)", enroot: "enroot's (/etc/rc)", plain: 'a plain root file system' } as const;

export async function inspectCommand(image: string, flags: { json?: boolean }): Promise<string> {
  // docker://: the cached image, pulled (quietly: stdout is the answer) if it is not there yet.
  const source = await imageSource(image, pullDisplay('quiet'));
  const opened = describeImage(source.path);
  const info = { file: opened.location.path, format: opened.format, offset: opened.location.offset, size: opened.size,
    squashfs: opened.squashfs ?? null, image: opened.metadata, notes: [...opened.warnings, ...opened.notes] };
  if (flags.json) return JSON.stringify(info, null, 2);
  const m = info.image;
  const sq = info.squashfs;
  const c = m.config;
  const json = (v: unknown) => JSON.stringify(v);
  // One list item per line: each item escaped first, so that only berth's own newlines break lines.
  const list = (items: string[]) => items.map(printable).join(`\n${INDENT}`);
  const rows: [string, string][] = [
    ['File', printable(sq ? `${info.file} (${formatBytes(info.size)}, squashfs ${sq.version}, ${sq.compression}, ${sq.inodes} inodes)` : `${info.file} (a directory)`)],
    ['Format', FORMATS[info.format] + (info.offset ? ` (its root partition at byte ${info.offset})` : '') + (m.startup ? `, started as ${STARTUP[m.startup]}` : '')],
    ['Source', printable(m.source)],
    ['Manifest digest', printable(m.manifestDigest ?? (m.startup ? '-' : '(none: classic docker save archive)'))],
    ['Config digest', printable(m.configDigest || '-')],
    ['Platform', printable([m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/'))],
    ['Created', printable(m.created ?? '-')],
    ['Layers', String(m.layers.length)],
    ['Entrypoint', c.Entrypoint ? printable(json(c.Entrypoint)) : '-'],
    ['Cmd', c.Cmd ? printable(json(c.Cmd)) : '-'],
    ['WorkingDir', printable(c.WorkingDir || '/')],
    ['User', printable(c.User || '(root)')],
    ['Env', list(c.Env) || '-'],
    ['Labels', list(Object.entries(c.Labels).map(([k, v]) => `${k}=${v}`)) || '-'],
    ['Volumes', printable(c.Volumes.join(', ')) || '-'],
    ['ExposedPorts', printable(c.ExposedPorts.join(', ')) || '-'],
  ];
  const provenance = readProvenance(m);
  // What the file says is not what berth believes: run judges a verdict only where berth's caches vouch for it.
  const doubt = provenance && (vouchedFor(source, m.manifestDigest, { cacheWarning: () => {} }) ? verdictDoubt(info.file) : 'the file is named by path, not an image of berth\'s caches');
  rows.push(['Signature', provenance
    ? printable(provenanceWords(provenance) + (doubt ? ` (recorded, not believed: ${doubt}; run judges it as a local image)` : ''))
    : '- (no verdict recorded: a local image, or pulled with no trust: policy)']);
  if (info.notes.length > 0) rows.push(['Notes', list(info.notes)]);
  return rows.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}`).join('\n');
}
