// A hostile or corrupt squashfs against the image server (#14), and an image server that dies
// under its containers (#19). The images start as a real berth image (busybox, converted by
// berth), unpacked, given a few small directories and packed again by mksquashfs with its
// metadata stored uncompressed, then corrupted at the exact offsets of the structures found by
// parsing them (below): a name longer than Linux allows, an inode reference past its block, a
// fragment index and offset past their tables, a huge size, a directory that contains itself,
// a data block that does not decompress. Each keeps berth's metadata, so it passes berth's own
// checks and reaches the helper. The old libsquashfuse code crashed on most of them (stack
// smashing, SIGSEGV, SIGFPE); the server must now answer EIO and go on serving.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, berth, cleanup, run, tempDir } from '../helpers.js';

let work: string;
const runtime = () => path.join(work, 'runtime');
const env = (more: NodeJS.ProcessEnv = {}) => ({ ...process.env, BERTH_RUNTIME_DIR: runtime(), BERTH_IMAGE_LINGER: '0', ...more });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });
const img = (name: string) => path.join(work, `${name}.sqsh`);
const MOTD = 'from the image\n';
const ENDED = /the image server for .* ended/;

/** A metadata table (inodes or directories) of blocks stored uncompressed: its bytes end to end, and where each lies in the file. */
class Table {
  blocks: { ref: number; file: number; at: number; size: number }[] = [];
  data: Buffer;

  constructor(file: Buffer, start: number, end: number) {
    const parts: Buffer[] = [];
    let at = 0;
    for (let pos = start; pos < end;) {
      const hdr = file.readUInt16LE(pos);
      const size = hdr & 0x7fff || 0x8000;
      if (!(hdr & 0x8000)) throw new Error(`metadata block at ${pos} is compressed: mksquashfs was to store it as it is`);
      this.blocks.push({ ref: pos - start, file: pos + 2, at, size });
      parts.push(file.subarray(pos + 2, pos + 2 + size));
      at += size;
      pos += 2 + size;
    }
    this.data = Buffer.concat(parts);
  }

  /** Where in `data` a reference (block, as an offset from the table's start, and offset in it) points. */
  at(block: number, offset: number): number {
    const b = this.blocks.find((x) => x.ref === block);
    if (!b) throw new Error(`no metadata block at ${block}`);
    return b.at + offset;
  }

  /** Where in the file byte `at` of `data` is. */
  fileOf(at: number): number {
    const b = this.blocks.find((x) => at >= x.at && at < x.at + x.size);
    if (!b) throw new Error(`byte ${at} is past the table`);
    return b.file + at - b.at;
  }
}

interface Entry { name: string; at: number; block: number; offset: number; type: number }

/** Just enough of squashfs (the kernel's fs/squashfs/squashfs_fs.h) to find what to corrupt. */
class Squashfs {
  file: Buffer;
  inodes: Table;
  dirs: Table;

  constructor(file: string) {
    this.file = readFileSync(file);
    const u64 = (o: number) => Number(this.file.readBigUInt64LE(o));
    const inodeStart = u64(64);
    const dirStart = u64(72);
    // The directory table ends where the next table's first block begins.
    const next = [u64(80), u64(88), u64(48)].filter((t) => t !== 2 ** 64 - 1 && t > dirStart).map((t) => u64(t)).filter((t) => t > dirStart);
    this.inodes = new Table(this.file, inodeStart, dirStart);
    this.dirs = new Table(this.file, dirStart, Math.min(...next));
  }

  inodeAt(block: number, offset: number): number {
    return this.inodes.at(block, offset);
  }

  /** A directory inode's listing: where it starts in the directory table, and its size. */
  listingOf(inode: number): { start: number; size: number } {
    const d = this.inodes.data;
    const type = d.readUInt16LE(inode);
    if (type === 1) return { start: this.dirs.at(d.readUInt32LE(inode + 16), d.readUInt16LE(inode + 26)), size: d.readUInt16LE(inode + 24) - 3 };
    if (type === 8) return { start: this.dirs.at(d.readUInt32LE(inode + 24), d.readUInt16LE(inode + 34)), size: d.readUInt32LE(inode + 20) - 3 };
    throw new Error(`inode at ${inode} is not a directory (type ${type})`);
  }

