// pickle.ts — a restricted Python unpickler: the pickle virtual machine (protocols 0-5 as far as data is
// concerned) with no way to import or run anything. Every GLOBAL / STACK_GLOBAL goes through the caller's
// findGlobal, which returns a value from an allow-list or throws an error naming the global (the
// semantics of torch.load(weights_only=True)); REDUCE calls only PyCallable values made by that
// allow-list, persistent ids go to the caller's persistentLoad.
//
// Python values map to: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float ->
// number, str -> string, bytes / bytearray -> Uint8Array, list and tuple -> Array (tuples recorded in
// `isTuple`), dict -> Map, set / frozenset -> Set.
//
// Decisions:
// - The machine is a loop over opcodes, never recursive, so deep nesting cannot overflow the JS stack;
//   MARK nesting is capped (MAX_NESTING) so a "recursion bomb" fails at once with a clear error. Shared
//   references (memo GET) stay shared, so a "billion laughs" memo bomb costs what its bytes cost.
// - Opcodes that construct arbitrary objects (INST, OBJ, NEWOBJ, NEWOBJ_EX, the extension registry EXT*)
//   and out-of-band buffers are refused; INST / OBJ still name their class, checked against the allow-list first.
// - Every length and memo index is checked against the data; errors read `pickle: <where>: at byte N: ...`.

export const MAX_NESTING = 1000;

/** A Python callable the allow-list provides (REDUCE calls it with the argument tuple's items). */
export class PyCallable {
  constructor(
    readonly name: string,
    readonly call: (args: unknown[]) => unknown,
  ) {}
}

export interface PickleHooks {
  /** Value of `module.name`, or throw an error naming it when it is not allowed. */
  findGlobal(module: string, name: string): unknown;
  /** Value of a persistent id (BINPERSID / PERSID); absent: persistent ids are refused. */
  persistentLoad?(pid: unknown): unknown;
  /** Called by BUILD with (object, state); absent: BUILD only accepts dicts and ignores their attributes. */
  build?(obj: unknown, state: unknown): unknown;
}

/** The tuples made while unpickling (a JS array cannot tell a tuple from a list). */
export const isTuple = new WeakSet<object>();

function tuple(items: unknown[]): unknown[] {
  isTuple.add(items);
  return items;
}

