// The page `npga export --web` writes: an npga avatar drawn by Spark (three.js), played and re-expressed in the
// browser with no server. It reads avatar.json and avatar.bin from its own folder (docs/web.md) and draws each
// Gaussian as npga's rasterizer does. The hook for tests and scripts is `window.npga` (docs/web.md).
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { ExtSplats, SparkRenderer, SplatMesh, utils } from "@sparkjsdev/spark";
import { decodeAvatar, DataError, posedExpression, readManifest, WIDTH } from "./avatar.js";
import { projectionFromIntrinsics, threeCameraPose } from "./camera.js";

THREE.ColorManagement.enabled = false; // npga's colours are written to the screen as they are

// npga draws as classic 3DGS (gsplat's "classic" mode): a 0.3 pixel^2 blur added to each footprint without
// changing its opacity, a footprint cut where opacity * exp(-d^2 / 2) < 1/255 (3.33 standard deviations for an
// opaque splat), depth-sorted. Spark's defaults (anti-aliased) thin npga's ~1-pixel splats.
export const NPGA_MODE = {
  preBlurAmount: 0.3,
  blurAmount: 0,
  maxStdDev: Math.sqrt(2 * Math.log(255)),
  minAlpha: 1 / 255,
  sortRadial: false,
};

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("panel").hidden = true;
  window.npga.error = message;
}

async function fetchOwn(name, kind) {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new DataError(`avatar.json names ${JSON.stringify(name)}: not a file in this folder`);
  let response;
  try {
    response = await fetch(name);
  } catch (e) {
    throw new DataError(`could not read ${name} (${e.message}): open this page through a web server, not as a file`);
  }
  if (!response.ok) throw new DataError(`could not read ${name}: HTTP ${response.status}`);
  return kind === "json" ? response.text() : response.arrayBuffer();
}

async function start() {
  const manifest = readManifest(await fetchOwn("avatar.json", "json"));
  return new Viewer(decodeAvatar(manifest, await fetchOwn(manifest.blob.file, "bin")));
}

class Viewer {
  constructor(avatar) {
    this.avatar = avatar;
    this.state = { sequence: 0, frame: 0, sliders: new Float32Array(avatar.rank), playing: false, fps: 25 };
    this.version = 0; // bumped by every change of what is shown; `drawn()` waits for the version to be on screen
    this.rendered = 0; // frames drawn since load (the benchmark's frame rate)
    this.waiters = [];

    const canvas = $("canvas");
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
    // sRGB output: Spark then writes the splats' colours unconverted (on a linear output it would linearise them)
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.setPixelRatio(1);
    this.renderer.setClearColor(new THREE.Color(...avatar.background), 1);
    this.scene = new THREE.Scene();
    // Drawn only when something changed (Spark calls onDirty when a sort finishes): an idle page costs nothing.
    this.dirty = true;
    this.spark = new SparkRenderer({ renderer: this.renderer, ...NPGA_MODE, onDirty: () => (this.dirty = true) });
    this.scene.add(this.spark);

    // Spark's extended encoding: float32 centres, float16 colours, opacities and log sizes (its packed one rounds
    // sizes to 8% steps and colours to 8 bits).
    const n = avatar.gaussians;
    const capacity = 4 * utils.computeMaxSplats(n);
    this.splats = new ExtSplats({ extArrays: [new Uint32Array(capacity), new Uint32Array(capacity)], numSplats: n });
    this.mesh = new SplatMesh({ splats: this.splats });
    this.scene.add(this.mesh);
    this.attrs = new Float32Array(n * WIDTH);

    this.camera = new THREE.PerspectiveCamera();
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener("change", () => this.touch());
    this.buildPanel();
    const first = avatar.cameras.find((c) => c.name === avatar.defaultCamera) ?? avatar.cameras[0];
    this.setCamera(first ?? this.fallbackCamera());
    this.applyExpression();
    this.lastTick = performance.now();
    this.renderer.setAnimationLoop((t) => this.tick(t));
  }

  fallbackCamera() {
    return { name: "default", width: 512, height: 512, fx: 700, fy: 700, cx: 256, cy: 256,
      world_to_camera: [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 3, 0, 0, 0, 1] };
  }

  touch() {
    this.version += 1;
    this.dirty = true;
  }

