// tenant-names: a jnhpd WebAssembly validator in AssemblyScript.
//
// Allows a STORE whose name is `<tenant>/<key>`:
//   - tenant: 1 to 32 bytes of [a-z0-9-];
//   - key: 1 to 128 bytes of printable ASCII other than the space
//     (0x21-0x7E; further slashes are part of the key).
// Anything else is refused, and the refusal is logged through jnhpd's
// log (the `jnhp`.`log` import) with the name and the reason, e.g.
//   refused "Acme/x": the tenant is not 1-32 of [a-z0-9-]
// The value, the peer and the subject are not looked at.
//
// The interface (docs/wasm.md): jnhpd calls jnhp_alloc with the total
// length of name, value, peer and subject, writes them back to back at
// the address it answers, then calls jnhp_check with the four lengths.
// 1 allows, 0 refuses.
//
// Built with `--runtime stub` (a bump allocator, no garbage collector):
// this module allocates only when a longer STORE than any before comes,
// so nothing leaks per STORE; messages are built in a static buffer.

// The one import jnhpd offers: one line of its log, from (address, length)
// of this module's memory, as UTF-8.
@external("jnhp", "log")
declare function log(ptr: usize, len: usize): void;

const MAX_TENANT: usize = 32;
const MAX_KEY: usize = 128;

// The STORE's bytes: one buffer, reused, grown when a longer STORE comes.
let buffer: usize = 0;
let capacity: usize = 0;

export function jnhp_alloc(len: usize): usize {
  if (len > capacity) {
    // The stub runtime traps when the memory cannot grow (past
    // max_memory_mib): that STORE fails, as on_failure says.
    buffer = capacity == 0 ? heap.alloc(len) : heap.realloc(buffer, len);
    capacity = len;
  }
  return buffer;
}

export function jnhp_check(nameLen: usize, valueLen: usize, peerLen: usize, subjectLen: usize): i32 {
  const name = buffer;
  // The tenant: everything before the first slash.
  let slash: usize = 0;
  while (slash < nameLen && load<u8>(name + slash) != 0x2f /* / */) slash++;
  if (slash == nameLen) return refuse(name, nameLen, "no slash: names are <tenant>/<key>");
  if (slash == 0 || slash > MAX_TENANT) return refuse(name, nameLen, "the tenant is not 1-32 of [a-z0-9-]");
  for (let i: usize = 0; i < slash; i++) {
    const c = load<u8>(name + i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d; // a-z 0-9 -
    if (!ok) return refuse(name, nameLen, "the tenant is not 1-32 of [a-z0-9-]");
  }
  const keyLen = nameLen - slash - 1;
  if (keyLen == 0 || keyLen > MAX_KEY) return refuse(name, nameLen, "the key is not 1-128 bytes long");
  for (let i = slash + 1; i < nameLen; i++) {
    const c = load<u8>(name + i);
    if (c < 0x21 || c > 0x7e) return refuse(name, nameLen, "the key is not printable ASCII without spaces");
  }
  return 1;
}

// A static buffer for log lines (jnhpd cuts a line at 1024 bytes anyway).
const LINE_CAPACITY: i32 = 512;
const line = memory.data(LINE_CAPACITY);

// Logs `refused "<name>": <why>` and answers 0. The name is cut at 200
// bytes; jnhpd escapes any control characters in it.
function refuse(name: usize, nameLen: usize, why: string): i32 {
  let at: usize = 0;
  at = put(at, 'refused "');
  const shown = nameLen < 200 ? nameLen : 200;
  memory.copy(line + at, name, shown);
  at += shown;
  at = put(at, '": ');
  at = put(at, why);
  log(line, at);
  return 0;
}

// Appends an ASCII string (AssemblyScript strings are UTF-16) at `at` of
// the line; answers the new end.
function put(at: usize, text: string): usize {
  for (let i = 0; i < text.length && at < <usize>LINE_CAPACITY; i++) {
    store<u8>(line + at, <u8>text.charCodeAt(i));
    at++;
  }
  return at;
}
