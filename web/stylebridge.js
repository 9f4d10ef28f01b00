// StyleBridge frontend extension: colours for StyleBridge's socket types, so W latents, generators and diffusion
// pipelines are told apart at a glance. ComfyUI serves this folder because the pack exports WEB_DIRECTORY.
import { app } from "../../scripts/app.js";

// Keep in sync with nodes/sockets.py.
export const SOCKET_COLORS = {
  STYLEGAN: "#b46ee6",
  STYLEGAN_LATENT: "#e6a23c",
  STYLEGAN_DIRECTION: "#e65c5c",
  STYLEGAN_STYLES: "#d4c23c",
  DIFFUSION_PIPELINE: "#3cb4a0",
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