  entries(inode: number): Entry[] {
    const d = this.dirs.data;
    const { start, size } = this.listingOf(inode);
    const out: Entry[] = [];
    for (let pos = start; pos < start + size;) {
      const count = d.readUInt32LE(pos) + 1;
      const block = d.readUInt32LE(pos + 4);
      pos += 12;
      for (let i = 0; i < count; i++) {
        const len = d.readUInt16LE(pos + 6) + 1;
        out.push({ name: d.subarray(pos + 8, pos + 8 + len).toString('latin1'), at: pos, block, offset: d.readUInt16LE(pos), type: d.readUInt16LE(pos + 4) });
        pos += 8 + len;
      }
    }
    return out;
  }

  /** The directory entry of `p` (absolute), and the inode it names. */
  lookup(p: string): { entry: Entry; inode: number } {
    const root = this.file.readBigUInt64LE(32);
    let inode = this.inodeAt(Number(root >> 16n), Number(root & 0xffffn));
    let entry: Entry | undefined;
    for (const name of p.split('/').filter(Boolean)) {
      entry = this.entries(inode).find((e) => e.name === name);
      if (!entry) throw new Error(`${p}: no ${name}`);
      inode = this.inodeAt(entry.block, entry.offset);
    }
    return { entry: entry!, inode };
  }

  patch(table: Table, at: number, bytes: Buffer): void {
    for (let i = 0; i < bytes.length; i++) this.file[table.fileOf(at + i)] = bytes[i]!;
  }

  u16(table: Table, at: number, v: number): void {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    this.patch(table, at, b);
  }

  u32(table: Table, at: number, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.patch(table, at, b);
  }
}

/** A regular file's inode: its fields by name (a basic one, type 2, as mksquashfs writes small files). */
function regular(fs: Squashfs, p: string): number {
  const { inode } = fs.lookup(p);
  expect(fs.inodes.data.readUInt16LE(inode)).toBe(2);
  return inode;
}
const REG = { fragment: 20, offset: 24, size: 28, blocks: 32 };

/** The berth metadata trailer of `from` ([JSON][u64 length]["BERTHMD1"]), for `to`. */
function copyTrailer(from: string, to: string): void {
  const src = readFileSync(from);
  expect(src.subarray(-8).toString()).toBe('BERTHMD1');
  const len = Number(src.readBigUInt64LE(src.length - 16));
  writeFileSync(to, Buffer.concat([readFileSync(to), src.subarray(src.length - 16 - len)]));
}

async function mksquashfs(tree: string, out: string): Promise<void> {
  const r = await run('mksquashfs', [tree, out, '-noappend', '-noI', '-noD', '-noF', '-noX', '-all-root', '-quiet', '-no-progress']);
  if (r.code !== 0) throw new Error(`mksquashfs: ${r.stderr}`);
}

