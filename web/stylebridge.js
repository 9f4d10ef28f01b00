// StyleBridge frontend extension: colours for StyleBridge's socket types, so W latents, generators and diffusion
// pipelines are easy to distinguish. ComfyUI serves this folder because the pack exports WEB_DIRECTORY.
import { app } from "../../scripts/app.js";

// Keep in sync with nodes/sockets.py.
export const SOCKET_COLORS = {
  STYLEGAN: "#b46ee6",
  STYLEGAN_LATENT: "#e6a23c",
  STYLEGAN_DIRECTION: "#e65c5c",
  STYLEGAN_STYLES: "#d4c23c",
  STYLEGAN_ENCODER: "#8c6ee6",
  DIFFUSION_PIPELINE: "#3cb4a0",
  FACE_TRANSFORM: "#5c8ee6",
  OPEN_CLIP: "#6ec8e6",
  STYLECLIP_FS3: "#a0c83c",
  STYLECLIP_MAPPER: "#e66eb4",
  STYLECLIP_DIRECTION: "#b48c64",
};

app.registerExtension({
  name: "StyleBridge.SocketColors",
  async setup() {
    const canvas = app.canvas;
    if (canvas && canvas.default_connection_color_byType) {
      Object.assign(canvas.default_connection_color_byType, SOCKET_COLORS);
    }
    const canvasClass = globalThis.LGraphCanvas;
    if (canvasClass && canvasClass.link_type_colors) {
      Object.assign(canvasClass.link_type_colors, SOCKET_COLORS);
    }
  },
});