  // camera: {width, height, fx, fy, cx, cy, world_to_camera (16 numbers, row-major, OpenCV axes)}
  setCamera(camera) {
    this.intrinsics = camera;
    this.renderer.setSize(camera.width, camera.height, true);
    const pose = threeCameraPose(camera.world_to_camera);
    pose.decompose(this.camera.position, this.camera.quaternion, this.camera.scale);
    this.camera.up.set(pose.elements[4], pose.elements[5], pose.elements[6]);
    this.camera.updateMatrixWorld(true);
    this.camera.projectionMatrix.copy(projectionFromIntrinsics(camera, 0.01, 100));
    this.camera.projectionMatrixInverse.copy(this.camera.projectionMatrix).invert();
    // Orbit about the head's centre, seen along this camera's axis so that the first drag does not jump.
    const head = new THREE.Vector3().setFromMatrixPosition(this.headPose());
    const forward = new THREE.Vector3(0, 0, -1).applyQuaternion(this.camera.quaternion);
    const depth = Math.max(head.clone().sub(this.camera.position).dot(forward), 0.1);
    this.controls.target.copy(this.camera.position).addScaledVector(forward, depth);
    this.cameraName = camera.name ?? "custom";
    this.touch();
  }

  headPose() {
    const seq = this.avatar.sequences[this.state.sequence];
    return new THREE.Matrix4().set(...seq.headPoses.subarray(16 * this.state.frame, 16 * this.state.frame + 16));
  }

  applyExpression() {
    const t0 = performance.now();
    const seq = this.avatar.sequences[this.state.sequence];
    const a = posedExpression(seq, this.state.frame, this.state.sliders);
    this.avatar.evaluate(a, this.attrs);
    const n = this.avatar.gaussians;
    const v = this.attrs;
    const ext = this.splats.extArrays;
    for (let i = 0, o = 0; i < n; i += 1, o += WIDTH) {
      // columns: means 0-2, quats w x y z 3-6, log scales 7-9, colour logits 10-12, opacity logit 13
      utils.encodeExtSplat(ext, i, v[o], v[o + 1], v[o + 2], Math.exp(v[o + 7]), Math.exp(v[o + 8]), Math.exp(v[o + 9]),
        v[o + 4], v[o + 5], v[o + 6], v[o + 3], sigmoid(v[o + 13]), sigmoid(v[o + 10]), sigmoid(v[o + 11]), sigmoid(v[o + 12]));
    }
    this.splats.textures.forEach((texture) => (texture.needsUpdate = true));
    this.mesh.updateVersion();
    this.headPose().decompose(this.mesh.position, this.mesh.quaternion, this.mesh.scale);
    this.mesh.updateMatrixWorld(true);
    this.expressionMs = performance.now() - t0;
    this.touch();
    this.syncPanel();
  }

  tick(now) {
    if (this.state.playing) {
      const seq = this.avatar.sequences[this.state.sequence];
      const steps = Math.floor(((now - this.lastTick) / 1000) * this.state.fps);
      if (steps > 0) {
        this.lastTick += (steps * 1000) / this.state.fps;
        this.state.frame = (this.state.frame + steps) % seq.frames;
        this.applyExpression();
      }
    } else {
      this.lastTick = now;
    }
    // While Spark sorts (in its worker) there is nothing new to draw: its onDirty says when the order is in.
    const confirming = this.waiters.length > 0 && !this.spark.sorting;
    if (!this.dirty && !this.spark.sortDirty && !confirming) return;
    this.dirty = false;
    const version = this.version;
    this.renderer.render(this.scene, this.camera);
    this.rendered += 1;
    // The sort runs in a worker: a frame counts as drawn once a sort started after the change has finished.
    if (!this.spark.sorting && !this.spark.sortDirty) {
      if (this.sortedFor === version) this.markDrawn(version);
      this.sortedFor = version;
    } else {
      this.sortedFor = -1;
    }
  }

  markDrawn(version) {
    const ready = this.waiters.filter((w) => w.version <= version);
    this.waiters = this.waiters.filter((w) => w.version > version);
    ready.forEach((w) => w.resolve(this.describe()));
  }

  drawn() {
    return new Promise((resolve) => this.waiters.push({ version: this.version, resolve }));
  }

  describe() {
    const seq = this.avatar.sequences[this.state.sequence];
    return {
      sequence: seq.name,
      frame: this.state.frame,
      sliders: Array.from(this.state.sliders),
      camera: this.cameraName,
      size: [this.intrinsics.width, this.intrinsics.height],
      expressionMs: this.expressionMs,
      rendered: this.rendered,
      playing: this.state.playing,
    };
  }

