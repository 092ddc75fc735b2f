// avatar.json + avatar.bin (docs/web.md) -> the arrays the page draws from, checked so that a corrupt or foreign
// file says what is wrong instead of drawing nothing.
export const FORMAT = "npga-web-avatar";
export const VERSION = 1;
export const WIDTH = 14; // per-Gaussian columns: means 3, quats 4 (w x y z), log scales 3, colour logits 3, opacity logit 1

export class DataError extends Error {}

function check(condition, message) {
  if (!condition) throw new DataError(message);
}

const isCount = (x) => Number.isInteger(x) && x >= 0;
const numbers = (list, n) => Array.isArray(list) && list.length === n && list.every(Number.isFinite);

// IEEE half -> float for the basis's directions (no Float16Array in every browser yet).
function halfToFloat(h) {
  const exponent = (h >> 10) & 31;
  const mantissa = h & 1023;
  const sign = h & 32768 ? -1 : 1;
  if (exponent === 0) return sign * 2 ** -14 * (mantissa / 1024);
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}

// avatar.json's text -> its checked content (the data file is read next, by the name it gives).
export function readManifest(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    throw new DataError("avatar.json is not JSON: this folder was not written by `npga export --web`");
  }
  check(m && m.format === FORMAT, `avatar.json is not an npga web avatar (format ${JSON.stringify(m && m.format)}, expected "${FORMAT}")`);
  check(m.version === VERSION, `avatar.json has version ${m.version}; this page reads version ${VERSION}: export the avatar again`);
  const n = m.gaussians;
  const k = m.rank;
  check(isCount(n) && n > 0 && isCount(k), "avatar.json: gaussians and rank must be counts");
  check(m.blob && typeof m.blob.file === "string", "avatar.json names no data file");
  check(numbers(m.background, 3), "avatar.json: background must be 3 numbers");
  const cameras = m.cameras ?? [];
  for (const c of cameras) {
    check(numbers(c.world_to_camera, 16) && [c.fx, c.fy, c.cx, c.cy].every(Number.isFinite) && c.width > 0 && c.height > 0, `avatar.json: camera ${c.name} is malformed`);
  }
  check(Array.isArray(m.sequences) && m.sequences.length > 0, "avatar.json: no sequences");
  const sequences = m.sequences.map((s) => {
    check(isCount(s.frames) && s.frames > 0 && numbers(s.coords, s.frames * k) && numbers(s.head_poses, s.frames * 16), `avatar.json: sequence ${s.name} is malformed`);
    return { name: String(s.name), frames: s.frames, coords: Float32Array.from(s.coords), headPoses: Float64Array.from(s.head_poses) };
  });
  return { ...m, cameras, sequences };
}

// A checked manifest and the bytes of its data file -> what the page draws from.
export function decodeAvatar(m, blob) {
  const n = m.gaussians;
  const k = m.rank;
  const expected = n * WIDTH * (4 + 2 * k);
  check(blob.byteLength === expected, `${m.blob.file} holds ${blob.byteLength} bytes; ${n} Gaussians of rank ${k} need ${expected}: the file is truncated or from another export`);
  const affine = new Float32Array(blob, 0, n * WIDTH);
  const halves = new Uint16Array(blob, 4 * n * WIDTH, k * n * WIDTH);
  const directions = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i += 1) directions[i] = halfToFloat(halves[i]);
  check(affine.every(Number.isFinite) && directions.every(Number.isFinite), `${m.blob.file} holds NaN or infinite values: the file is corrupt`);
  return {
    name: String(m.name ?? "avatar"),
    gaussians: n,
    rank: k,
    background: m.background,
    cameras: m.cameras,
    defaultCamera: m.default_camera,
    sequences: m.sequences,
    // attrs (n * WIDTH) = affine + sum_j a_j direction_j
    evaluate(a, attrs) {
      attrs.set(affine);
      const size = n * WIDTH;
      for (let j = 0; j < k; j += 1) {
        const w = a[j];
        if (w === 0) continue;
        const d = directions.subarray(j * size, (j + 1) * size);
        for (let i = 0; i < size; i += 1) attrs[i] += w * d[i];
      }
    },
  };
}

// Whitened expression coordinates shown: the tracked frame's plus the sliders' offsets.
export function posedExpression(sequence, frame, sliders) {
  const k = sliders.length;
  const a = new Float32Array(k);
  for (let j = 0; j < k; j += 1) a[j] = sequence.coords[frame * k + j] + sliders[j];
  return a;
}
