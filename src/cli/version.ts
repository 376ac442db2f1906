// berth version (and -v, --version): berth's own version, berth-helper's (asked with
// --version) and the SPANK plugin's (the marker string built into the .so, read from the
// file: loading a SPANK plugin needs slurmstepd). They are released together, so a mismatch is
// an error that names both: a helper from another build may read a plan differently.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BerthError } from '../errors.js';
import { helperPath } from '../runtime/helper.js';
import { VERSION } from '../version.js';
import type { CommandResult } from './options.js';

/** Built into the plugin (slurm-plugins/submit.c); the version follows it, up to a NUL. */
const PLUGIN_MARKER = 'berth-spank-plugin-version ';

/** Where the plugin is: $BERTH_SPANK_PLUGIN, beside this berth (a checkout), or where the README installs it. */
function pluginPath(): string | undefined {
  if (process.env.BERTH_SPANK_PLUGIN) return process.env.BERTH_SPANK_PLUGIN;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  const candidates: string[] = [];
  for (let up = 0; up < 3; up++, dir = path.dirname(dir)) candidates.push(path.join(dir, 'slurm-plugins/build/spank_berth.so'));
  candidates.push('/usr/lib/berth/spank_berth.so');
  return candidates.find((c) => existsSync(c));
}

function helperVersion(): { path: string; version?: string; error?: string } {
  let helper: string;
  try {
    helper = helperPath();
  } catch (e: unknown) {
    return { path: '', error: e instanceof Error ? e.message : String(e) };
  }
  const r = spawnSync(helper, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const m = /^berth-helper (\S+)/.exec(r.stdout ?? '');
  return m ? { path: helper, version: m[1] } : { path: helper, error: `it does not answer --version (${r.error?.message ?? (r.stderr || '').trim().split('\n')[0] ?? `exit ${r.status}`})` };
}

function pluginVersion(file: string): string | undefined {
  const data = readFileSync(file);
  const at = data.indexOf(PLUGIN_MARKER);
  if (at < 0) return undefined;
  const start = at + PLUGIN_MARKER.length;
  return data.subarray(start, data.indexOf(0, start)).toString('latin1');
}

export function versionCommand(flags: { json?: boolean } = {}): CommandResult {
  const helper = helperVersion();
  const plugin = pluginPath();
  const pluginV = plugin ? pluginVersion(plugin) : undefined;
  const info = {
    berth: VERSION,
    node: process.version,
    helper: { path: helper.path || null, version: helper.version ?? null },
    plugin: { path: plugin ?? null, version: pluginV ?? null },
  };
  const problems: string[] = [];
  if (!helper.version) problems.push(`berth-helper ${helper.path}: ${helper.error}`);
  else if (helper.version !== VERSION) problems.push(`berth-helper ${helper.path} is version ${helper.version}, berth is ${VERSION}`);
  if (plugin && pluginV !== VERSION) problems.push(`the SPANK plugin ${plugin} is ${pluginV ? `version ${pluginV}` : 'of a build without a version'}, berth is ${VERSION}`);
  const out = flags.json
    ? JSON.stringify(info, null, 2)
    : [`berth ${VERSION} (node ${process.version})`,
      `berth-helper ${helper.version ?? '?'}${helper.path ? ` (${helper.path})` : ''}`,
      `spank plugin ${plugin ? `${pluginV ?? '?'} (${plugin})` : '(not found; it is only needed on Slurm nodes)'}`].join('\n');
  if (problems.length > 0) {
    process.stdout.write(`${out}\n`);
    throw new BerthError('VERSION_MISMATCH', problems.join('; '), 'install berth, berth-helper and the SPANK plugin from one build (npm run build, or the same release)');
  }
  return out;
}
