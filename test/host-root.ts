// A stand-in for a GPU node's root, built by the tests: device stand-ins (plain files), driver
// libraries made with gcc under their real sonames, utilities linked against them, firmware,
// CDI specs, and a real ld.so cache made by `ldconfig -r`. berth reads it as host.root.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const DRIVER = '535.104.05';
export const LIB = 'usr/lib/x86_64-linux-gnu';

function cc(args: string[], code: string, dir: string, libs: string[] = []): void {
  const src = path.join(dir, `src-${Math.random().toString(36).slice(2)}.c`);
  writeFileSync(src, code);
  const r = spawnSync('cc', [...args, src, ...libs], { encoding: 'utf8' });
  rmSync(src);
  if (r.status !== 0) throw new Error(`cc ${args.join(' ')}: ${r.stderr}`);
}

/** A shared library at LIB/FILE with soname SONAME (and a SONAME link when they differ). */
function library(root: string, file: string, soname: string, code: string, link: string[] = []): void {
  const out = path.join(root, LIB, file);
  cc(['-shared', '-fPIC', `-Wl,-soname,${soname}`, '-o', out, `-L${path.join(root, LIB)}`], code, root, link);
  if (file !== soname) symlinkSync(file, path.join(root, LIB, soname));
}

export function makeGpuRoot(root: string): string {
  for (const d of ['dev/nvidia-caps', 'dev/dri', LIB, 'usr/bin', `lib/firmware/nvidia/${DRIVER}`, 'proc/driver/nvidia', 'etc/cdi']) mkdirSync(path.join(root, d), { recursive: true });
  for (const d of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-caps/nvidia-cap1', 'kfd', 'dri/renderD128', 'dri/renderD129']) writeFileSync(path.join(root, 'dev', d), '');
  writeFileSync(path.join(root, 'proc/driver/nvidia/version'), `NVRM version: NVIDIA UNIX x86_64 Kernel Module  ${DRIVER}  Sat Aug 19 01:15:15 UTC 2023\n`);
  writeFileSync(path.join(root, `lib/firmware/nvidia/${DRIVER}/gsp_ga10x.bin`), 'firmware');

  library(root, 'libnvidia-fakedep.so.1', 'libnvidia-fakedep.so.1', 'int fakedep(void) { return 7; }');
  library(root, `libnvidia-ml.so.${DRIVER}`, 'libnvidia-ml.so.1', `const char *nvml_driver(void) { return "${DRIVER}"; }`);
  library(root, `libcuda.so.${DRIVER}`, 'libcuda.so.1', 'int fakedep(void); int cuInit(int f) { return f + fakedep(); }', ['-l:libnvidia-fakedep.so.1']);
  library(root, `libnvidia-glcore.so.${DRIVER}`, `libnvidia-glcore.so.${DRIVER}`, 'int glcore(void) { return 1; }');
  // Needs a symbol no library defines: the in-container check must catch it.
  library(root, 'libnvidia-broken.so.1', 'libnvidia-broken.so.1', 'int berth_no_such_symbol(void); int broken(void) { return berth_no_such_symbol(); }');
  library(root, 'libamdhip64.so.5', 'libamdhip64.so.5', 'int hipInit(int f) { return f; }');
  cc(['-o', path.join(root, 'usr/bin/nvidia-smi'), `-L${path.join(root, LIB)}`],
    '#include <stdio.h>\nconst char *nvml_driver(void);\nint main(void) { printf("fake nvidia-smi, driver %s\\n", nvml_driver()); return 0; }\n', root, ['-l:libnvidia-ml.so.1']);

  writeFileSync(path.join(root, 'etc/cdi/example.yaml'), [
    'cdiVersion: "0.6.0"',
    'kind: example.com/gpu',
    'containerEdits:',
    '  env: ["EXAMPLE_DRIVER=yes"]',
    '  hooks:',
    '    - hookName: createContainer',
    '      path: /usr/bin/nvidia-ctk',
    `      args: [nvidia-ctk, hook, create-symlinks, --link, libcuda.so.1::/${LIB}/libcuda.so]`,
    '    - hookName: createContainer',
    '      path: /usr/bin/nvidia-ctk',
    `      args: [nvidia-ctk, hook, update-ldcache, --folder, /${LIB}]`,
    'devices:',
    '  - name: "0"',
    '    containerEdits:',
    '      deviceNodes: [{path: /dev/nvidia0}]',
    `      mounts: [{hostPath: /${LIB}/libcuda.so.${DRIVER}, containerPath: /${LIB}/libcuda.so.1, options: [ro, nosuid, nodev, bind]}]`,
    '  - name: "1"',
    '    containerEdits:',
    '      deviceNodes: [{path: /dev/nvidia1}]',
    '',
  ].join('\n'));
  writeFileSync(path.join(root, 'etc/cdi/other.json'), JSON.stringify({ cdiVersion: '0.5.0', kind: 'vendor.org/fpga', devices: [{ name: 'a', containerEdits: { env: ['FPGA=a'] } }] }));

  writeFileSync(path.join(root, 'etc/ld.so.conf'), `/${LIB}\n`);
  const r = spawnSync('/sbin/ldconfig', ['-r', root], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ldconfig -r: ${r.stderr}`);
  return root;
}
