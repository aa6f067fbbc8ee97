#version 450
//
// Copyright 2025 Hillbot Inc.
// Copyright 2020-2024 UCSD SU Lab
// 
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at:
// 
//     http://www.apache.org/licenses/LICENSE-2.0
// 
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.
//
// Modified by gaze_rl (2026): cheaper vertex transform, see main().
#extension GL_ARB_separate_shader_objects : enable
#extension GL_ARB_shading_language_420pack : enable

layout(set = 0, binding = 0) uniform CameraBuffer {
  mat4 viewMatrix;
  mat4 projectionMatrix;
  mat4 viewMatrixInverse;
  mat4 projectionMatrixInverse;
  float width;
  float height;
} cameraBuffer;

layout(set = 1, binding = 0) uniform ObjectTransformBuffer {
  mat4 modelMatrix;
} objectTransformBuffer;

layout(set = 1, binding = 1) uniform ObjectDataBuffer {
  uvec4 segmentation;
  float transparency;
  int shadeFlat;
} objectDataBuffer;

layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec2 uv;
layout(location = 3) in vec3 tangent;
layout(location = 4) in vec3 bitangent;

layout(location = 0) out vec4 outPosition;
layout(location = 1) out vec2 outUV;
layout(location = 2) out flat uvec4 outSegmentation;
layout(location = 3) out vec3 objectCoord;
layout(location = 4) out mat3 outTbn;

// gaze_rl "fast" pack: the minimal pack's vertex shader without the per-vertex 4x4 inverse and
// tangent frame, which dominate software (lavapipe) rendering. Normals use mat3(V) * mat3(M):
// exact for rigid and uniformly scaled models. Normal maps are ignored (tangent columns are 0, so
// the fragment shader's TBN * n_map reduces to the vertex normal).
void main() {
  outSegmentation = objectDataBuffer.segmentation;
  objectCoord = position;
  outPosition = cameraBuffer.viewMatrix * (objectTransformBuffer.modelMatrix * vec4(position, 1));
  outUV = uv;
  gl_Position = cameraBuffer.projectionMatrix * outPosition;
  vec3 outNormal = normalize(mat3(cameraBuffer.viewMatrix) * (mat3(objectTransformBuffer.modelMatrix) * normal));
  outTbn = mat3(vec3(0), vec3(0), outNormal);
}
