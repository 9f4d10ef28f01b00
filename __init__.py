"""StyleBridge: ComfyUI nodes that join StyleGAN2/3 and Stable Diffusion in one graph.

Inside ComfyUI this folder is a custom node pack: ComfyUI reads NODE_CLASS_MAPPINGS,
NODE_DISPLAY_NAME_MAPPINGS and WEB_DIRECTORY. Installed with pip it is the `stylebridge` package, whose
library entry points (`load_stylegan`, `run_workflow`) work without ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .runtime import host as _host

WEB_DIRECTORY = "./web"

__version__ = "0.1.0"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "load_stylegan", "run_workflow"]

_host.register_model_folders()


def load_stylegan(path, device="cpu", **kwargs):
    """Load a StyleGAN checkpoint (NVIDIA pickle, rosinality .pt or StyleBridge safetensors).

    See `models.checkpoints.load_stylegan` for the arguments.
    """
    from .models.checkpoints import load_stylegan as _load

    return _load(path, device=device, **kwargs)


def run_workflow(workflow, **kwargs):
    """Run a ComfyUI workflow (API or UI format) headless. See `runtime.runner.run_workflow`."""
    from .runtime.runner import run_workflow as _run

    return _run(workflow, **kwargs)
