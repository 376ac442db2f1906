// The plan's text form for berth-helper (native/helper/plan.c reads it): one directive per
// line, fields separated by a space, with space, tab, newline and backslash written as \ooo
// (the fstab convention) and '-' for an empty field.
import type { LaunchPlan } from './types.js';

export const PLAN_HEADER = '# berth-plan v1';

function field(s: string): string {
  if (s === '') return '-';
  if (s === '-') return '\\055';
  return s.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

export function serializePlan(plan: LaunchPlan): string {
  const lines = [
    PLAN_HEADER,
    `image ${field(plan.image)}`,
    `imageformat ${plan.imageFormat}`,
    `imageoffset ${plan.imageOffset}`,
    `scope ${field(plan.scope)}`,
    `linger ${plan.linger}`,
    ...(plan.jobLinger !== undefined ? [`joblinger ${plan.jobLinger}`] : []),
    `runtime ${field(plan.runtimeDir)}`,
    `userns ${plan.userns}`,
    ...(plan.fakeSyscalls ? ['fake_syscalls 1'] : []),
    ...(plan.user ? [`user ${plan.user.uid} ${plan.user.gid}`] : []),
    `writable ${plan.writable ? 1 : 0}`,
    ...(plan.overlay ? [`overlay ${field(plan.overlay)}`] : []),
    `pidns ${plan.pidns ? 1 : 0}`,
    // Isolation asked for: absent, the host's, as in every plan before them.
    ...(plan.ipcns ? ['ipcns 1'] : []),
    ...(plan.hostname ? [`hostname ${field(plan.hostname)}`] : []),
    ...(plan.net ? [`net ${plan.net.mode}`] : []),
    ...(plan.net?.mode === 'user' ? [`pasta ${field(plan.net.pasta)}`, ...plan.net.publish.map((p) => `publish ${p}`)] : []),
    `cwd ${field(plan.cwd)}`,
    `path ${field(plan.path)}`,
    ...plan.env.map((e) => `env ${field(e)}`),
    ...plan.argv.map((a) => `arg ${field(a)}`),
    ...(plan.unset ?? []).map((u) => `unset ${field(u)}`),
    ...(plan.stepLinger !== undefined ? [`steplinger ${plan.stepLinger}`] : []),
    ...(plan.inputs ?? []).map((name) => `input ${field(name)}`),
    ...(plan.init ?? []).map((a) => `init ${field(a)}`),
    ...(plan.instance !== undefined ? [`instance ${field(plan.instance)}`] : []),
    ...(plan.cgroup !== undefined ? [`cgroup ${field(plan.cgroup)}`] : []),
    ...plan.ops.map((op) => ['op', op.kind, op.source, op.target, op.options.join(','), op.ifMissing, op.origin].map((f, i) => (i < 2 ? f : field(f))).join(' ')),
  ];
  return `${lines.join('\n')}\n`;
}

/** The plan as `berth plan` and --dry-run print it: `helper`, this text form; otherwise JSON. */
export function formatPlan(plan: LaunchPlan, format: string | undefined): string {
  return format === 'helper' ? serializePlan(plan) : JSON.stringify(plan, null, 2);
}
