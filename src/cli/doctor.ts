// berth doctor [--json]: what this node allows, each with a verdict and the fix.
import { diagnose } from '../host/doctor.js';
import type { CommandResult } from './options.js';

export async function doctorCommand(flags: { json?: boolean }): Promise<CommandResult> {
  const checks = diagnose();
  const exitCode = checks.some((c) => c.verdict === 'fail') ? 1 : 0;
  if (flags.json) return { out: JSON.stringify(checks, null, 2), exitCode };
  const mark = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' };
  const lines = checks.flatMap((c) => [`${mark[c.verdict]}  ${c.name.padEnd(30)} ${c.detail}`, ...(c.fix ? [`      ${''.padEnd(30)} fix: ${c.fix}`] : [])]);
  lines.push('', exitCode ? 'berth cannot run containers here until the FAIL lines are fixed.' : 'berth can run containers on this node.');
  return { out: lines.join('\n'), exitCode };
}