  // The hook (docs/web.md): {camera?: a rig camera's name or {width, height, fx, fy, cx, cy, world_to_camera},
  // sequence?: name, frame?: int, sliders?: [numbers], playing?: bool, fps?: number}; resolves once drawn (at once
  // while playing).
  set(view) {
    if (view.sequence !== undefined) {
      const index = this.avatar.sequences.findIndex((s) => s.name === view.sequence);
      if (index < 0) throw new Error(`no sequence ${view.sequence}`);
      this.state.sequence = index;
      this.state.frame = 0;
    }
    if (view.frame !== undefined) {
      const frames = this.avatar.sequences[this.state.sequence].frames;
      if (!(Number.isInteger(view.frame) && view.frame >= 0 && view.frame < frames)) throw new Error(`frame ${view.frame} out of range (${frames} frames)`);
      this.state.frame = view.frame;
    }
    if (view.sliders !== undefined) {
      this.state.sliders.fill(0);
      view.sliders.slice(0, this.avatar.rank).forEach((x, k) => (this.state.sliders[k] = x));
    }
    if (view.playing !== undefined) this.state.playing = Boolean(view.playing);
    if (view.fps !== undefined) this.state.fps = Math.min(Math.max(Number(view.fps), 1), 60);
    if (view.camera !== undefined) {
      const camera = typeof view.camera === "string" ? this.avatar.cameras.find((c) => c.name === view.camera) : view.camera;
      if (!camera) throw new Error(`no camera ${view.camera}`);
      this.setCamera(camera);
    }
    this.applyExpression();
    // While playing, every frame is a new version: nothing to wait for.
    return this.state.playing ? Promise.resolve(this.describe()) : this.drawn();
  }

  buildPanel() {
    const a = this.avatar;
    const seqSelect = $("sequence");
    a.sequences.forEach((s, i) => seqSelect.add(new Option(`${s.name} (${s.frames} frames)`, String(i))));
    seqSelect.onchange = () => this.set({ sequence: a.sequences[Number(seqSelect.value)].name });
    const camSelect = $("camera");
    camSelect.add(new Option("snap to a rig camera", ""));
    a.cameras.forEach((c) => camSelect.add(new Option(c.name, c.name)));
    camSelect.onchange = () => camSelect.value && this.set({ camera: camSelect.value });
    $("play").onclick = () => this.set({ playing: !this.state.playing });
    $("frame").oninput = () => this.set({ frame: Number($("frame").value) });
    $("fps").oninput = () => (this.state.fps = Number($("fps").value));
    const sliders = $("sliders");
    this.sliderInputs = Array.from({ length: a.rank }, (_, k) => {
      const label = document.createElement("label");
      label.textContent = `PC ${k + 1} (std) `;
      const input = Object.assign(document.createElement("input"), { type: "range", min: -3, max: 3, step: 0.05, value: 0 });
      input.oninput = () => {
        this.state.sliders[k] = Number(input.value);
        this.applyExpression();
      };
      label.append(input);
      sliders.append(label);
      return input;
    });
    $("reset").onclick = () => this.set({ sliders: [] });
  }

  syncPanel() {
    const s = this.state;
    const seq = this.avatar.sequences[s.sequence];
    $("sequence").value = String(s.sequence);
    $("frame").max = String(seq.frames - 1);
    $("frame").value = String(s.frame);
    $("play").textContent = s.playing ? "pause" : "play";
    $("fps").value = String(s.fps);
    this.sliderInputs.forEach((input, k) => (input.value = String(s.sliders[k])));
    const moved = Array.from(s.sliders).some((x) => x !== 0) ? ", expression moved by the sliders" : "";
    $("status").textContent = `${this.avatar.name}: ${this.avatar.gaussians} Gaussians, sequence ${seq.name}, ` +
      `frame ${s.frame + 1} of ${seq.frames}${moved}, camera ${this.cameraName ?? "-"}`;
  }
}

// URL hook: ?camera=NAME&sequence=NAME&frame=T&sliders=a,b,c
function viewFromUrl() {
  const q = new URLSearchParams(window.location.search);
  const view = {};
  if (q.has("camera")) view.camera = q.get("camera");
  if (q.has("sequence")) view.sequence = q.get("sequence");
  if (q.has("frame")) view.frame = Number(q.get("frame"));
  if (q.has("sliders")) view.sliders = q.get("sliders").split(",").map(Number);
  return view;
}

window.npga = { error: null };
window.npga.ready = start()
  .then(async (viewer) => {
    window.npga.viewer = viewer;
    window.npga.set = (view) => viewer.set(view);
    window.npga.state = () => viewer.describe();
    await viewer.set(viewFromUrl());
    return viewer.describe();
  })
  .catch((e) => {
    showError(e instanceof DataError ? e.message : `the page failed: ${e.message}`);
    return null;
  });
