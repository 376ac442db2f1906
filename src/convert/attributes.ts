// What a squashfs image can keep of an entry's extended attributes. squashfs stores only the
// user., trusted. and security. namespaces (squashfs-tools-ng: "squashfs does not support xattr
// prefix of system.posix_acl_access"; the kernel's squashfs has no other handlers), so POSIX
// ACLs, the only system.* attributes images carry, cannot be stored at all, and tar2sqfs fails
// on them. Like tar and mksquashfs on a file system without ACLs, berth drops them with a
// warning; unlike them it never lets the drop grant access: the group permission bits, which
// stat shows as the ACL's mask, become what the ACL gave the owning group (group:: AND mask).
// Named users and groups lose their extra access, and nobody gains any. Default ACLs only
// shape files created later, which a read-only image never gets.
import { TarFormatError, where, type At } from './tar-fields.js';

/** The namespaces squashfs stores. */
const STORED = ['user.', 'trusted.', 'security.'];

export interface AclText {
  access?: string;
  default?: string;
  /** NFSv4 ACLs (libarchive's SCHILY.acl.ace): dropped, nothing to derive the bits from. */
  ace?: string;
}

export interface Attributes {
  xattrs: Map<string, Buffer>;
  mode: number;
  /** The entry carried an ACL that was dropped. */
  acl: boolean;
  /** Names of other attributes dropped (not storable). */
  dropped: string[];
}

export function storableAttributes(xattrs: Map<string, Buffer>, acl: AclText, mode: number, at: At): Attributes {
  const kept = new Map<string, Buffer>();
  const dropped: string[] = [];
  let access: number | undefined;
  let hadAcl = acl.access !== undefined || acl.default !== undefined || acl.ace !== undefined;
  if (acl.access !== undefined) access = groupClassFromText(acl.access, at);
  for (const [name, value] of xattrs) {
    if (STORED.some((p) => name.startsWith(p))) kept.set(name, value);
    else if (name === 'system.posix_acl_access') {
      access = groupClassFromBinary(value, at);
      hadAcl = true;
    } else if (name === 'system.posix_acl_default' || name === 'system.nfs4_acl') hadAcl = true;
    else dropped.push(name);
  }
  const narrowed = access === undefined ? mode : (mode & ~0o070) | (access << 3);
  return { xattrs: kept, mode: narrowed, acl: hadAcl, dropped };
}

const PERM: Record<string, number> = { r: 4, w: 2, x: 1, '-': 0 };

/** Text form (acl(5), as GNU tar and libarchive write SCHILY.acl.access): group:: AND mask. */
function groupClassFromText(text: string, at: At): number | undefined {
  let group: number | undefined;
  let mask: number | undefined;
  for (const raw of text.split(/[,\n]/)) {
    const entry = raw.replace(/#.*/, '').trim();
    if (entry === '') continue;
    const f = entry.split(':');
    const tag = f[0]!;
    // "mask::rwx" and "other::r-x", or their short forms "mask:rwx"; libarchive appends ":ID".
    const short = (tag === 'mask' || tag === 'm' || tag === 'other' || tag === 'o') && f.length === 2;
    const perms = permBits(short ? f[1]! : f[2], entry, at);
    if ((tag === 'group' || tag === 'g') && f[1] === '') group = perms;
    else if (tag === 'mask' || tag === 'm') mask = perms;
    else if (!['user', 'u', 'group', 'g', 'other', 'o'].includes(tag)) throw badAcl(`unknown tag in '${entry}'`, at);
  }
  return group === undefined ? undefined : group & (mask ?? 7);
}

function permBits(text: string | undefined, entry: string, at: At): number {
  if (text === undefined || !/^[rwx-]{1,3}$/.test(text)) throw badAcl(`bad permissions in '${entry}'`, at);
  let bits = 0;
  for (const c of text) bits |= PERM[c]!;
  return bits;
}

/** The kernel's binary form (linux/posix_acl_xattr.h): version 2, then {u16 tag, u16 perm, u32 id}. */
function groupClassFromBinary(value: Buffer, at: At): number | undefined {
  if (value.length < 4 || (value.length - 4) % 8 !== 0 || value.readUInt32LE(0) !== 2) {
    throw badAcl('not a version 2 posix_acl_access value', at);
  }
  let group: number | undefined;
  let mask: number | undefined;
  for (let p = 4; p < value.length; p += 8) {
    const tag = value.readUInt16LE(p);
    const perm = value.readUInt16LE(p + 2) & 7;
    if (tag === 0x04) group = perm; // ACL_GROUP_OBJ
    else if (tag === 0x10) mask = perm; // ACL_MASK
  }
  return group === undefined ? undefined : group & (mask ?? 7);
}

function badAcl(what: string, at: At): TarFormatError {
  return new TarFormatError(`malformed POSIX ACL on ${where(at)}: ${what}`);
}

/** Counts what one layer lost, for one warning at its end instead of one per entry. */
export class AttributeLosses {
  private acls = 0;
  private firstAcl = '';
  private others = 0;
  private firstOther = '';

  note(a: Attributes, name: string): void {
    if (a.acl && this.acls++ === 0) this.firstAcl = name;
    if (a.dropped.length > 0 && this.others === 0) this.firstOther = `${a.dropped[0]} on '${name}'`;
    this.others += a.dropped.length;
  }

  warnings(shown: (name: string) => string): string[] {
    const out: string[] = [];
    if (this.acls > 0) {
      out.push(`${this.acls} entr${this.acls === 1 ? 'y carries a POSIX ACL' : 'ies carry POSIX ACLs'} (first: '${shown(this.firstAcl)}'), which a squashfs image cannot store: ` +
        'dropped, with group permission bits reduced to what each ACL gave the owning group (nobody gains access)');
    }
    if (this.others > 0) {
      out.push(`dropped ${this.others} extended attribute${this.others === 1 ? '' : 's'} that a squashfs image cannot store (only user.*, trusted.* and security.* can be), first: ${shown(this.firstOther)}`);
    }
    return out;
  }
}