beforeAll(async () => {
  work = tempDir('hostile');
  mkdirSync(runtime(), { mode: 0o700 });
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  const converted = await berth('convert', `oci:${work}/oci:busybox`, '-o', img('busybox'), '--quiet');
  if (converted.code !== 0) throw new Error(converted.stderr);
  const tree = path.join(work, 'tree');
  const unpacked = await run('rdsquashfs', ['-u', '/', '-p', tree, '-C', '-q', img('busybox')]);
  if (unpacked.code !== 0) throw new Error(unpacked.stderr);
  const put = (p: string, content: string | Buffer) => {
    mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
    writeFileSync(path.join(tree, p), content);
  };
  put('h/long/0first', 'first\n');
  put(`h/long/${'L'.repeat(200)}`, 'long\n');
  put('h/long/zlast', 'last\n');
  put('h/slash/0first', 'first\n');
  put('h/slash/a-b', 'ab\n');
  put('h/slash/zlast', 'last\n');
  put('h/ref/badref', 'unreachable\n');
  put('h/frag/fragfile', 'a tail in a fragment\n');
  put('h/fragoff/fragfile', 'another tail\n');
  put('h/huge/hugefile', 'small, says it is not\n');
  put('h/data/blockfile', Buffer.alloc(200_000, 'x'));
  put('h/bigdir/0first', 'first\n');
  mkdirSync(path.join(tree, 'h/cycle/loop'), { recursive: true });
  cpSync(path.join(tree, 'h/long'), path.join(tree, 'h/fine'), { recursive: true });
  await mksquashfs(tree, img('plain'));
  copyTrailer(img('busybox'), img('plain'));

  const fs = new Squashfs(img('plain'));
  // A name of 300 bytes (its stored length is one less): past NAME_MAX, and past the 257-byte
  // buffer libsquashfuse copies it into.
  fs.u16(fs.dirs, fs.lookup(`/h/long/${'L'.repeat(200)}`).entry.at + 6, 299);
  fs.patch(fs.dirs, fs.lookup('/h/slash/a-b').entry.at + 8 + 1, Buffer.from('/'));
  // An inode reference whose offset lies far past the end of its metadata block.
  fs.u16(fs.dirs, fs.lookup('/h/ref/badref').entry.at, 0xfff0);
  fs.u32(fs.inodes, regular(fs, '/h/frag/fragfile') + REG.fragment, 0x7ffffff0);
  fs.u32(fs.inodes, regular(fs, '/h/fragoff/fragfile') + REG.offset, 0xffffff00);
  fs.u32(fs.inodes, regular(fs, '/h/huge/hugefile') + REG.size, 0xffffffff);
  // The first block is stored as it is (bit 24); cleared, it is to be decompressed, and is not gzip.
  const data = regular(fs, '/h/data/blockfile');
  fs.u32(fs.inodes, data + REG.blocks, fs.inodes.data.readUInt32LE(data + REG.blocks) & ~(1 << 24));
  // A directory whose listing claims 64 KiB: the rest is whatever follows it.
  fs.u16(fs.inodes, fs.lookup('/h/bigdir').inode + 24, 0xffff);
  // h/cycle/loop names h/cycle itself.
  const cycle = fs.lookup('/h/cycle').entry;
  const loop = fs.lookup('/h/cycle/loop').entry;
  const header = loop.at - 12; // its directory's only entry, right after its header
  fs.u32(fs.dirs, header + 4, cycle.block);
  fs.u16(fs.dirs, loop.at, cycle.offset);
  writeFileSync(img('hostile'), fs.file);

  // A block size of 0: libsquashfuse divides by it.
  const sb = readFileSync(img('plain'));
  sb.writeUInt32LE(0, 12);
  writeFileSync(img('badsuper'), sb);
}, 180_000);
afterAll(() => cleanup(work));

/** Runs `script` in the hostile image, then reads a file: the server survived if that works. */
async function inHostile(script: string) {
  const r = await b('exec', img('hostile'), 'sh', '-c', `${script}; echo "status=$?"; cat /etc/motd`);
  expect(r.stderr).not.toMatch(ENDED);
  expect(r.stdout.endsWith(MOTD)).toBe(true);
  expect(r.code).toBe(0);
  return r;
}

