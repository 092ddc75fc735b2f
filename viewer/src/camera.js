// npga's cameras (OpenCV axes: x right, y down, z forward; pixel intrinsics) as three.js wants them (x right, y up,
// looking down -z; a projection to clip space).
import * as THREE from "three";

// world_to_camera (16 numbers, row-major, OpenCV axes) -> the three.js camera's camera-to-world matrix.
export function threeCameraPose(worldToCamera) {
  const w2c = new THREE.Matrix4().set(...worldToCamera);
  const flip = new THREE.Matrix4().makeScale(1, -1, -1); // OpenCV's y down, z forward -> three's y up, z back
  return w2c.invert().multiply(flip);
}

// Pinhole intrinsics in pixels (pixel centres at +0.5, as npga's rasterizer) -> an OpenGL projection matrix for a
// width x height viewport, principal point off centre included.
export function projectionFromIntrinsics({ width, height, fx, fy, cx, cy }, near, far) {
  return new THREE.Matrix4().set(
    (2 * fx) / width, 0, 1 - (2 * cx) / width, 0,
    0, (2 * fy) / height, (2 * cy) / height - 1, 0,
    0, 0, -(far + near) / (far - near), (-2 * far * near) / (far - near),
    0, 0, -1, 0,
  );
}
