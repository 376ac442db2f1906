// berth config: every setting, its value and where that came from; and the signature policy.
import { config, siteConfigPath, userConfigPath } from '../config/load.js';
import { SETTINGS, type SettingKey } from '../config/schema.js';
import { describePolicy } from '../signature/policy.js';

export async function configCommand(flags: { json?: boolean }): Promise<string> {
  const c = config();
  const keys = Object.keys(SETTINGS) as SettingKey[];
  if (flags.json) {
    const settings = Object.fromEntries(keys.map((k) => [k, { value: c.values[k] ?? null, source: c.sources[k] ?? 'unset' }]));
    return JSON.stringify({ ...settings, trust: c.trust }, null, 2);
  }
  const rows = keys.map((k) => {
    const s = SETTINGS[k];
    const v = c.values[k];
    const value = v === undefined ? '(unset)' : Array.isArray(v) && JSON.stringify(v).length > 28 ? `[${v.length} entries]` : JSON.stringify(v);
    return `${k.padEnd(22)} ${value.padEnd(28)} ${(c.sources[k] ?? '').padEnd(12)} ${s.describe}${'env' in s ? ` [$${s.env}]` : ''}`;
  });
  return [`files: ${siteConfigPath(process.env)} (site), then ${userConfigPath(process.env)} (yours); environment variables win`, ...rows,
    `${'trust'.padEnd(22)} ${describePolicy(c.trust)}`].join('\n');
}