/** A short description of a value for error messages (never walks deep structures). */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof PyCallable) return v.name;
  if (Array.isArray(v)) return `${isTuple.has(v) ? 'tuple' : 'list'} of ${v.length}`;
  if (v instanceof Map) return `dict of ${v.size}`;
  if (v instanceof Uint8Array) return `bytes of ${v.length}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return String(v);
}

function littleSigned(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return toNumber(v);
}

function toNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Python string-literal escapes of protocol 0's STRING (quoted) and UNICODE (raw-unicode-escape). */
function unescape(s: string, unicode: boolean): string {
  return s.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/g, (m, e: string) => {
    if (unicode && e[0] !== 'u' && e[0] !== 'U') return m;
    if (e[0] === 'x' || e[0] === 'u' || e[0] === 'U') return String.fromCodePoint(parseInt(e.slice(1), 16));
    return ({ n: '\n', r: '\r', t: '\t', '\\': '\\', "'": "'", '"': '"', '0': '\0' } as Record<string, string>)[e] ?? m;
  });
}

/**
 * Runs the pickle in `data` from `start` to its STOP opcode; returns the value and the offset after STOP.
 * `where` names the source in errors (file and entry).
 */
export function unpickle(data: Uint8Array, hooks: PickleHooks, where: string, start = 0): { value: unknown; end: number } {
  let pos = start;
  let opAt = start;
  const fail = (msg: string): never => {
    throw new Error(`pickle: ${where}: at byte ${opAt}: ${msg}`);
  };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  const utf8 = new TextDecoder('utf-8', { fatal: true });

  const need = (n: number): void => {
    if (n < 0 || pos + n > data.length) fail(`truncated pickle: needs ${n} more bytes, ${data.length - pos} left`);
  };
  const u8 = (): number => (need(1), data[pos++]);
  const u16 = (): number => (need(2), (pos += 2), view.getUint16(pos - 2, true));
  const u32 = (): number => (need(4), (pos += 4), view.getUint32(pos - 4, true));
  const u64 = (): number => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail(`length ${v} is larger than the pickle`);
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => (need(n), (pos += n), data.slice(pos - n, pos));
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('truncated pickle: unterminated text argument');
    const s = Buffer.from(data.buffer, data.byteOffset + pos, end - pos).toString('latin1');
    pos = end + 1;
    return s;
  };
  const str = (n: number): string => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) return fail('no MARK on the stack');
    stack = prev;
    return items;
  };
  const asList = (v: unknown, op: string): unknown[] => {
    if (!Array.isArray(v) || isTuple.has(v)) fail(`${op} on a ${describe(v)}, not a list`);
    return v as unknown[];
  };
  const asDict = (v: unknown, op: string): Map<unknown, unknown> => {
    if (!(v instanceof Map)) fail(`${op} on a ${describe(v)}, not a dict`);
    return v as Map<unknown, unknown>;
  };
  const setItems = (d: Map<unknown, unknown>, kv: unknown[]): void => {
    if (kv.length % 2) fail('odd number of items for a dict');
    for (let i = 0; i < kv.length; i += 2) d.set(kv[i], kv[i + 1]);
  };
  const global = (module: string, name: string): unknown => {
    if (!module || !name) fail('GLOBAL with an empty module or name');
    return hooks.findGlobal(module, name);
  };
  const call = (f: unknown, args: unknown): unknown => {
    if (!(f instanceof PyCallable)) fail(`REDUCE on ${describe(f)}, which is not an allowed callable`);
    if (!Array.isArray(args)) fail(`REDUCE arguments are a ${describe(args)}, not a tuple`);
    return (f as PyCallable).call(args as unknown[]);
  };
  const persistent = (pid: unknown): unknown => {
    if (!hooks.persistentLoad) fail('persistent id in a pickle that allows none');
    return hooks.persistentLoad!(pid);
  };

  for (;;) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail(`pickle protocol ${data[pos - 1]} is newer than 5`);
        break;
      case 0x95: // FRAME (a length hint only)
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || metastack.length) fail(`STOP with ${stack.length} values and ${metastack.length} open MARKs on the stack`);
        return { value: stack[0], end: pos };
      case 0x28: // MARK
        if (metastack.length >= MAX_NESTING) fail(`nesting deeper than ${MAX_NESTING} levels (a recursion bomb?)`);
        metastack.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length) stack.pop();
        else popMark();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x49: {
        // INT (text); I01 / I00 are protocol 0's booleans
        const s = line();
        if (s === '01' || s === '00') stack.push(s === '01');
        else if (/^[+-]?\d+$/.test(s)) stack.push(toNumber(BigInt(s)));
        else fail(`INT argument ${JSON.stringify(s)} is not an integer`);
        break;
      }
      case 0x4c: {
        // LONG (text, trailing L)
        const s = line().replace(/L$/, '');
        if (!/^[+-]?\d+$/.test(s)) fail(`LONG argument ${JSON.stringify(s)} is not an integer`);
        stack.push(toNumber(BigInt(s)));
        break;
      }
      case 0x8a: // LONG1
        stack.push(littleSigned(bytes(u8())));
        break;
      case 0x8b: {
        // LONG4
        const n = view.getInt32((need(4), pos), true);
        pos += 4;
        if (n < 0) fail('LONG4 with a negative length');
        stack.push(littleSigned(bytes(n)));
        break;
      }
      case 0x46: {
        // FLOAT (text)
        const s = line();
        const v = Number(s);
        if (Number.isNaN(v) && !/nan/i.test(s)) fail(`FLOAT argument ${JSON.stringify(s)} is not a number`);
        stack.push(v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x53: {
        // STRING (quoted, protocol 0): a Python 2 str, read as text
        const s = line();
        if (s.length < 2 || s[0] !== s[s.length - 1] || (s[0] !== "'" && s[0] !== '"')) fail('STRING argument is not quoted');
        stack.push(unescape(s.slice(1, -1), false));
        break;
      }
      case 0x54: {
        // BINSTRING
        const n = view.getInt32((need(4), pos), true);
        pos += 4;
        stack.push(Buffer.from(bytes(n)).toString('latin1'));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(Buffer.from(bytes(u8())).toString('latin1'));
        break;
      case 0x56: // UNICODE (raw-unicode-escape text)
        stack.push(unescape(line(), true));
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()));
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(bytes(u64()));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(tuple([]));
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x6c: // LIST
        {
          const items = popMark();
          stack.push(items);
        }
        break;
      case 0x74: // TUPLE
        {
          const items = popMark();
          stack.push(tuple(items));
        }
        break;
      case 0x85: // TUPLE1
        stack.push(tuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push(tuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(tuple([pop(), b, c]));
        break;
      }
      case 0x64: {
        // DICT
        const d = new Map();
        const items = popMark();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x91: // FROZENSET
        {
          const items = popMark();
          stack.push(new Set(items));
        }
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        asList(top(), 'APPEND').push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const l = asList(top(), 'APPENDS');
        for (const v of items) l.push(v);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        asDict(top(), 'SETITEM').set(k, v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark();
        setItems(asDict(top(), 'SETITEMS'), kv);
        break;
      }
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`ADDITEMS on a ${describe(s)}, not a set`);
        for (const v of items) (s as Set<unknown>).add(v);
        break;
      }
      case 0x67: // GET
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x67 ? Number(line()) : op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo key ${i} was never stored`);
        stack.push(memo.get(i));
        break;
      }
      case 0x70: // PUT
      case 0x71: // BINPUT
      case 0x72: {
        // LONG_BINPUT
        const i = op === 0x70 ? Number(line()) : op === 0x71 ? u8() : u32();
        if (!Number.isSafeInteger(i) || i < 0) fail('PUT with an invalid memo key');
        memo.set(i, top());
        break;
      }
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const f = pop();
        stack.push(call(f, args));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (hooks.build) stack[stack.length - 1] = hooks.build(obj, state);
        else if (!(obj instanceof Map)) fail(`BUILD on a ${describe(obj)} is not supported`);
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      case 0x50: // PERSID
        stack.push(persistent(line()));
        break;
      case 0x69: {
        // INST "module\nname\n": the class is checked first, so a forbidden one is named as such
        const module = line();
        const name = line();
        global(module, name);
        fail(`opcode INST (an instance of ${module}.${name}) is not supported`);
        break;
      }
      case 0x6f: // OBJ
      case 0x81: // NEWOBJ
      case 0x92: // NEWOBJ_EX
        fail(`opcode ${{ 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX' }[op]} (build an arbitrary object) is not supported`);
        break;
      case 0x82:
      case 0x83:
      case 0x84:
        fail('opcodes EXT1/EXT2/EXT4 (the copyreg extension registry) are not supported');
        break;
      case 0x97:
      case 0x98:
        fail('out-of-band buffers (NEXT_BUFFER / READONLY_BUFFER) are not supported');
        break;
      default:
        fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}