describe('a hostile or corrupt squashfs: EIO for what cannot be read, and the server goes on', () => {
  it('the untouched copy reads as the original', async () => {
    const r = await b('exec', img('plain'), 'sh', '-c', `ls /h/long; cat /h/frag/fragfile; wc -c < /h/data/blockfile; cat /etc/motd`);
    expect(r.stdout).toBe(`0first\n${'L'.repeat(200)}\nzlast\na tail in a fragment\n200000\n${MOTD}`);
    expect(r.code).toBe(0);
  });

  // The listing stops at the bad entry with EIO, as the kernel's squashfs does; busybox's ls
  // does not report a readdir error, so what shows is that nothing past it is listed.
  it('a name longer than NAME_MAX: the listing shows what comes before it, and stops', async () => {
    expect((await inHostile('ls /h/long')).stdout).toBe(`0first\nstatus=0\n${MOTD}`);
    // Its neighbours in the directory are still found by name.
    expect((await inHostile('cat /h/long/0first')).stdout).toBe(`first\nstatus=0\n${MOTD}`);
    // An intact copy of the directory is listed as ever.
    expect((await inHostile('ls /h/fine')).stdout).toBe(`0first\n${'L'.repeat(200)}\nzlast\nstatus=0\n${MOTD}`);
  });

  it("a name with '/' in it is never handed to the kernel", async () => {
    expect((await inHostile('ls /h/slash')).stdout).toBe(`0first\nstatus=0\n${MOTD}`);
  });

  it('an inode reference past the end of its block', async () => {
    const r = await inHostile('cat /h/ref/badref');
    expect(r.stderr).toMatch(/can't open '\/h\/ref\/badref': Input\/output error/);
    expect(r.stdout).toMatch(/^status=1/);
  });

  it('a fragment index past the fragment table, and a fragment offset past its block', async () => {
    const r = await inHostile('cat /h/frag/fragfile; cat /h/fragoff/fragfile');
    expect(r.stderr).toMatch(/Input\/output error\n[\s\S]*Input\/output error\n/);
  });

  it('a size far larger than the file: read as far as its blocks go, no further', async () => {
    const r = await inHostile('stat -c %s /h/huge/hugefile; dd if=/h/huge/hugefile bs=65536 count=4 2>/dev/null | wc -c');
    expect(r.stdout).toMatch(/^4294967295\n\d+\n/);
  });

  it('a data block that does not decompress', async () => {
    const r = await inHostile('cat /h/data/blockfile > /dev/null');
    expect(r.stderr).toMatch(/Input\/output error/);
  });

  it('a directory whose size runs past its entries', async () => {
    const r = await inHostile('ls /h/bigdir');
    expect(r.stdout).toMatch(/^0first\n/);
  });

  it('a directory that contains itself: the kernel refuses the loop, and a walk ends', async () => {
    const r = await inHostile('ls /h/cycle/loop; find /h/cycle | head -20');
    expect(r.stderr).toMatch(/Too many levels of symbolic links|Input\/output error/);
  });

  it('a damaged superblock is refused before anything is served, naming the fault', async () => {
    const r = await b('exec', img('badsuper'), 'true');
    expect(r.stderr).toMatch(/cannot serve .*badsuper\.sqsh: its squashfs superblock is damaged: its block size/);
    expect(r.code).toBe(125);
    expect(await until(() => readdirSync(runtime()).length === 0, 3000)).toBe(true);
  });
});

/** Processes still alive (not zombies: some PID 1s never reap). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
const parentOf = (pid: number) => Number(/\) \S (\d+)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))![1]);

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (check()) return true;
  return check();
}

describe('an image server that ends under its containers', () => {
  /** Starts a container that keeps reading the image, kills its image server with `signal`, and says what happened. */
  async function killServer(signal: NodeJS.Signals, flags: string[] = [], launched = false) {
    // Through Node (node dist/berth.cjs: berth waits for its helper), or the berth command,
    // which becomes the container itself.
    const args = ['exec', ...flags, img('busybox'), 'sh', '-c', 'echo ready; while :; do cat /etc/motd > /dev/null; sleep 0.05; done'];
    const child = launched ? spawn(BERTH, args, { env: env(), cwd: work }) : spawn(process.execPath, [BERTH, ...args], { env: env(), cwd: work });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    }));
    const dir = readdirSync(runtime()).find((n) => /^img-[^.]+$/.test(n))!;
    const server = Number(readFileSync(path.join(runtime(), dir, 'pid'), 'utf8'));
    const guard = parentOf(server);
    const container = launched ? child.pid! : Number((await run('pgrep', ['-P', String(child.pid)])).stdout.trim().split('\n')[0]);
    expect(alive(container)).toBe(true);
    const killed = Date.now();
    process.kill(server, signal);
    const [code, ended] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    return { code, ended, err, took: Date.now() - killed, server, guard, container };
  }

  const cases = [
    ['SIGKILL', [], 'signal 9\\); the image may be corrupt'],
    ['SIGSEGV', [], 'signal 11\\); the image may be corrupt'], // as a crash would
    ['SIGKILL', ['--pid'], 'signal 9\\); the image may be corrupt'],
    ['SIGTERM', [], 'exit status 0\\) while the container ran'], // it stops cleanly, but not its containers
  ] as const;
  for (const [signal, flags, how] of cases) {
    it(`${signal}${flags.length ? ` with ${flags.join(' ')}` : ''}: the container ends at once with the reason and 125, and nothing is left`, async () => {
      const r = await killServer(signal, [...flags]);
      expect(r.err).toMatch(new RegExp(`^berth: error: the image server for ${img('busybox')} ended \\(${how}: the container was stopped`, 'm'));
      expect(r.code).toBe(125);
      expect(r.took).toBeLessThan(3000);
      expect(await until(() => !alive(r.container) && !alive(r.guard) && !alive(r.server), 3000)).toBe(true);
      // The guard removed the dead server's directory; the next container starts a new one.
      expect(await until(() => readdirSync(runtime()).length === 0, 3000)).toBe(true);
      const next = await b('exec', img('busybox'), 'cat', '/etc/motd');
      expect([next.code, next.stdout]).toEqual([0, MOTD]);
    });
  }

  it('the berth command, which is the container: it is killed with the reason on its stderr, and nothing is left', async () => {
    const r = await killServer('SIGKILL', [], true);
    expect(r.err).toMatch(new RegExp(`^berth: error: the image server for ${img('busybox')} ended \\(signal 9\\); the image may be corrupt: the container was stopped`, 'm'));
    // No berth process stays to say 125: the guard's SIGKILL ends it (a shell's $? is 137), or
    // the container's own read of the dead mount did, a moment before (SIGBUS, 135).
    expect(r.code).toBe(null);
    expect(['SIGKILL', 'SIGBUS']).toContain(r.ended);
    expect(await until(() => !alive(r.container) && !alive(r.guard) && !alive(r.server), 3000)).toBe(true);
    expect(await until(() => readdirSync(runtime()).length === 0, 3000)).toBe(true);
  });

  it('with few descriptors (ulimit -n 48), containers the guard cannot watch are refused with the reason; the rest run, and the server lives (#19)', async () => {
    // 30 at once: each costs the server and its guard descriptors. Those the guard has no room
    // for are refused (it answers no), never started unwatched, and the server does not end.
    const script = `ulimit -n 48; for i in $(seq 30); do ${BERTH} exec ${img('busybox')} sh -c 'sleep 3; cat /etc/motd' > ${work}/fd.$i.out 2> ${work}/fd.$i.err & done; wait`;
    expect((await run('bash', ['-c', script], { env: env({ BERTH_IMAGE_LINGER: '2' }), cwd: work })).code).toBe(0);
    const outs = Array.from({ length: 30 }, (_, i) => readFileSync(path.join(work, `fd.${i + 1}.out`), 'utf8'));
    const errs = Array.from({ length: 30 }, (_, i) => readFileSync(path.join(work, `fd.${i + 1}.err`), 'utf8'));
    const ran = outs.filter((o) => o === MOTD).length;
    const refused = errs.filter((e) => /^berth: error: the image server (cannot watch more containers now|closed the connection without answering)/.test(e)).length;
    expect(ran + refused, errs.filter((e) => e !== '').join('')).toBe(30);
    expect(ran).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    expect(errs.some((e) => ENDED.test(e))).toBe(false);
    expect(await until(() => readdirSync(runtime()).length === 0, 10_000)).toBe(true); // it left, as any
  });

  it('a server that accepts but never answers (stopped) fails a new container in 30 s with the way out, not for ever', async () => {
    const first = spawn(BERTH, ['exec', img('busybox'), 'sh', '-c', 'echo ready; exec sleep 60'], { env: env(), cwd: work });
    await new Promise((resolve) => first.stdout.once('data', resolve));
    const dir = readdirSync(runtime()).find((n) => /^img-[^.]+$/.test(n))!;
    const server = Number(readFileSync(path.join(runtime(), dir, 'pid'), 'utf8'));
    process.kill(server, 'SIGSTOP');
    try {
      const started = Date.now();
      const r = await b('exec', img('busybox'), 'true');
      expect(r.stderr).toMatch(/^berth: error: the image server did not answer in 30 s; stop it \(berth-helper image-server processes\) and try again/m);
      expect(r.code).toBe(125);
      expect(Date.now() - started).toBeLessThan(40_000);
    } finally {
      process.kill(server, 'SIGCONT');
      first.kill('SIGKILL');
    }
    expect(await until(() => readdirSync(runtime()).length === 0, 10_000)).toBe(true);
  }, 60_000);

  it('a command joined to an instance (exec instance://) is stopped with the reason too, and the instance with it (#19)', async () => {
    expect((await b('instance', 'start', img('busybox'), 'watched', 'sleep', '300')).code).toBe(0);
    // Joined by the server the instance's state names: the image moved away meanwhile (its key
    // could not be computed again), the command still joins, and is watched.
    renameSync(img('busybox'), img('moved'));
    const child = spawn(BERTH, ['exec', 'instance://watched', 'sh', '-c', 'echo ready; while :; do cat /etc/motd > /dev/null; sleep 0.05; done'], { env: env(), cwd: work });
    child.on('close', () => renameSync(img('moved'), img('busybox')));
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('ready')) resolve(); }));
    const dir = readdirSync(runtime()).find((n) => /^img-[^.]+$/.test(n))!;
    const server = Number(readFileSync(path.join(runtime(), dir, 'pid'), 'utf8'));
    process.kill(server, 'SIGKILL');
    const ended = await new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_c, s) => resolve(s)));
    expect(err).toMatch(new RegExp(`^berth: error: the image server for ${img('busybox')} ended \\(signal 9\\); the image may be corrupt: the container was stopped`, 'm'));
    expect(['SIGKILL', 'SIGBUS']).toContain(ended);
    const listed = await b('instance', 'list', '--json');
    expect(listed.stdout).toMatch(/"watched"/);
    expect(listed.stdout).not.toMatch(/"running"/);
    expect((await b('instance', 'stop', 'watched')).code).toBe(0);
    expect(await until(() => readdirSync(runtime()).filter((n) => n.startsWith('img-')).length === 0, 3000)).toBe(true);
  });

  it('the guard and its server told to stop (the job ends): the containers are stopped with them, without a word', async () => {
    const child = spawn(process.execPath, [BERTH, 'exec', img('busybox'), 'sh', '-c', 'echo ready; exec sleep 60'], { env: env(), cwd: work });
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    const dir = readdirSync(runtime()).find((n) => /^img-[^.]+$/.test(n))!;
    const guard = parentOf(Number(readFileSync(path.join(runtime(), dir, 'pid'), 'utf8')));
    process.kill(guard, 'SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect([code, err]).toEqual([137, '']);
    expect(await until(() => readdirSync(runtime()).length === 0, 3000)).toBe(true);
  });

  it('a container that ends by itself hears nothing of its server ending after it', async () => {
    const r = await b('exec', img('busybox'), 'sh', '-c', 'exit 3');
    expect([r.code, r.stderr]).toEqual([3, '']);
    expect(await until(() => existsSync(runtime()) && readdirSync(runtime()).length === 0, 3000)).toBe(true);
  });
});
